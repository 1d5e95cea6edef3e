# Alignment: EXO / DPO runs from the SFT model, checkpoints every save_every steps.
#   data/ref_logps/<data>_t<temp>_l<max_len>_g<max_gen_len>.jsonl   reference log-probs (once)
#   models/align/<run>/ckpt<k>/         k = 1..max_steps // save_every, at step k * save_every
#   models/align/<run>/train_metrics.json
# One rule per run (train_align_<run>): each run has its own number of checkpoints, and every
# ckpt<k>/config.json must be a file that a rule names, so that eval can ask for one.


wildcard_constraints:
    run=align_run_regex(),


rule precompute_ref:
    """Reference (SFT) log-probs of every candidate of an alignment data set, computed once
    per data set, temperature and truncation; the runs that share them share the file."""
    input:
        script=script("precompute_ref"),
        code=code("refcache", "logps", "batching", "modeling"),
        model=res("models/sft/config.json"),
        data=res("data/{data}/train.jsonl"),
    output:
        res("data/ref_logps/{data}_t{temp}_l{max_len}_g{max_gen_len}.jsonl"),
    params:
        gpu=gpu_prefix(min(gpus(), 1)),
        batch_size=config["sample"]["score_batch_size"],
        engine=ref_engine_params(),
    wildcard_constraints:
        data=align_data_regex(),
        temp=r"[0-9][0-9.e+-]*",
        max_len=r"\d+",
        max_gen_len=r"\d+",
    threads: workflow.cores
    resources:
        gpu=min(gpus(), 1),
    log:
        log("precompute_ref", "{data}_t{temp}_l{max_len}_g{max_gen_len}"),
    benchmark:
        bench("precompute_ref", "{data}_t{temp}_l{max_len}_g{max_gen_len}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}OMP_NUM_THREADS={threads} python {input.script} --reference $(dirname {input.model}) "
        "--data {input.data} --output {output} --temp {wildcards.temp} --max-len {wildcards.max_len} "
        "--max-gen-len {wildcards.max_gen_len} --batch-size {params.batch_size} "
        "--engine {params.engine:q} > {log} 2>&1"


for run in align_runs():

    rule:
        name:
            train_align_rule_name(run)
        input:
            script=script("train_align"),
            code=code("align", "losses", "logps", "engine", "batching", "modeling"),
            model=res("models/sft/config.json"),
            data=align_data(run),
            ref=ref_cache_inputs(run),
        output:
            ckpts=align_ckpt_configs(run),
            metrics=align_metrics(run),
        params:
            gpu=gpu_prefix(gpus()),
            align=as_json(run_params(run)),
            engine=engine_params(),
            launcher=train_launcher(),
            ref_flag="--ref-logps" if precompute_ref() else "",
            work=align_work_dir(run),
            tb=align_tensorboard_dir(run),
        threads: workflow.cores
        resources:
            gpu=gpus(),
        log:
            log("train_align", run),
        benchmark:
            bench("train_align", run)
        conda:
            "../envs/exoflow.yaml"
        shell:
            "{params.gpu}OMP_NUM_THREADS={threads} {params.launcher} {input.script} "
            "--policy $(dirname {input.model}) --train {input.data} {params.ref_flag} {input.ref} "
            "--out $(dirname {output.metrics}) --work-dir {params.work} --log-dir {params.tb} "
            "--params {params.align:q} --engine {params.engine:q} > {log} 2>&1"


rule align_all:
    """Every alignment run's checkpoints."""
    input:
        align_targets(),
