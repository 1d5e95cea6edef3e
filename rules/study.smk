# Studies: every configuration across its seeds (align.seeds), and the paired differences of
# study.compare, on the report prompts (eval.val_prompts pick the checkpoints):
#   study/study.csv, study/compare.csv, study/study.png       (snakemake study)


rule study:
    """Across-seed means and intervals per configuration and checkpoint, paired bootstrap
    differences over seeds and prompts, and the reward/gold-KL frontiers with bands."""
    input:
        sft=res("eval/sft/ckpt0/reward.json"),
        checkpoints=PLAN.eval_checkpoint_targets(),
        records=[res("eval/sft/ckpt0/rewards.jsonl"), *PLAN.eval_rewards_targets()],
    output:
        csv=report(res("study/study.csv"), category="Study"),
        compare=report(res("study/compare.csv"), category="Study"),
        png=report(res("study/study.png"), category="Study"),
    params:
        cmd=command("study"),
        code=code_of("study"),
        runs=PLAN.eval_run_meta(),
        compare=json.dumps(PLAN.comparisons()),
        val_prompts=PLAN.eval_split()["val_prompts"],
        select_by=PLAN.eval_split()["select_by"],
        bootstrap=(config.get("study") or {}).get("bootstrap", 2000),
        seed=config["seed"],
        out=parent_of("csv"),
        title=config["run_name"],
    threads: 1
    log:
        log("study"),
    benchmark:
        bench("study")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.cmd} --sft {input.sft:q} --checkpoints {input.checkpoints:q} "
        "--runs {params.runs:q} --compare {params.compare:q} --val-prompts {params.val_prompts:q} "
        "--select-by {params.select_by:q} --bootstrap {params.bootstrap:q} --seed {params.seed:q} "
        "--out {params.out:q} --title {params.title:q} > {log:q} 2>&1"
