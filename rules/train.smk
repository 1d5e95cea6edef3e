# SFT and the reward model: one template, two rules (train_sft, train_rm), one CLI
# (workflow_scripts/train_stage.py --stage sft|rm). Both start from the same base model.
#   models/sft/   causal LM fine-tuned on prompt + chosen (loss on the response only)
#   models/rm/    a scalar head on the base model, Bradley-Terry loss on the pairs
# `git grep "rule_name\|train_{stage}"` finds this file from the rule names train_sft, train_rm.

for stage in ("sft", "rm"):

    rule:
        name:
            f"train_{stage}"
        input:
            base=base_model_input(),
            train=res("data/pref/train.jsonl"),
            test=res("data/pref/test.jsonl"),
            deepspeed=PLAN.deepspeed_inputs(),
        output:
            model=res(f"models/{stage}/config.json"),
            metrics=res(f"models/{stage}/metrics.json"),
        params:
            script=script("train_stage"),
            code=code_of("train_stage"),
            stage=stage,
            gpu=PLAN.gpu_prefix(PLAN.gpus()),
            base=base_model_arg,
            section=as_json(config[stage]),
            engine=as_json(PLAN.engine_params()),
            launcher=PLAN.train_launcher(),
            procs=PLAN.processes(),
            out=parent_of("model"),
            work=res(f"work/{stage}"),
            tb=res(f"logs/tensorboard/{stage}"),
        threads: workflow.cores
        resources:
            gpu=PLAN.gpus(),
        log:
            log(f"train_{stage}"),
        benchmark:
            bench(f"train_{stage}")
        conda:
            "../envs/exoflow.yaml"
        shell:
            "{params.gpu}OMP_NUM_THREADS=$(( {threads} / {params.procs} > 1 ? {threads} / {params.procs} : 1 )) {params.launcher} {params.script:q} "
            "--stage {params.stage} --base {params.base:q} --train {input.train:q} "
            "--test {input.test:q} --out {params.out:q} --work-dir {params.work:q} "
            "--log-dir {params.tb:q} --params {params.section:q} --engine {params.engine:q} "
            "> {log:q} 2>&1"
