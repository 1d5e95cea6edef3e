# Evaluation: per-checkpoint samples and scores, the dataset reference, one summary.
#   samples/<run>/ckpt<k>/test.jsonl   eval.num_prompts test prompts x eval.num_return samples
#   eval/<run>/ckpt<k>/reward.json     RM reward, win rate vs SFT, KL to SFT, length (+ gold)
#   eval/dataset/reward.json           the dataset's chosen / rejected responses, same prompts
#   summary.csv, summary.png           every run's checkpoints, SFT (= ckpt0 of every run)
# The SFT model is evaluated once, as run "sft" checkpoint 0.

rule sample_checkpoint:
    """eval.num_return samples for each of the first eval.num_prompts test prompts, from
    checkpoint k of a run (run sft, k 0: the SFT model). One seed for every checkpoint."""
    input:
        model=ckpt_model,
        prompts=res("data/pref/test.jsonl"),
    output:
        res("samples/{run}/ckpt{k}/test.jsonl"),
    params:
        cmd=command("sample"),
        code=code_of("sample"),
        model=parent_of("model", "input"),
        sample=as_json(PLAN.eval_sample_params()),
        seed=config["seed"],
        gpu=PLAN.gpu_prefix(min(PLAN.gpus(), 1)),
        dtype=PLAN.inference_dtype_arg(),
    wildcard_constraints:
        run=PLAN.eval_run_regex(),
        k=r"0|[1-9]\d*",
    threads: 1
    resources:
        gpu=min(PLAN.gpus(), 1),
    log:
        log("sample_checkpoint", "{run}/ckpt{k}"),
    benchmark:
        bench("sample_checkpoint", "{run}/ckpt{k}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}{params.cmd} --model {params.model:q} --input {input.prompts:q} "
        "--output {output:q} --params {params.sample:q} --seed {params.seed:q} "
        "{params.dtype} --num-threads {threads} > {log:q} 2>&1"


rule eval_checkpoint:
    """RM reward, win rate against the SFT samples, KL(pi || pi_SFT) on the checkpoint's
    own samples, response length, and the gold reward with the synthetic source."""
    input:
        samples=res("samples/{run}/ckpt{k}/test.jsonl"),
        sft_samples=res("samples/sft/ckpt0/test.jsonl"),
        rm=res("models/rm/config.json"),
        sft=res("models/sft/config.json"),
        policy=ckpt_model,
    output:
        summary=res("eval/{run}/ckpt{k}/reward.json"),
        rewards=res("eval/{run}/ckpt{k}/rewards.jsonl"),
    params:
        cmd=command("eval_checkpoint"),
        code=code_of("eval_checkpoint"),
        rm=parent_of("rm", "input"),
        sft=parent_of("sft", "input"),
        policy=parent_of("policy", "input"),
        sizes=as_json(PLAN.eval_score_params()),
        step=ckpt_step,
        rm_max_len=config["rm"]["max_len"],
        rm_max_gen_len=config["rm"]["max_gen_len"],
        gold="--gold" if PLAN.is_synthetic() else "",
        gpu=PLAN.gpu_prefix(min(PLAN.gpus(), 1)),
        dtype=PLAN.inference_dtype_arg(),
    wildcard_constraints:
        run=PLAN.eval_run_regex(),
        k=r"0|[1-9]\d*",
    threads: 1
    resources:
        gpu=min(PLAN.gpus(), 1),
    log:
        log("eval_checkpoint", "{run}/ckpt{k}"),
    benchmark:
        bench("eval_checkpoint", "{run}/ckpt{k}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}{params.cmd} --samples {input.samples:q} "
        "--sft-samples {input.sft_samples:q} --rm {params.rm:q} --sft {params.sft:q} "
        "--policy {params.policy:q} --output {output.summary:q} "
        "--rewards {output.rewards:q} --run {wildcards.run:q} --ckpt {wildcards.k:q} "
        "--step {params.step:q} --params {params.sizes:q} --rm-max-len {params.rm_max_len:q} "
        "--rm-max-gen-len {params.rm_max_gen_len:q} {params.gold} {params.dtype} "
        "--num-threads {threads} > {log:q} 2>&1"


rule eval_dataset:
    """The reference levels: RM (and gold) reward of the dataset's own chosen and rejected
    responses to the same eval.num_prompts test prompts."""
    input:
        rm=res("models/rm/config.json"),
        pairs=res("data/pref/test.jsonl"),
    output:
        summary=res("eval/dataset/reward.json"),
        rewards=res("eval/dataset/rewards.jsonl"),
    params:
        cmd=command("eval_dataset"),
        code=code_of("eval_dataset"),
        rm=parent_of("rm", "input"),
        sizes=as_json({"score_batch_size": config["eval"].get("score_batch_size", 32)}),
        num_prompts=PLAN.eval_num_prompts_arg(),
        rm_max_len=config["rm"]["max_len"],
        rm_max_gen_len=config["rm"]["max_gen_len"],
        gold="--gold" if PLAN.is_synthetic() else "",
        gpu=PLAN.gpu_prefix(min(PLAN.gpus(), 1)),
        dtype=PLAN.inference_dtype_arg(),
    threads: 1
    resources:
        gpu=min(PLAN.gpus(), 1),
    log:
        log("eval_dataset"),
    benchmark:
        bench("eval_dataset")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}{params.cmd} --rm {params.rm:q} --input {input.pairs:q} "
        "{params.num_prompts} --output {output.summary:q} --rewards {output.rewards:q} "
        "--params {params.sizes:q} --rm-max-len {params.rm_max_len:q} "
        "--rm-max-gen-len {params.rm_max_gen_len:q} {params.gold} {params.dtype} "
        "--num-threads {threads} > {log:q} 2>&1"


rule summarize:
    """summary.csv (one row per run and checkpoint, SFT, dataset chosen/rejected, on the report
    prompts; each run's checkpoint picked on the validation prompts) and summary.png (reward vs
    KL, reward / win rate / length vs step, gold when known)."""
    input:
        sft=res("eval/sft/ckpt0/reward.json"),
        dataset=res("eval/dataset/reward.json"),
        checkpoints=PLAN.eval_checkpoint_targets(),
        records=[res("eval/sft/ckpt0/rewards.jsonl"), res("eval/dataset/rewards.jsonl"),
                 *PLAN.eval_rewards_targets()],
    output:
        csv=report(res("summary.csv"), caption="../report/summary_csv.rst", category="Summary"),
        png=report(res("summary.png"), caption="../report/summary.rst", category="Summary"),
    params:
        cmd=command("summarize"),
        code=code_of("summarize"),
        runs=PLAN.eval_run_meta(),
        title=config["run_name"],
        val_prompts=PLAN.eval_split()["val_prompts"],
        select_by=PLAN.eval_split()["select_by"],
    threads: 1
    log:
        log("summarize"),
    benchmark:
        bench("summarize")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.cmd} --sft {input.sft:q} --dataset {input.dataset:q} "
        "--checkpoints {input.checkpoints:q} --runs {params.runs:q} --csv {output.csv:q} "
        "--png {output.png:q} --title {params.title:q} --val-prompts {params.val_prompts:q} "
        "--select-by {params.select_by:q} > {log:q} 2>&1"
