rule train_rm:
    """Reward model: a scalar head on the base model, Bradley-Terry loss on the pairs."""
    input:
        script=script("train_rm"),
        code=code("engine", "rm", "batching", "modeling"),
        base=base_model_input(),
        train=res("data/pref/train.jsonl"),
        test=res("data/pref/test.jsonl"),
    output:
        model=res("models/rm/config.json"),
        metrics=res("models/rm/metrics.json"),
    params:
        gpu=gpu_prefix(gpus()),
        base=base_model_arg,
        rm=as_json(config["rm"]),
        engine=engine_params(),
        launcher=train_launcher(),
        work=res("work/rm"),
        tb=res("logs/tensorboard/rm"),
    threads: workflow.cores
    resources:
        gpu=gpus(),
    log:
        log("train_rm"),
    benchmark:
        bench("train_rm")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}OMP_NUM_THREADS={threads} {params.launcher} {input.script} --base {params.base} "
        "--train {input.train} --test {input.test} --out $(dirname {output.model}) "
        "--work-dir {params.work} --log-dir {params.tb} --params {params.rm:q} "
        "--engine {params.engine:q} > {log} 2>&1"
