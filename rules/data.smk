rule preprocess:
    """Raw HH pairs (hub, local folder or synthetic) -> {prompt, chosen, rejected}."""
    output:
        pairs=res("data/pref/{split}.jsonl"),
        stats=res("data/stats/{split}.json"),
    params:
        cmd=command("preprocess"),
        code=code_of("preprocess"),
        data=data_params,
        seed=config["seed"],
    log:
        log("preprocess", "{split}"),
    benchmark:
        bench("preprocess", "{split}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.cmd} --split {wildcards.split:q} --data {params.data:q} "
        "--seed {params.seed:q} --output {output.pairs:q} --stats {output.stats:q} > {log:q} 2>&1"


rule data_stats:
    """Counts read, kept and dropped per reason, per split, in one file."""
    input:
        stats=expand(res("data/stats/{split}.json"), split=SPLITS),
    output:
        res("data/stats.json"),
    params:
        cmd=command("data_stats"),
        code=code_of("data_stats"),
    log:
        log("data_stats"),
    benchmark:
        bench("data_stats")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.cmd} --inputs {input.stats:q} --output {output:q} > {log:q} 2>&1"


rule pref_to_rewards:
    """Preference pairs in the alignment format: completions [chosen, rejected], rewards [1, 0]."""
    input:
        pairs=res("data/pref/{split}.jsonl"),
    output:
        res("data/p2r/{split}.jsonl"),
    params:
        cmd=command("pref_to_rewards"),
        code=code_of("pref_to_rewards"),
    log:
        log("pref_to_rewards", "{split}"),
    benchmark:
        bench("pref_to_rewards", "{split}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.cmd} --input {input.pairs:q} --output {output:q} > {log:q} 2>&1"
