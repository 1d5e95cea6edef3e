rule train_sft:
    """Supervised fine-tuning on prompt + chosen (loss on the response only)."""
    input:
        script=script("train_sft"),
        code=code("engine", "sft", "batching", "modeling"),
        base=base_model_input(),
        train=res("data/pref/train.jsonl"),
        test=res("data/pref/test.jsonl"),
    output:
        model=res("models/sft/config.json"),
        metrics=res("models/sft/metrics.json"),
    params:
        gpu=gpu_prefix(gpus()),
        base=base_model_arg,
        sft=as_json(config["sft"]),
        engine=engine_params(),
        launcher=train_launcher(),
        work=res("work/sft"),
        tb=res("logs/tensorboard/sft"),
    threads: workflow.cores
    resources:
        gpu=gpus(),
    log:
        log("train_sft"),
    benchmark:
        bench("train_sft")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}OMP_NUM_THREADS={threads} {params.launcher} {input.script} --base {params.base} "
        "--train {input.train} --test {input.test} --out $(dirname {output.model}) "
        "--work-dir {params.work} --log-dir {params.tb} --params {params.sft:q} "
        "--engine {params.engine:q} > {log} 2>&1"
