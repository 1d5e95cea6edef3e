# Evaluation: per-checkpoint samples and scores, the dataset reference, one summary.
#   samples/<run>/ckpt<k>/test.jsonl   eval.num_prompts test prompts x eval.num_return samples
#   eval/<run>/ckpt<k>/reward.json     RM reward, win rate vs SFT, KL to SFT, length (+ gold)
#   eval/dataset/reward.json           the dataset's chosen / rejected responses, same prompts
#   summary.csv, summary.png           every run's checkpoints, SFT (= ckpt0 of every run)
# The SFT model is evaluated once, as run "sft" checkpoint 0.


rule sample_checkpoint:
    """eval.num_return samples for each of the first eval.num_prompts test prompts, from
    checkpoint k of a run (run sft, k 0: the SFT model). One seed for every checkpoint.
    """
    input:
        model=ckpt_model,
        prompts=PLAN.path("pref", split="test"),
    output:
        samples=PLAN.path("samples"),
    log:
        log("sample_checkpoint", "{run}/ckpt{ckpt}"),
    benchmark:
        bench("sample_checkpoint", "{run}/ckpt{ckpt}")
    wildcard_constraints:
        run=PLAN.eval_run_regex(),
        ckpt=r"0|[1-9]\d*",
    conda:
        "../envs/exoflow.yaml"
    threads: 1
    resources:
        **PLAN.job_resources("sample_checkpoint"),
        gpu=PLAN.inference_gpus(),
    params:
        code=code_of("sample"),
        generation=as_json(CFG.eval.generation()),
        seed=CFG.seed,
        num_prompts=as_json(CFG.eval.num_prompts),
        subset=as_json(None),
        dtype=as_json(PLAN.inference_dtype()),
    shell:
        run_script("sample", PLAN.inference_prefix(threads=False))


rule eval_checkpoint:
    """RM reward, win rate against the SFT samples, KL(pi || pi_SFT) on the checkpoint's
    own samples, response length, and the gold reward with the synthetic source."""
    input:
        samples=PLAN.path("samples"),
        sft_samples=PLAN.path("samples", run="sft", ckpt="0"),
        rm=PLAN.path("rm"),
        sft=PLAN.path("sft"),
        policy=ckpt_model,
    output:
        summary=PLAN.path("eval"),
        rewards=PLAN.path("eval_rewards"),
    log:
        log("eval_checkpoint", "{run}/ckpt{ckpt}"),
    benchmark:
        bench("eval_checkpoint", "{run}/ckpt{ckpt}")
    wildcard_constraints:
        run=PLAN.eval_run_regex(),
        ckpt=r"0|[1-9]\d*",
    conda:
        "../envs/exoflow.yaml"
    threads: 1
    resources:
        **PLAN.job_resources("eval_checkpoint"),
        gpu=PLAN.inference_gpus(),
    params:
        code=code_of("eval_checkpoint"),
        scoring=as_json(PLAN.eval_scoring()),
        rm_layout=as_json(CFG.rm.layout()),
        gold=as_json(PLAN.is_synthetic()),
        dtype=as_json(PLAN.inference_dtype()),
    shell:
        run_script("eval_checkpoint", PLAN.inference_prefix(threads=False))


rule eval_dataset:
    """The reference levels: RM (and gold) reward of the dataset's own chosen and rejected
    responses to the same eval.num_prompts test prompts."""
    input:
        rm=PLAN.path("rm"),
        pairs=PLAN.path("pref", split="test"),
    output:
        summary=PLAN.path("dataset_eval"),
        rewards=PLAN.path("dataset_rewards"),
    log:
        log("eval_dataset"),
    benchmark:
        bench("eval_dataset")
    conda:
        "../envs/exoflow.yaml"
    threads: 1
    resources:
        **PLAN.job_resources("eval_dataset"),
        gpu=PLAN.inference_gpus(),
    params:
        code=code_of("eval_dataset"),
        num_prompts=as_json(CFG.eval.num_prompts),
        score_batch_size=CFG.eval.score_batch_size,
        rm_layout=as_json(CFG.rm.layout()),
        gold=as_json(PLAN.is_synthetic()),
        dtype=as_json(PLAN.inference_dtype()),
    shell:
        run_script("eval_dataset", PLAN.inference_prefix(threads=False))


rule summarize:
    """summary.csv (one row per run and checkpoint, SFT, dataset chosen/rejected, on the report
    prompts; each run's checkpoint picked on the validation prompts) and summary.png (reward vs
    KL, reward / win rate / length vs step, gold when known)."""
    input:
        sft=PLAN.path("eval", run="sft", ckpt="0"),
        dataset=PLAN.path("dataset_eval"),
        checkpoints=PLAN.eval_checkpoint_targets(),
        records=[
            PLAN.path("eval_rewards", run="sft", ckpt="0"),
            PLAN.path("dataset_rewards"),
            *PLAN.eval_rewards_targets(),
        ],
        judge=PLAN.judge_targets() if PLAN.judge_enabled() else [],
        rm_metrics=PLAN.path("rm_metrics"),
    output:
        csv=report(
            PLAN.path("summary_csv"),
            caption="../report/summary_csv.rst",
            category="Summary",
        ),
        png=report(
            PLAN.path("summary_png"),
            caption="../report/summary.rst",
            category="Summary",
        ),
    log:
        log("summarize"),
    benchmark:
        bench("summarize")
    conda:
        "../envs/exoflow.yaml"
    threads: 1
    params:
        code=code_of("summarize"),
        runs=json.dumps(PLAN.run_meta()),  # not as_json: the run order is the table's
        val_prompts=CFG.eval.val_prompts,
        select_by=CFG.eval.select_by,
        title=CFG.run_name,
    shell:
        run_script("summarize")
