# Evaluation: per-checkpoint samples and scores, the dataset reference, one summary.
#   samples/<run>/ckpt<k>/test.jsonl   eval.num_prompts test prompts x eval.num_return samples
#   eval/<run>/ckpt<k>/reward.json     RM reward, win rate vs SFT, KL to SFT, length (+ gold)
#   eval/dataset/reward.json           the dataset's chosen / rejected responses, same prompts
#   summary.csv, summary.png           every run's checkpoints, SFT (= ckpt0 of every run)
# The SFT model is evaluated once, as run "sft" checkpoint 0.

if "sft" in config["align"]["runs"] or "dataset" in config["align"]["runs"]:
    raise ValueError("align.runs: 'sft' and 'dataset' are reserved names (eval/sft/ckpt0 is the "
                     "SFT model, eval/dataset the dataset's own responses); rename the run")


rule sample_checkpoint:
    """eval.num_return samples for each of the first eval.num_prompts test prompts, from
    checkpoint k of a run (run sft, k 0: the SFT model). One seed for every checkpoint."""
    input:
        script=script("sample"),
        code=code("sampling", "batching", "modeling"),
        model=ckpt_model,
        prompts=res("data/pref/test.jsonl"),
    output:
        res("samples/{run}/ckpt{k}/test.jsonl"),
    params:
        sample=eval_sample_params(),
        seed=config["seed"],
        gpu=gpu_prefix(min(gpus(), 1)),
    wildcard_constraints:
        run=eval_run_regex(),
        k=r"0|[1-9]\d*",
    threads: 1
    resources:
        gpu=min(gpus(), 1),
    log:
        log("sample_checkpoint", "{run}/ckpt{k}"),
    benchmark:
        bench("sample_checkpoint", "{run}/ckpt{k}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}python {input.script} --model $(dirname {input.model}) --input {input.prompts} "
        "--output {output} --params {params.sample:q} --seed {params.seed} "
        "--num-threads {threads} > {log} 2>&1"


rule eval_checkpoint:
    """RM reward, win rate against the SFT samples, KL(pi || pi_SFT) on the checkpoint's
    own samples, response length, and the gold reward with the synthetic source."""
    input:
        script=script("eval_checkpoint"),
        code=code("evaluate", "rewards", "sampling", "logps", "synthetic"),
        samples=res("samples/{run}/ckpt{k}/test.jsonl"),
        sft_samples=res("samples/sft/ckpt0/test.jsonl"),
        rm=res("models/rm/config.json"),
        sft=res("models/sft/config.json"),
        policy=ckpt_model,
    output:
        summary=res("eval/{run}/ckpt{k}/reward.json"),
        rewards=res("eval/{run}/ckpt{k}/rewards.jsonl"),
    params:
        sizes=eval_score_params(),
        step=lambda wc: ckpt_step(wc.run, wc.k),
        rm_max_len=config["rm"]["max_len"],
        rm_max_gen_len=config["rm"]["max_gen_len"],
        gold="--gold" if is_synthetic() else "",
        gpu=gpu_prefix(min(gpus(), 1)),
    wildcard_constraints:
        run=eval_run_regex(),
        k=r"0|[1-9]\d*",
    threads: 1
    resources:
        gpu=min(gpus(), 1),
    log:
        log("eval_checkpoint", "{run}/ckpt{k}"),
    benchmark:
        bench("eval_checkpoint", "{run}/ckpt{k}")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}python {input.script} --samples {input.samples} --sft-samples {input.sft_samples} "
        "--rm $(dirname {input.rm}) --sft $(dirname {input.sft}) "
        "--policy $(dirname {input.policy}) --output {output.summary} "
        "--rewards {output.rewards} --run {wildcards.run} --ckpt {wildcards.k} "
        "--step {params.step} --params {params.sizes:q} --rm-max-len {params.rm_max_len} "
        "--rm-max-gen-len {params.rm_max_gen_len} {params.gold} --num-threads {threads} "
        "> {log} 2>&1"


rule eval_dataset:
    """The reference levels: RM (and gold) reward of the dataset's own chosen and rejected
    responses to the same eval.num_prompts test prompts."""
    input:
        script=script("eval_dataset"),
        code=code("evaluate", "rewards", "synthetic"),
        rm=res("models/rm/config.json"),
        pairs=res("data/pref/test.jsonl"),
    output:
        summary=res("eval/dataset/reward.json"),
        rewards=res("eval/dataset/rewards.jsonl"),
    params:
        sizes=as_json({"score_batch_size": config["eval"].get("score_batch_size", 32)}),
        num_prompts=eval_num_prompts_arg(),
        rm_max_len=config["rm"]["max_len"],
        rm_max_gen_len=config["rm"]["max_gen_len"],
        gold="--gold" if is_synthetic() else "",
        gpu=gpu_prefix(min(gpus(), 1)),
    threads: 1
    resources:
        gpu=min(gpus(), 1),
    log:
        log("eval_dataset"),
    benchmark:
        bench("eval_dataset")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "{params.gpu}python {input.script} --rm $(dirname {input.rm}) --input {input.pairs} "
        "{params.num_prompts} --output {output.summary} --rewards {output.rewards} "
        "--params {params.sizes:q} --rm-max-len {params.rm_max_len} "
        "--rm-max-gen-len {params.rm_max_gen_len} {params.gold} --num-threads {threads} "
        "> {log} 2>&1"


rule summarize:
    """summary.csv (one row per run and checkpoint, SFT, dataset chosen/rejected) and
    summary.png (reward vs KL, reward / win rate / length vs step, gold when known)."""
    input:
        script=script("summarize"),
        code=code("summary"),
        sft=res("eval/sft/ckpt0/reward.json"),
        dataset=res("eval/dataset/reward.json"),
        checkpoints=eval_checkpoint_targets(),
    output:
        csv=report(res("summary.csv"), caption="../report/summary_csv.rst", category="Summary"),
        png=report(res("summary.png"), caption="../report/summary.rst", category="Summary"),
    params:
        runs=eval_run_meta(),
        title=config["run_name"],
    threads: 1
    log:
        log("summarize"),
    benchmark:
        bench("summarize")
    conda:
        "../envs/exoflow.yaml"
    shell:
        "python {input.script} --sft {input.sft} --dataset {input.dataset} "
        "--checkpoints {input.checkpoints} --runs {params.runs:q} --csv {output.csv} "
        "--png {output.png} --title {params.title:q} > {log} 2>&1"
