# Alignment: EXO / DPO runs from the SFT model, with checkpoints (exoflow.schedule).
#   data/ref_logps/<data>_t<temp>_l<max_len>_g<max_gen_len>_e<eos>[_<visits>].jsonl   reference
#                                       log-probs (of the records the runs visit: _<visits>)
#   models/align/<run>/ckpt<k>/         k = 1..N at the steps exoflow.schedule gives (k * save_every,
#                                       or the original's saves_per_epoch on the data's size)
#   models/align/<run>/metrics.json
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
    per data set, temperature and truncation (and, with align.ref_records: visited, for the
    records that runs of one seed, step count and batch visit); the runs that share them
    share the file.
    """
    input:
        reference=PLAN.path("sft"),
        data=PLAN.path("align_data"),
        deepspeed=PLAN.deepspeed_inputs(),
    output:
        cache=res(
            "data/ref_logps/{data}_t{temp}_l{max_len}_g{max_gen_len}_e{eos}{visits}.jsonl"
        ),
    log:
        log("precompute_ref", "{data}_t{temp}_l{max_len}_g{max_gen_len}_e{eos}{visits}"),
    benchmark:
        bench(
            "precompute_ref", "{data}_t{temp}_l{max_len}_g{max_gen_len}_e{eos}{visits}"
        )
    wildcard_constraints:
        data=PLAN.align_data_regex(),
        temp=r"[0-9][0-9.e+-]*",
        max_len=r"\d+",
        max_gen_len=r"\d+",
        eos=r"[01]",
        visits=r"(_v\d+s\d+b\d+[gr])?",
    conda:
        "../envs/exoflow.yaml"
    threads: workflow.cores
    resources:
        **PLAN.job_resources("precompute_ref"),
        gpu=PLAN.inference_gpus(),
    params:
        code=code_of("precompute_ref"),
        batch_size=CFG.sample.score_batch_size,
        runtime=as_json(PLAN.ref_runtime()),
        visits=lambda wildcards: wildcards.visits[1:] or "all",
    shell:
        run_script("precompute_ref", PLAN.inference_prefix())


for run in PLAN.align_runs():

    rule:
        name:
            rule_name("train_align", run)
        input:
            policy=PLAN.path("sft"),
            train=PLAN.align_data(run),
            ref_logps=PLAN.ref_cache_inputs(run),
            deepspeed=PLAN.deepspeed_inputs(),
        output:
            ckpts=PLAN.align_ckpt_configs(run),
            metrics=PLAN.align_metrics(run),
        log:
            log("train_align", run),
        benchmark:
            bench("train_align", run)
        conda:
            "../envs/exoflow.yaml"
        threads: workflow.cores
        resources:
            **PLAN.job_resources("align", run),
            gpu=PLAN.gpus(),
            slurm_extra=SIGNAL_BEFORE_LIMIT,
        params:
            code=code_of("train_align"),
            ref_code=code_of("precompute_ref"),
            align=as_json(PLAN.run_params(run)),
            runtime=as_json(PLAN.runtime(run)),
            work_dir=res(f"work/align/{run}"),
            log_dir=res(f"logs/tensorboard/align/{run}"),
        shell:
            run_script("train_align", PLAN.train_prefix())


rule align_all:
    """Every alignment run's checkpoints."""
    input:
        PLAN.align_targets(),
