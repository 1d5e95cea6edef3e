# Studies: every configuration across its seeds (align.seeds), and the paired differences of
# study.compare, on the report prompts (eval.val_prompts pick the checkpoints):
#   study/study.csv, study/compare.csv, study/study.png       (snakemake study)


rule study:
    """Across-seed means and intervals per configuration and checkpoint, paired bootstrap
    differences over seeds and prompts, and the reward/gold-KL frontiers with bands."""
    input:
        sft=PLAN.path("eval", run="sft", ckpt="0"),
        checkpoints=PLAN.eval_checkpoint_targets(),
        records=[
            PLAN.path("eval_rewards", run="sft", ckpt="0"),
            *PLAN.eval_rewards_targets(),
        ],
        judge=PLAN.judge_targets() if PLAN.judge_enabled() else [],
    output:
        csv=report(res("study/study.csv"), category="Study"),
        comparisons=report(res("study/compare.csv"), category="Study"),
        png=report(res("study/study.png"), category="Study"),
    log:
        log("study"),
    benchmark:
        bench("study")
    conda:
        "../envs/exoflow.yaml"
    threads: 1
    params:
        code=code_of("study"),
        runs=json.dumps(PLAN.run_meta()),  # not as_json: the run order is the table's
        compare=json.dumps(PLAN.comparisons()),
        val_prompts=CFG.eval.val_prompts,
        select_by=CFG.eval.select_by,
        bootstrap=CFG.study.bootstrap,
        seed=CFG.seed,
        title=CFG.run_name,
    shell:
        run_script("study")
