# Alignment: EXO / DPO runs from the SFT model, checkpoints every save_every steps.
#   data/ref_logps/<data>_t<temp>_l<max_len>_g<max_gen_len>.jsonl   reference log-probs (once)
#   models/align/<run>/ckpt<k>/         k = 1..max_steps // save_every, at step k * save_every
#   models/align/<run>/train_metrics.json
# A run is a configuration (align.runs, or a point of an align.grid sweep) trained with one seed
# of align.seeds: <configuration> for the top-level seed, <configuration>_s<seed> for another.
# One rule per run: each run has its own number of checkpoints, and every ckpt<k>/config.json
# must be a file that a rule names, so that eval can ask for one. The rule of run <run> is named
# rule_name("train_align", <run>) = train_align_<run with non-word characters as _>, e.g.
# train_align_exo_rw_nc2, train_align_dpo_rw_nc2, train_align_exo_pref_nc2,
# train_align_dpo_pref_nc2 (the runs of config.yaml): `git grep train_align_` finds this file.


wildcard_constraints:
    run=PLAN.align_run_regex(),


rule precompute_ref:
    """Reference (SFT) log-probs of every candidate of an alignment data set, computed once
    per data set, temperature and truncation; the runs that share them share the file."""
    input:
        model=res("models/sft/config.json"),
        data=res("data/{data}/train.jsonl"),
        deepspeed=PLAN.deepspeed_inputs(),
    output:
        res("data/ref_logps/{data}_t{temp}_l{max_len}_g{max_gen_len}.jsonl"),
    params:
        cmd=command("precompute_ref"),
        code=code_of("precompute_ref"),
        model=parent_of("model", "input"),
        gpu=PLAN.gpu_prefix(min(PLAN.gpus(), 1)),
        batch_size=config["sample"]["score_batch_size"],
        engine=as_json(PLAN.ref_engine_params()),
    wildcard_constraints:
        data=PLAN.align_data_regex(),
        temp=r"[0-9][0-9.e+-]*",
        max_len=r"\d+",
        max_gen_len=r"\d+",
    threads: workflow.cores
    resources:
        gpu=min(PLAN.gpus(), 1),
    log:
        log("precompute_ref", "{data}_t{temp}_l{max_len}_g{max_gen_len}"),
    benchmark:
        bench("precompute_ref", "{data}_t{temp}_l{max_len}_g{max_gen_len}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}OMP_NUM_THREADS={threads} {params.cmd} "
        "--reference {params.model:q} --data {input.data:q} --output {output:q} "
        "--temp {wildcards.temp:q} --max-len {wildcards.max_len:q} "
        "--max-gen-len {wildcards.max_gen_len:q} --batch-size {params.batch_size:q} "
        "--code-hash {params.code:q} --engine {params.engine:q} > {log:q} 2>&1"


for run in PLAN.align_runs():

    rule:
        name:
            rule_name("train_align", run)
        input:
            model=res("models/sft/config.json"),
            data=PLAN.align_data(run),
            ref=PLAN.ref_cache_inputs(run),
            deepspeed=PLAN.deepspeed_inputs(),
        output:
            ckpts=PLAN.align_ckpt_configs(run),
            metrics=PLAN.align_metrics(run),
        params:
            script=script("train_align"),
            code=code_of("train_align"),
            ref_code=code_of("precompute_ref"),
            model=parent_of("model", "input"),
            gpu=PLAN.gpu_prefix(PLAN.gpus()),
            align=as_json(PLAN.run_params(run)),
            engine=as_json(PLAN.run_engine_params(run)),
            launcher=PLAN.train_launcher(),
            procs=PLAN.processes(),
            ref=(["--ref-logps", *PLAN.ref_cache_inputs(run)] if PLAN.precompute_ref() else []),
            out=parent_of("metrics"),
            work=res(f"work/align/{run}"),
            tb=res(f"logs/tensorboard/align/{run}"),
        threads: workflow.cores
        resources:
            gpu=PLAN.gpus(),
        log:
            log("train_align", run),
        benchmark:
            bench("train_align", run)
        conda:
            "../envs/exoflow.yaml"
        shell:
            "{params.gpu}OMP_NUM_THREADS=$(( {threads} / {params.procs} > 1 ? {threads} / {params.procs} : 1 )) {params.launcher} {params.script:q} "
            "--policy {params.model:q} --train {input.data:q} {params.ref:q} "
            "--ref-code-hash {params.ref_code:q} "
            "--out {params.out:q} --work-dir {params.work:q} --log-dir {params.tb:q} "
            "--params {params.align:q} --engine {params.engine:q} > {log:q} 2>&1"


rule align_all:
    """Every alignment run's checkpoints."""
    input:
        PLAN.align_targets(),
