# sample_sft and sample_checkpoint (rules/eval.smk) share one CLI, workflow_scripts/sample.py.


rule sample_sft:
    """sample.num_return completions per prompt from the SFT model."""
    input:
        model=res("models/sft/config.json"),
        prompts=res("data/pref/{split}.jsonl"),
    output:
        res("data/sft_samples/{split}.jsonl"),
    params:
        cmd=command("sample"),
        code=code_of("sample"),
        model=parent_of("model", "input"),
        gpu=PLAN.gpu_prefix(min(PLAN.gpus(), 1)),
        dtype=PLAN.inference_dtype_arg(),
        sample=as_json(config["sample"]),
        seed=config["seed"],
    threads: workflow.cores
    resources:
        gpu=min(PLAN.gpus(), 1),
    log:
        log("sample_sft", "{split}"),
    benchmark:
        bench("sample_sft", "{split}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}{params.cmd} --model {params.model:q} --input {input.prompts:q} "
        "--output {output:q} --params {params.sample:q} --seed {params.seed:q} "
        "{params.dtype} --num-threads {threads} > {log:q} 2>&1"


rule label_rewards:
    """RM rewards for every SFT sample: the data of the *-rw alignment runs."""
    input:
        rm=res("models/rm/config.json"),
        samples=res("data/sft_samples/{split}.jsonl"),
    output:
        res("data/rm_labels/{split}.jsonl"),
    params:
        cmd=command("label_rewards"),
        code=code_of("label_rewards"),
        rm=parent_of("rm", "input"),
        gpu=PLAN.gpu_prefix(min(PLAN.gpus(), 1)),
        dtype=PLAN.inference_dtype_arg(),
        batch_size=config["sample"]["score_batch_size"],
        max_len=config["rm"]["max_len"],
        max_gen_len=config["rm"]["max_gen_len"],
    threads: workflow.cores
    resources:
        gpu=min(PLAN.gpus(), 1),
    log:
        log("label_rewards", "{split}"),
    benchmark:
        bench("label_rewards", "{split}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}OMP_NUM_THREADS={threads} {params.cmd} --rm {params.rm:q} "
        "--input {input.samples:q} --output {output:q} --batch-size {params.batch_size:q} "
        "--max-len {params.max_len:q} --max-gen-len {params.max_gen_len:q} {params.dtype} "
        "> {log:q} 2>&1"
