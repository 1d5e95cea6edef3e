"""Checks of a workflow config that a JSON schema cannot express, run when the Snakefile is
parsed (so a dry run fails on them): no torch, no Snakemake import.

* every section resolves to its parameter class (:mod:`exoflow.params`: types, bounds and the
  constraints between keys), every alignment run (explicit, or a point of an ``align.grid``
  sweep) to valid run parameters, and the seeds and the study's comparisons are consistent
  (:class:`exoflow.plan.Plan`);
* ``model.init``: ``scratch``, a Hugging Face name (``org/name``), a local folder that holds a
  config, weights and a tokenizer (:func:`exoflow.modeling.check_model_dir`), or a local GGUF
  file; a path that does not exist, or an empty or partial folder, is refused naming
  ``model.init``;
* no stage feeds the model a sequence longer than its positions (``max_position_embeddings``,
  GPT-2's ``n_positions``; the scratch model's, or a local folder's ``config.json``): refused
  naming the keys and the model's limit.
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
    """``"scratch"``, ``"hub"``, ``"local"`` or ``"gguf"`` for a valid ``model.init``;
    ConfigError else."""
    if init == "scratch":
        return "scratch"
    p = Path(init).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ConfigError(f"model.init: {init!r} is not a file; give the path of a local "
                              ".gguf file (or a checkpoint folder, a hub name, or scratch)")
        return "gguf"
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


# The keys a model config names its longest sequence with (GPT-2: n_positions).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")


def model_positions(plan: Plan) -> tuple[int, str] | None:
    """``(positions, where)`` of the model every stage trains: the scratch size, or a local
    folder's config.json; None when it cannot be known before a job runs (a hub name, a GGUF
    file before it is imported)."""
    m = plan.cfg.model
    if m.is_scratch:
        return m.scratch.max_position_embeddings, "model.scratch.max_position_embeddings"
    if m.is_gguf:
        return gguf_positions(Path(m.init).expanduser())
    cfg = Path(m.init).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    import json

    data = json.loads(cfg.read_text())
    data = {**(data["text_config"] if "text_config" in data else {}), **data}  # multimodal
    for key in POSITION_KEYS:
        if isinstance(data.get(key), int):
            return data[key], f"{key} = {data[key]} in {cfg}"
    return None


def gguf_positions(path: Path) -> tuple[int, str] | None:
    """``<architecture>.context_length`` of a GGUF file's metadata (None when the gguf
    package is missing or the key is)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(str(path))

    def value(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = value("general.architecture")
    n = value(f"{arch}.context_length") if arch else None
    return (int(n), f"{arch}.context_length = {int(n)} in {path}") if n else None


def check_positions(plan: Plan) -> None:
    """Every stage's longest sequence fits the model's positions (ConfigError naming both)."""
    limit = model_positions(plan)
    if limit is None:
        return
    n, where = limit
    for what, tokens in plan.longest_sequences().items():
        if tokens > n:
            raise ConfigError(f"{what} = {tokens} tokens exceeds the model's {n} positions "
                              f"({where}); lower it (the model cannot attend that far)")


def check_config(config: dict) -> Plan:
    """All the checks of this module on a config (ConfigError on the first); the Plan."""
    try:
        plan = Plan(config)
        plan.comparisons()
    except ExoflowError as e:
        raise ConfigError(str(e)) from None
    check_model_init(plan.cfg.model.init)
    check_positions(plan)
    return plan
