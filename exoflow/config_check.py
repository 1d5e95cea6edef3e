"""Checks of a workflow config that a JSON schema cannot express, run when the Snakefile is
parsed (so a dry run fails on them): no torch, no Snakemake import.

* every section resolves to its parameter class (:mod:`exoflow.params`: types, bounds and the
  constraints between keys), every alignment run (explicit, or a point of an ``align.grid``
  sweep) to valid run parameters, and the seeds and the study's comparisons are consistent
  (:class:`exoflow.plan.Plan`);
* ``model.init``: ``scratch``, a Hugging Face name (``org/name``), or a local folder that holds a
  config, weights and a tokenizer (:func:`exoflow.modeling.check_model_dir`); a path that does
  not exist, or an empty or partial folder, is refused naming ``model.init``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ExoflowError
from .modeling import ModelLoadError, check_model_dir
from .plan import Plan

__all__ = ["ConfigError", "check_config", "check_model_init"]

# A hub repository id: "name" or "org/name" of letters, digits, ".", "_", "-".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ConfigError(ExoflowError, ValueError):
    """The config is inconsistent; the message names the key(s)."""


def check_model_init(init: str) -> str:
    """``"scratch"``, ``"hub"`` or ``"local"`` for a valid ``model.init``; ConfigError else."""
    if init == "scratch":
        return "scratch"
    p = Path(init).expanduser()
    if p.exists():
        try:
            check_model_dir(p, what="model.init")
        except ModelLoadError as e:
            raise ConfigError(f"{e}".split("; delete")[0] + "; model.init must be a Hugging Face "
                              "checkpoint folder (config.json, weights, tokenizer files)") from None
        return "local"
    if _HUB_ID.match(init) and not init.startswith((".", "~")):
        return "hub"
    raise ConfigError(f"model.init: {init!r} is neither an existing local folder nor a Hugging "
                      "Face name (org/name); give the path of a downloaded checkpoint, a hub name, "
                      "or scratch")


def check_config(config: dict) -> Plan:
    """All the checks of this module on a config (ConfigError on the first); the Plan."""
    try:
        plan = Plan(config)
        plan.comparisons()
    except ExoflowError as e:
        raise ConfigError(str(e)) from None
    check_model_init(plan.cfg.model.init)
    return plan
