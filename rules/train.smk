# SFT and the reward model: one template, two rules (train_sft, train_rm), one CLI
# (workflow_scripts/train_stage.py --stage sft|rm). Both start from the same base model.
#   models/sft/   causal LM fine-tuned on prompt + chosen (loss on the response only)
#   models/rm/    a scalar head on the base model, Bradley-Terry loss on the pairs
# `git grep "train_{stage}"` finds this file from the rule names train_sft, train_rm.

for stage in ("sft", "rm"):

    rule:
        name:
            f"train_{stage}"
        input:
            base=base_model_input(),
            train=PLAN.path("pref", split="train"),
            test=PLAN.path("pref", split="test"),
            deepspeed=PLAN.deepspeed_inputs(),
        output:
            model=PLAN.path("model", stage=stage),
            metrics=PLAN.path("model_metrics", stage=stage),
        log:
            log(f"train_{stage}"),
        benchmark:
            bench(f"train_{stage}")
        conda:
            "../envs/exoflow.yaml"
        threads: workflow.cores
        resources:
            **PLAN.job_resources(stage),
            gpu=PLAN.gpus(),
            slurm_extra=SIGNAL_BEFORE_LIMIT,
        params:
            code=code_of("train_stage"),
            stage=stage,
            base=base_model_arg,
            params=as_json(getattr(CFG, stage)),
            runtime=as_json(PLAN.runtime()),
            work_dir=res(f"work/{stage}"),
            log_dir=res(f"logs/tensorboard/{stage}"),
        shell:
            run_script("train_stage", PLAN.train_prefix())
