"""Checks of a workflow config that a JSON schema cannot express, run when the Snakefile is
parsed (so a dry run fails on them): no torch, no Snakemake import.

* ``model.init``: ``scratch``, a Hugging Face name (``org/name``), or a local folder that holds a
  config, weights and a tokenizer (:func:`exoflow.modeling.check_model_dir`); a path that does
  not exist, or an empty or partial folder, is refused naming ``model.init``.
* every alignment run's ``max_steps`` is a multiple of its ``save_every`` (else the steps after
  the last checkpoint would be trained and thrown away).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ExoflowError
from .modeling import ModelLoadError, check_model_dir

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


def check_config(config: dict) -> None:
    """All the checks of this module on a validated config (ConfigError on the first)."""
    check_model_init(str(config["model"]["init"]))
    align = config.get("align") or {}
    defaults = align.get("defaults") or {}
    for run, entry in (align.get("runs") or {}).items():
        p = dict(defaults, **(entry or {}))
        steps, every = p.get("max_steps"), p.get("save_every")
        if steps is not None and every and steps % every:
            keys = [f"align.runs.{run}.{k}" if k in (entry or {}) else f"align.defaults.{k}"
                    for k in ("max_steps", "save_every")]
            raise ConfigError(
                f"{keys[0]} = {steps} is not a multiple of {keys[1]} = {every}: the steps after "
                "the last checkpoint would be trained and thrown away")
