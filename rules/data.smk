rule preprocess:
    """Raw HH pairs (hub, local folder or synthetic) -> {prompt, chosen, rejected}."""
    input:
        script=script("preprocess"),
        code=code("io", "hh", "data", "synthetic"),
    output:
        pairs=res("data/pref/{split}.jsonl"),
        stats=res("data/stats/{split}.json"),
    params:
        data=data_params,
        seed=config["seed"],
    log:
        log("preprocess", "{split}"),
    benchmark:
        bench("preprocess", "{split}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "python {input.script} --split {wildcards.split} --data {params.data:q} "
        "--seed {params.seed} --output {output.pairs} --stats {output.stats} > {log} 2>&1"


rule data_stats:
    """Counts read, kept and dropped per reason, per split, in one file."""
    input:
        script=script("data_stats"),
        stats=expand(res("data/stats/{split}.json"), split=SPLITS),
    output:
        res("data/stats.json"),
    log:
        log("data_stats"),
    benchmark:
        bench("data_stats")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "python {input.script} --inputs {input.stats} --output {output} > {log} 2>&1"


rule pref_to_rewards:
    """Preference pairs in the alignment format: completions [chosen, rejected], rewards [1, 0]."""
    input:
        script=script("pref_to_rewards"),
        code=code("io", "hh"),
        pairs=res("data/pref/{split}.jsonl"),
    output:
        res("data/p2r/{split}.jsonl"),
    log:
        log("pref_to_rewards", "{split}"),
    benchmark:
        bench("pref_to_rewards", "{split}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "python {input.script} --input {input.pairs} --output {output} > {log} 2>&1"
