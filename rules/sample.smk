rule sample_sft:
    """sample.num_return completions per prompt from the SFT model."""
    input:
        script=script("sample"),
        code=code("sampling", "batching", "modeling"),
        model=res("models/sft/config.json"),
        prompts=res("data/pref/{split}.jsonl"),
    output:
        res("data/sft_samples/{split}.jsonl"),
    params:
        gpu=gpu_prefix(min(gpus(), 1)),
        sample=as_json(config["sample"]),
        seed=config["seed"],
    threads: workflow.cores
    resources:
        gpu=min(gpus(), 1),
    log:
        log("sample_sft", "{split}"),
    benchmark:
        bench("sample_sft", "{split}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}python {input.script} --model $(dirname {input.model}) --input {input.prompts} "
        "--output {output} --params {params.sample:q} --seed {params.seed} "
        "--num-threads {threads} > {log} 2>&1"


rule label_rewards:
    """RM rewards for every SFT sample: the data of the *-rw alignment runs."""
    input:
        script=script("score"),
        code=code("rewards", "batching", "modeling"),
        rm=res("models/rm/config.json"),
        samples=res("data/sft_samples/{split}.jsonl"),
    output:
        res("data/rm_labels/{split}.jsonl"),
    params:
        gpu=gpu_prefix(min(gpus(), 1)),
        batch_size=config["sample"]["score_batch_size"],
        max_len=config["rm"]["max_len"],
        max_gen_len=config["rm"]["max_gen_len"],
    threads: workflow.cores
    resources:
        gpu=min(gpus(), 1),
    log:
        log("label_rewards", "{split}"),
    benchmark:
        bench("label_rewards", "{split}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}OMP_NUM_THREADS={threads} python {input.script} --rm $(dirname {input.rm}) "
        "--input {input.samples} --output {output} --mode label --batch-size {params.batch_size} "
        "--max-len {params.max_len} --max-gen-len {params.max_gen_len} > {log} 2>&1"
