# exoflow: EXO vs DPO alignment on Anthropic-HH, end to end.
#   snakemake --cores all eval_all                                    # the paper's setup
#   snakemake --cores 2 --configfile configs/tiny.yaml eval_all       # the CPU preset
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/sft.smk"
include: "rules/rm.smk"
include: "rules/sample.smk"
include: "rules/align.smk"
include: "rules/eval.smk"


rule all:
    input:
        all_targets(),
    default_target: True


rule data:
    input:
        data_targets(),


rule models:
    input:
        model_targets(),


rule labels:
    input:
        label_targets(),


rule eval_all:
    input:
        eval_all_targets(),
