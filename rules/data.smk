rule preprocess:
    """Raw HH pairs (hub, local folder or synthetic) -> {prompt, chosen, rejected}."""
    output:
        pairs=res("data/pref/{split}.jsonl"),
        stats=res("data/stats/{split}.json"),
    log:
        log("preprocess", "{split}"),
    benchmark:
        bench("preprocess", "{split}")
    conda:
        "../envs/exoflow.yaml"
    params:
        code=code_of("preprocess"),
        data=lambda wildcards: as_json(PLAN.data_params(wildcards.split)),
        seed=CFG.seed,
    shell:
        run_script("preprocess")


rule data_stats:
    """Counts read, kept and dropped per reason, per split, in one file."""
    input:
        splits=expand(res("data/stats/{split}.json"), split=SPLITS),
    output:
        stats=res("data/stats.json"),
    log:
        log("data_stats"),
    benchmark:
        bench("data_stats")
    conda:
        "../envs/exoflow.yaml"
    params:
        code=code_of("data_stats"),
    shell:
        run_script("data_stats")


rule pref_to_rewards:
    """Preference pairs in the alignment format: completions [chosen, rejected], rewards [1, 0]."""
    input:
        pairs=res("data/pref/{split}.jsonl"),
    output:
        records=res("data/p2r/{split}.jsonl"),
    log:
        log("pref_to_rewards", "{split}"),
    benchmark:
        bench("pref_to_rewards", "{split}")
    conda:
        "../envs/exoflow.yaml"
    params:
        code=code_of("pref_to_rewards"),
    shell:
        run_script("pref_to_rewards")
