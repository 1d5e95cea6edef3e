"""Everything a dry run can refuse in a config, before any job runs, each in one line naming
the key(s), what was given and what is allowed: no torch, no Snakemake import (the Snakefile
calls :func:`check_config` while it is parsed).

* the config against the schema (``schemas/config.schema.yaml``, generated from
  :mod:`exoflow.config`) and its parameter classes: unknown keys (with the closest known one),
  types, bounds, and the constraints between the keys of one section;
* the run set formed (``align.runs``, ``align.grid``, ``align.only``, ``align.seeds``:
  :class:`exoflow.plan.Plan`);
* ``model.init``: ``scratch``, a Hugging Face name (``org/name``), a local folder that holds a
  config, weights and a tokenizer (:func:`exoflow.modeling.check_model_dir`), or a local GGUF
  file; a path that does not exist, or an empty or partial folder, is refused;
* across sections: the ordered table of :mod:`exoflow.config.constraints` (reserved run names,
  each run's loss, its ``num_contrastive`` against its data's candidates, checkpoints, the
  study's comparisons, the data source, the judge, batches, and last every stage's longest
  sequence against the model's positions).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ..errors import ExoflowError
from ..io import model_config
from ..modeling import ModelLoadError, check_model_dir
from ..plan import Plan
from .constraints import ConfigError, check_constraints

__all__ = ["ConfigError", "check_config", "check_model_init", "check_schema",
           "plan_or_exit"]

# A hub repository id: "name" or "org/name" of letters, digits, ".", "_", "-".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def check_schema(config: dict, schema_file=SCHEMA) -> None:
    """The config against the JSON schema, its first error in one line: the key's path, what
    was given and what is allowed (never the schema itself)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_file).read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if not errors:
        return
    e = jsonschema.exceptions.best_match(errors)
    where = ".".join(map(str, e.absolute_path)) or "config"
    allowed = e.schema.get("description", "")
    what = e.message if len(e.message) < 300 else e.message[:300] + "..."
    raise ConfigError(f"{where}: {what}" + (f" ({allowed})" if allowed else ""))


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
        check_vocabulary(p)
        return "local"
    if _HUB_ID.match(init) and not init.startswith((".", "~")):
        return "hub"
    raise ConfigError(f"model.init: {init!r} is neither an existing local folder nor a Hugging "
                      "Face name (org/name); give the path of a downloaded checkpoint, a hub name, "
                      "or scratch")


def tokenizer_ids(folder: Path) -> int | None:
    """One more than the largest token id of ``folder``'s tokenizer.json (its model's vocabulary
    and the added tokens), read as JSON (no transformers); None without that file."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        tok = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    vocab = (tok.get("model") or {}).get("vocab")
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab or [])))
    ids += [t["id"] for t in tok.get("added_tokens") or [] if isinstance(t.get("id"), int)]
    return max(ids) + 1 if ids else None


def check_vocabulary(folder: Path) -> None:
    """The tokenizer of a model.init folder fits its embedding (config.json's vocab_size): a
    larger one would feed ids past the embedding (an IndexError on the CPU, a device-side
    assert on a GPU) in the middle of SFT."""
    model_json = model_config(folder)  # the model's config.json, not the workflow's
    size = model_json.get("vocab_size")
    n = tokenizer_ids(folder)
    if isinstance(size, int) and n is not None and n > size:
        raise ConfigError(
            f"model.init: {folder}: the tokenizer's ids go up to {n - 1} (tokenizer.json) but "
            f"config.json's vocab_size is {size}: ids {size}..{n - 1} have no embedding; give "
            "the tokenizer the model was trained with (or resize its embeddings)")


def config_values_as_yaml(config: dict, argv: list[str]) -> None:
    """``--config key=value`` read as YAML, as a config file's value is: Snakemake reads each
    value with YAML's base loader, every scalar a string (``'eval={num_prompts: 16}'`` gave
    ``'16'``, refused as not an integer). Each value is parsed again here and merged over the
    config, key by key, as Snakemake merged it; one that is not YAML is a ConfigError."""
    import yaml

    entries, take = [], False
    for word in argv:
        if word in ("--config", "-C"):
            take = True
            continue
        if take and word.startswith("-"):
            take = False
        if take:
            entries.append(word)
        elif word.startswith("--config="):
            entries.append(word.split("=", 1)[1])
    for entry in entries:
        key, sep, text = entry.partition("=")
        if not sep:
            raise ConfigError(f"--config {entry!r}: give key=value (e.g. --config "
                              "'eval={num_prompts: 16}')")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {key}: {text!r} is not YAML "
                              f"({str(e).splitlines()[0]})") from None
        _merge(config, key, value)


def _merge(into: dict, key: str, value) -> None:
    if isinstance(value, dict) and isinstance(into.get(key), dict):
        for k, v in value.items():
            _merge(into[key], k, v)
    else:
        into[key] = value


def plan_or_exit(config: dict, argv: list[str]) -> Plan:
    """:func:`check_config`, a ConfigError ending the process with its one line (the
    traceback with ``--debug`` or ``EXOFLOW_DEBUG=1``): the Snakefile's first step."""
    from ..cli import debug_requested

    try:
        config_values_as_yaml(config, argv)
        plan = check_config(config)
        if {"-n", "--dry-run", "--dryrun"} & set(argv):  # each run's resolved parameters
            for line in plan.run_table():  # ('*': set by the run's own entry)
                print(f"exoflow: run {line}", file=sys.stderr)
        return plan
    except ConfigError as e:
        if debug_requested(argv):
            raise
        raise SystemExit(f"error: {e}") from None


def check_config(config: dict, schema_file=SCHEMA) -> Plan:
    """All the checks of this module on a config (ConfigError on the first); the Plan."""
    try:
        plan = Plan(config)
        check_schema(config, schema_file)
    except ConfigError:
        raise
    except ExoflowError as e:
        raise ConfigError(str(e)) from None
    check_model_init(plan.cfg.model.init)
    check_constraints(plan)
    return plan
