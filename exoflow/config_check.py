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


def check_runs(config: dict) -> None:
    """Every run (explicit, or a point of an align.grid sweep) resolves to valid parameters
    whose max_steps is a multiple of save_every, and the run set, its seeds and the study's
    comparisons are consistent."""
    import jsonschema
    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas" /
                             "config.schema.yaml").read_text())
    try:
        plan = Plan(config)
        confs = plan.configurations()
        plan.runs()
        plan.comparisons()
        plan.eval_split()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not confs:
        raise ConfigError("align: no runs (align.runs, align.grid and align.only give none)")
    sub = dict(schema["definitions"]["align_params"], required=["loss", "data"],
               definitions=schema["definitions"])
    align = config.get("align") or {}
    defaults = align.get("defaults") or {}
    explicit = align.get("runs") or {}
    for name, entry in confs.items():
        p = dict(defaults, **entry)
        errors = sorted(jsonschema.Draft202012Validator(sub).iter_errors(p), key=str)
        if errors:
            e = errors[0]
            key = ".".join(map(str, e.absolute_path)) or "(run)"
            raise ConfigError(f"align run {name!r}: {key}: {e.message}")
        steps, every = p.get("max_steps"), p.get("save_every")
        if steps is not None and every and steps % every:
            where = f"align.runs.{name}" if name in explicit else f"align.grid run {name}"
            keys = [f"{where}.{k}" if k in entry else f"align.defaults.{k}"
                    for k in ("max_steps", "save_every")]
            raise ConfigError(
                f"{keys[0]} = {steps} is not a multiple of {keys[1]} = {every}: the steps after "
                "the last checkpoint would be trained and thrown away")


def check_config(config: dict) -> None:
    """All the checks of this module on a validated config (ConfigError on the first)."""
    check_model_init(str(config["model"]["init"]))
    check_runs(config)
