"""Paths and constants the tests share: the repository, the real HH sample, the workflow's
files, the alignment metrics' names, the tiny preset as a config."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "workflow_scripts"
HH_SAMPLE = Path(os.environ.get("EXOFLOW_HH_SAMPLE",
                                ROOT.parent / "shared" / "hh-rlhf-sample" / "harmless-base"))
WORKFLOW_FILES = ["Snakefile", "config.yaml", "rules", "schemas", "workflow_scripts", "configs",
                  "envs", "profiles", "report", "exoflow"]
# The per-step metrics of the alignment loss (exoflow.losses), in every alignment loss curve.
ALIGN_METRICS = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                 "logps/policy", "logps/ref", "logratio/mean", "probs/chosen", "kl/reverse",
                 "kl/forward"]

# ---- tiny records and models -----------------------------------------------------------------

TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())


def merged(*overlays):
    """config.yaml with overlays merged as Snakemake does (dicts key by key)."""
    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for o in overlays:
        cfg = merge(cfg, copy.deepcopy(o))
    return cfg
