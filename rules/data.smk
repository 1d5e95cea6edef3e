rule preprocess:
    """Raw HH pairs (hub, local folder or synthetic) -> {prompt, chosen, rejected}."""
    output:
        pairs=PLAN.path("pref"),
        stats=PLAN.path("stats"),
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
        splits=expand(PLAN.path("stats"), split=SPLITS),
    output:
        stats=PLAN.path("stats_all"),
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
        pairs=PLAN.path("pref"),
    output:
        records=PLAN.path("p2r"),
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
