# exoflow: EXO vs DPO alignment on Anthropic-HH, end to end.
#   snakemake --cores all eval_all                                    # the paper's setup
#   snakemake --cores 2 eval_all --configfile configs/tiny.yaml       # the CPU preset
from snakemake.utils import min_version

from exoflow.provenance import force_stale_jobs
from exoflow.summary import print_rm_check

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"


wildcard_constraints:
    split="train|test",


include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/train.smk"
include: "rules/sample.smk"
include: "rules/align.smk"
include: "rules/eval.smk"
include: "rules/study.smk"
include: "rules/judge.smk"


rule all:
    default_target: True
    input:
        PLAN.all_targets(),


rule data:
    input:
        PLAN.data_targets(),


rule models:
    input:
        PLAN.model_targets(),


rule labels:
    input:
        PLAN.label_targets(),


rule eval_all:
    input:
        PLAN.eval_all_targets(),


# Outputs made with other params than these (their job records): listed and re-made.
force_stale_jobs(workflow, RESULTS)


onsuccess:
    # The last lines of a run that made (or found) the summary: whether its RM can be read.
    print_rm_check(RESULTS)
