# sample_sft and sample_checkpoint (rules/eval.smk) share one CLI, workflow_scripts/sample.py.


rule sample_sft:
    """sample.num_return completions per prompt from the SFT model."""
    input:
        model=PLAN.path("sft"),
        prompts=PLAN.path("pref"),
    output:
        samples=PLAN.path("sft_samples"),
    log:
        log("sample_sft", "{split}"),
    benchmark:
        bench("sample_sft", "{split}")
    conda:
        "../envs/exoflow.yaml"
    threads: workflow.cores
    resources:
        **PLAN.job_resources("sample_sft"),
        gpu=PLAN.inference_gpus(),
    params:
        code=code_of("sample"),
        generation=as_json(CFG.sample.generation()),
        seed=CFG.seed,
        num_prompts=as_json(None),
        subset=lambda w: as_json(CFG.sample.max_prompts if w.split == "train" else None),
        dtype=as_json(PLAN.inference_dtype()),
    shell:
        run_script("sample", PLAN.inference_prefix(threads=False))


rule label_rewards:
    """RM rewards for every SFT sample: the data of the *-rw alignment runs."""
    input:
        rm=PLAN.path("rm"),
        samples=PLAN.path("sft_samples"),
    output:
        labels=PLAN.path("rm_labels"),
    log:
        log("label_rewards", "{split}"),
    benchmark:
        bench("label_rewards", "{split}")
    conda:
        "../envs/exoflow.yaml"
    threads: workflow.cores
    resources:
        **PLAN.job_resources("label_rewards"),
        gpu=PLAN.inference_gpus(),
    params:
        code=code_of("label_rewards"),
        batch_size=CFG.sample.score_batch_size,
        rm_layout=as_json(CFG.rm.layout()),
        dtype=as_json(PLAN.inference_dtype()),
    shell:
        run_script("label_rewards", PLAN.inference_prefix())
