# LLM-judge win rates (exoflow.judge), the paper's headline metric: every judged checkpoint of
# every run against each of judge.baselines, on the report prompts, both orders.
#   judge/<run>/ckpt<k>/<baseline>/judgements.jsonl, win_rate.json    (snakemake judge_all)
#   judge/cache/                      one file per answer, shared: nothing is asked twice


rule judge_checkpoint:
    """The judge's verdicts on a checkpoint's samples against a baseline's responses."""
    input:
        evals=PLAN.path("eval_rewards"),
        dataset=PLAN.path("dataset_rewards"),
        template=PLAN.judge_template_inputs(),
    output:
        judgements=PLAN.path("judgements"),
        summary=PLAN.path("win_rate"),
    log:
        log("judge_checkpoint", "{run}/ckpt{ckpt}/{baseline}"),
    benchmark:
        bench("judge_checkpoint", "{run}/ckpt{ckpt}/{baseline}")
    wildcard_constraints:
        run=PLAN.eval_run_regex(),
        ckpt=r"0|[1-9]\d*",
        baseline="sft|chosen",
    conda:
        "../envs/exoflow.yaml"
    threads: 1
    params:
        code=code_of("judge"),
        judge=as_json(CFG.judge),
        first=CFG.eval.val_prompts,
        cache=res("judge/cache"),
    shell:
        run_script("judge")


rule judge_all:
    """Every judged checkpoint's win rates (judge.base_url must name an endpoint)."""
    input:
        judge_inputs,
