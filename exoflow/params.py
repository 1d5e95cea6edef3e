"""Every parameter of the workflow, stated once: its name, type, default, bounds and meaning.

One dataclass per config section (:class:`Config` is the whole file); each field is declared
with :func:`param`, whose ``help`` is the key's documentation and whose bounds are checked here
and written into the JSON schema. Nothing else states a default or a bound:

* ``schemas/config.schema.yaml``, which Snakemake validates a config against before anything
  runs, is generated from these classes (``python -m exoflow.schema > schemas/config.schema.yaml``;
  ``tests/test_params.py`` fails when the file differs), and the configuration table of
  ``docs/CONFIG.md`` is generated from the schema (``scripts/config_table.py``);
* :class:`exoflow.plan.Plan` turns a config into these objects, and the rules, the readers and
  the workflow scripts take their values from the objects (a script parses its ``--<section>``
  JSON argument back into the same class).

Cross-key constraints of a section live in its :meth:`Section.check`; what needs the losses
(a run's loss, its hyperparameters) is checked where they are read (:mod:`exoflow.losses`, by the
plan and the alignment job). No torch, no Snakemake.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import functools
import json
import math
import re
import sys
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from .errors import ParamsError

__all__ = ["AlignParams", "AlignSection", "Config", "DataParams", "EngineParams", "EvalParams",
           "GenerationParams", "JudgeParams", "LayoutParams", "LoraParams", "ModelParams", "OptimParams",
           "RMParams", "SFTParams", "SampleParams", "ScoredParams", "ScratchParams", "Section",
           "StudyParams",
           "SyntheticParams", "TrainParams", "check_run_name", "is_section", "param", "split_optional", "type_hints"]

ALIGN_DATA = ("rm_labels", "p2r")
DTYPES = ("bf16", "fp16", "fp32")
RUN_NAME = r"^[A-Za-z0-9._-]+$"


# The config path of the section being built by Section.from_dict (for its messages).
_WHERE: contextvars.ContextVar[str | None] = contextvars.ContextVar("where", default=None)


def param(default: Any = MISSING, help: str = "", *, factory=None, minimum=None, maximum=None,
          exclusive_minimum=None, exclusive_maximum=None, choices=None, pattern=None,
          schema: dict | None = None):
    """A dataclass field with its documentation and bounds (``schema``: a JSON-schema fragment
    for what the annotation cannot say, e.g. the items of a list)."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "choices": choices,
            "exclusive_minimum": exclusive_minimum, "exclusive_maximum": exclusive_maximum,
            "pattern": pattern, "schema": schema or {}}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_run_name(name: str, where: str) -> None:
    """A run's name is a file name: letters, digits, '.', '_' and '-', not '.' or '..'."""
    if not re.match(RUN_NAME, name) or name in (".", ".."):
        raise ParamsError(f"{where}: run name {name!r} may hold letters, digits, '.', '_' and "
                          "'-' only, and is not '.' or '..'")


def _closest(name: str, known) -> str:
    """`` (did you mean 'lr'?)`` for the known key closest to ``name`` (also a key spelled by
    its words' initials: learning_rate -> lr), or ''."""
    known = [str(k) for k in known]
    initials = "".join(w[0] for w in str(name).split("_") if w)
    close = [k for k in known if len(k) > 1 and k == initials] or \
        difflib.get_close_matches(str(name), known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@functools.cache
def type_hints(cls) -> dict:
    return typing.get_type_hints(cls, vars(sys.modules[__name__]))


def split_optional(tp):
    """``(inner type, nullable)`` of an annotation ``X | None``."""
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def is_section(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


def _type_error(where: str, tp) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             list: "a list", dict: "a mapping"}
    return names.get(typing.get_origin(tp) or tp, getattr(tp, "__name__", str(tp)))


def _check_type(value, tp, where: str):
    """``value`` if it is of annotation ``tp`` (JSON's view: an int is a number, a bool is not
    an int); ParamsError naming ``where`` otherwise."""
    inner, nullable = split_optional(tp)
    if value is None:
        if nullable:
            return None
        raise ParamsError(f"{where} must be {_type_error(where, inner)}, got null")
    if is_section(inner) and not isinstance(value, (dict, inner)):
        raise ParamsError(f"{where} must be a mapping of its keys ({where}.<key>: <value>), "
                          f"got {value!r}")
    origin = typing.get_origin(inner) or inner
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, list), dict: lambda v: isinstance(v, dict)}.get(origin)
    if ok is not None and not ok(value):
        raise ParamsError(f"{where} must be {_type_error(where, inner)}, got {value!r}")
    if origin is float and not math.isfinite(value):
        raise ParamsError(f"{where} must be a finite number, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(inner) or (Any,)
        for i, v in enumerate(value):
            if item is not Any:
                _check_type(v, item, f"{where}[{i}]")
    return value


@dataclass
class Section:
    """The base of every parameter class: :meth:`from_dict` refuses unknown keys (saying which
    known key is closest) and names missing ones; construction checks each field's type and
    bounds, then :meth:`check` (cross-key constraints). ``SECTION`` is the config path used in
    messages."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self):
        self._where = _WHERE.get() or self.SECTION or type(self).__name__
        token = _WHERE.set(None)  # a section nested in this one is named by where() below
        try:
            self._check_fields()
            self.check()
        finally:
            _WHERE.reset(token)

    def _check_fields(self) -> None:
        hints = type_hints(type(self))
        for f in fields(self):
            where = self.where(f.name)
            value = getattr(self, f.name)
            inner, _ = split_optional(hints[f.name])
            if is_section(inner) and isinstance(value, dict):
                value = inner.from_dict(value, where)
                setattr(self, f.name, value)
            elif not (is_section(inner) and isinstance(value, inner)):
                _check_type(value, hints[f.name], where)
            _check_bounds(value, f.metadata, where)

    def where(self, key: str | None = None) -> str:
        """The config path of this section (or of its ``key``) for messages."""
        base = getattr(self, "_where", None) or self.SECTION or type(self).__name__
        if base == Config.__name__:  # the whole config: its keys are top-level paths
            return key or "config"
        return f"{base}.{key}" if key else base

    def check(self) -> None:
        """Constraints between keys (ParamsError saying what to set); none by default."""

    @classmethod
    def from_dict(cls, d: dict | None, where: str | None = None):
        """An instance from a config mapping; ``where`` (default: ``SECTION``) names the section
        in messages."""
        d = dict(d or {})
        known = [f.name for f in fields(cls)]
        prefix = where or cls.SECTION or cls.__name__
        unknown = [k for k in d if k not in known]
        if unknown:
            k = unknown[0]
            raise ParamsError(f"{prefix}.{k}: unknown key{_closest(k, known)}; the keys of "
                              f"{prefix} are {', '.join(known)}")
        missing = [f.name for f in fields(cls) if f.name not in d and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise ParamsError(f"{prefix}: missing key(s) {', '.join(missing)}")
        token = _WHERE.set(where)
        try:
            return cls(**d)
        finally:
            _WHERE.reset(token)

    @classmethod
    def from_json(cls, text: str, where: str | None = None):
        """From a JSON object, or the path of a file holding one (a script's argument)."""
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text(encoding="utf-8")
        try:
            return cls.from_dict(json.loads(text), where)
        except json.JSONDecodeError as e:
            raise ParamsError(f"{where or cls.SECTION}: not a JSON object ({e})") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """One JSON word (sorted keys, no spaces): a command-line argument or params value."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def project(self, cls):
        """This section's values of the fields of ``cls`` (a base class of it), as a ``cls``:
        what a job that reads only those keys is given, so that the others re-run nothing."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})

    def default_of(self, key: str):
        f = next(f for f in fields(self) if f.name == key)
        return f.default_factory() if f.default is MISSING else f.default


def check_partial(cls, entry, where: str) -> None:
    """Each key of ``entry`` (some of ``cls``'s fields, e.g. ``align.defaults``) is known, of
    its type and within its bounds; what needs all the keys is checked when they are."""
    if not isinstance(entry, dict):
        raise ParamsError(f"{where} must be a mapping of {cls.__name__} keys, got {entry!r}")
    known = {f.name: f for f in fields(cls)}
    for k, v in entry.items():
        if k not in known:
            raise ParamsError(f"{where}.{k}: unknown key{_closest(k, known)}; the keys are "
                              f"{', '.join(known)}")
        _check_type(v, type_hints(cls)[k], f"{where}.{k}")
        _check_bounds(v, known[k].metadata, f"{where}.{k}")


def _check_bounds(value, meta, where: str) -> None:
    if value is None or isinstance(value, (bool, Section, list, dict)):
        if meta.get("choices") and value is not None and value not in meta["choices"]:
            raise ParamsError(f"{where} must be one of {list(meta['choices'])}, got {value!r}")
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise ParamsError(f"{where} must be one of {list(meta['choices'])}, got {value!r}"
                          f"{_closest(str(value), meta['choices'])}")
    if meta.get("pattern") and isinstance(value, str) and not re.match(meta["pattern"], value):
        raise ParamsError(f"{where} {value!r} may hold letters, digits, '.', '_' and '-' only")
    if meta.get("pattern") == RUN_NAME and value in (".", ".."):
        raise ParamsError(f"{where} {value!r} names a folder of the path itself (its outputs "
                          "would land outside their own folder); give a name")
    if not isinstance(value, (int, float)):
        return
    tests = [("minimum", lambda b: value >= b, ">="), ("maximum", lambda b: value <= b, "<="),
             ("exclusive_minimum", lambda b: value > b, ">"),
             ("exclusive_maximum", lambda b: value < b, "<")]
    for key, ok, op in tests:
        b = meta.get(key)
        if b is not None and not ok(b):
            raise ParamsError(f"{where} must be {op} {b}, got {value}")


# ---- data ------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SyntheticParams(Section):
    SECTION: ClassVar[str] = "data.synthetic"
    num_train: int = param(1000, "synthetic: training pairs.", minimum=1)
    num_test: int = param(1000, "synthetic: test pairs.", minimum=1)
    label_noise: float = param(0.25, "synthetic: fraction of pairs whose label is flipped.",
                               minimum=0, maximum=0.5)


@dataclass(kw_only=True)
class DataParams(Section):
    SECTION: ClassVar[str] = "data"
    source: str = param(help="hub (Anthropic/hh-rlhf), local (a folder) or synthetic (with a "
                        "programmatic gold reward).", choices=("hub", "local", "synthetic"))
    subset: str = param("helpful-base", "hub: the data_dir of Anthropic/hh-rlhf.")
    path: str | None = param(None, "local: a folder with train.jsonl[.gz] and test.jsonl[.gz] "
                             "in the hub's format.")
    max_train: int | None = param(None, "Keep this many training pairs (deterministic "
                                  "subsample); null: all.", minimum=1)
    max_test: int | None = param(None, "Keep this many test pairs; null: all.", minimum=1)
    on_bad_row: str = param("error", "error (naming file:line) or skip (counted in "
                            "data/stats.json).", choices=("error", "skip"))
    synthetic: SyntheticParams = param(factory=SyntheticParams,
                                       help="The synthetic source's sizes and noise.")

    def for_split(self, split: str) -> DataParams:
        """The section as one split sees it: the other split's size (and the synthetic keys
        of a real source) at their defaults, so that changing them re-runs nothing of this
        split."""
        other = "test" if split == "train" else "train"
        syn = self.synthetic
        syn = (syn.replace(**{f"num_{other}": syn.default_of(f"num_{other}")})
               if self.source == "synthetic" else SyntheticParams())
        return self.replace(**{f"max_{other}": None, "synthetic": syn})


# ---- models and engine -----------------------------------------------------------------------


@dataclass(kw_only=True)
class ScratchParams(Section):
    SECTION: ClassVar[str] = "model.scratch"
    hidden_size: int = param(help="scratch: hidden size.", minimum=1)
    num_layers: int = param(help="scratch: layers.", minimum=1)
    num_heads: int = param(help="scratch: attention heads.", minimum=1)
    intermediate_size: int | None = param(None, "scratch: MLP size (null: 4 x hidden).",
                                          minimum=1)
    max_position_embeddings: int = param(2048, "scratch: longest sequence (also the scratch "
                                         "tokenizer's model_max_length).", minimum=1)
    rotary_pct: float = param(0.25, "scratch: fraction of each head with rotary embeddings.",
                              minimum=0, maximum=1)


@dataclass(kw_only=True)
class LoraParams(Section):
    SECTION: ClassVar[str] = "model.lora"
    rank: int = param(8, "lora: adapter rank r.", minimum=1)
    alpha: float = param(16.0, "lora: scaling alpha (the update is alpha / r x B A).",
                         exclusive_minimum=0)
    dropout: float = param(0.0, "lora: dropout on the adapter input.", minimum=0,
                           exclusive_maximum=1)
    target_modules: list[str] | None = param(None, "lora: names of the linear layers to adapt; "
                                             "null: every linear layer of the transformer "
                                             "blocks, whatever the family (not the embeddings "
                                             "or the heads).", schema={"minItems": 1})

    def check(self):
        if self.target_modules is not None and (not self.target_modules
                                                or not all(self.target_modules)):
            raise ParamsError(f"{self.where('target_modules')} must be null or a list naming "
                              f"at least one module, got {self.target_modules!r}")


@dataclass(kw_only=True)
class ModelParams(Section):
    SECTION: ClassVar[str] = "model"
    init: str = param(help="A Hugging Face name, a local checkpoint folder (config, weights, "
                      "tokenizer), a local .gguf file (dequantised into a folder by the rule "
                      "import_base_model), or scratch.", schema={"minLength": 1})
    scratch: ScratchParams | None = param(None, "init: scratch only: the GPT-NeoX size.")
    tokenizer_vocab_size: int = param(50304, "init: scratch only: the BPE vocabulary trained "
                                      "on data/pref/train.", minimum=300)
    dtype: str = param("fp32", "Training (mixed precision: fp32 master weights, fp32 losses) "
                       "and inference precision; bf16 also runs on the CPU (slowly), fp16 "
                       "needs a GPU.", choices=DTYPES)
    lora: LoraParams | None = param(None, "LoRA adapters for SFT, RM and alignment (peft), as "
                                    "the original's --lora_dim; null: full fine-tuning. Models "
                                    "are saved merged (plain folders).")

    def check(self):
        if self.init == "scratch" and self.scratch is None:
            raise ParamsError("model.init: scratch needs model.scratch (the GPT-NeoX size, see "
                              "configs/tiny.yaml)")

    @property
    def is_scratch(self) -> bool:
        return self.init == "scratch"

    @property
    def is_gguf(self) -> bool:
        """``init`` names a GGUF file (imported into a checkpoint folder by a rule)."""
        return self.init.lower().endswith(".gguf")


def zero_stage(ds_config: str) -> int:
    """The ZeRO stage of a DeepSpeed config file."""
    path = Path(ds_config)
    if not path.exists():
        raise ParamsError(f"engine.deepspeed: no such file {ds_config!r}")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ParamsError(f"engine.deepspeed: {ds_config} is not valid JSON ({e})") from None
    return int(cfg.get("zero_optimization", {}).get("stage", 0))


@dataclass(kw_only=True)
class EngineParams(Section):
    SECTION: ClassVar[str] = "engine"
    deepspeed: str | None = param(None, "A DeepSpeed ZeRO config (stage 0-2), or null for "
                                  "plain PyTorch (DDP on several processes).")
    gpus: int = param(0, "GPUs per training job; 0 trains on the CPU; more than 1 launches "
                      "torchrun.", minimum=0)
    processes: int | None = param(None, "Training processes per job (torchrun: gloo on the "
                                  "CPU, NCCL on GPUs); null: engine.gpus, at least 1. On GPUs "
                                  "it must equal engine.gpus; on the CPU each process gets "
                                  "threads / processes cores.", minimum=1)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass "
                                         "(less memory, ~20% slower).")
    num_threads: int | None = param(None, "torch threads of a job; null: torch's default.",
                                    minimum=1)
    logging_steps: int = param(10, "Optimizer steps between logged losses (TensorBoard); "
                               "metrics.json has every step.", minimum=1)
    checkpoint_every: int = param(200, "Optimizer steps between Trainer checkpoints in work/ "
                                  "(for resuming a killed job).", minimum=1)

    def check(self):
        if self.gpus > 0 and self.processes not in (None, self.gpus):
            raise ParamsError(f"engine.processes {self.processes} with engine.gpus {self.gpus}: "
                              "on GPUs a job runs one process per GPU; set processes to null "
                              f"or {self.gpus}")
        if self.deepspeed is not None:
            stage = zero_stage(self.deepspeed)
            if stage not in (0, 1, 2):
                raise ParamsError(
                    f"{self.deepspeed}: ZeRO stage {stage} is not supported (the final save and "
                    "the test-set evaluation need full parameters on every process); use "
                    "configs/deepspeed/zero2.json")

    @property
    def num_processes(self) -> int:
        """Training processes per job: ``processes``, else ``gpus``, at least 1."""
        return int(self.processes or max(self.gpus, 1))


@dataclass(kw_only=True)
class Runtime(Section):
    """How a training job runs (not a config section): ``engine``, the model's precision and
    LoRA, and the job's seed."""

    SECTION: ClassVar[str] = "runtime"
    engine: EngineParams = param(factory=EngineParams, help="config engine.")
    dtype: str = param("fp32", "config model.dtype.", choices=DTYPES)
    lora: LoraParams | None = param(None, "config model.lora.")
    seed: int = param(42, "the job's seed (config seed, or the run's of align.seeds).",
                      minimum=0)


# ---- training stages -------------------------------------------------------------------------


@dataclass(kw_only=True)
class LayoutParams(Section):
    """How a (prompt, response) pair is cut to fit (exoflow.batching.encode_pair)."""

    max_len: int = param(512, "Prompt + response tokens; the prompt is left-truncated to fit "
                         "(must exceed max_gen_len).", minimum=1)
    max_gen_len: int = param(200, "Response tokens kept (right-truncated).", minimum=1)

    def check(self):
        if not self.max_gen_len < self.max_len:
            raise ParamsError(f"{self.where()}: need max_gen_len < max_len (got "
                              f"{self.max_gen_len}, {self.max_len}) so that some prompt fits")

    def layout(self) -> LayoutParams:
        return self.project(LayoutParams)


@dataclass(kw_only=True)
class OptimParams(LayoutParams):
    """What every training stage (SFT, RM, alignment) shares: the paper's optimiser
    (exact-optimization src/*_stage/train.py: AdamW, betas (0.9, 0.95), no weight decay, cosine
    schedule, gradient clipping 1.0) and its batches."""

    lr: float = param(help="Peak learning rate (AdamW).", exclusive_minimum=0)
    batch_size: int = param(help="Examples per optimizer step, across all processes and "
                            "accumulation (RM: pairs; alignment: prompts).", minimum=1)
    micro_batch_size: int = param(help="Examples per process per forward pass; batch_size "
                                  "must be a multiple of it.", minimum=1)
    adam_beta1: float = param(0.9, "AdamW beta1 (the paper's 0.9).", minimum=0,
                              exclusive_maximum=1)
    adam_beta2: float = param(0.95, "AdamW beta2 (the paper's 0.95).", minimum=0,
                              exclusive_maximum=1)
    weight_decay: float = param(0.0, "AdamW weight decay (the paper: none).", minimum=0)
    lr_scheduler: str = param("cosine", "transformers scheduler name (cosine, linear, "
                              "constant, ...).")
    max_grad_norm: float = param(1.0, "Gradient clipping norm (0: no clipping).", minimum=0)
    group_by_length: bool = param(True, "Batches of examples of similar length (seeded order), "
                                  "which pads less than uniformly random batches (false).")

    def check(self):
        super().check()
        if self.batch_size % self.micro_batch_size:
            raise ParamsError(
                f"{self.where()}: batch_size {self.batch_size} is not a multiple of "
                f"micro_batch_size {self.micro_batch_size}; set batch_size = micro_batch_size "
                "x GPUs x accumulation")

    def schedule(self) -> dict:
        """The length of the run and its warmup, as TrainingArguments takes them."""
        raise NotImplementedError


@dataclass(kw_only=True)
class TrainParams(OptimParams):
    """Config ``sft`` or ``rm``."""

    epochs: float = param(help="Passes over the training set (ignored when max_steps is set).",
                          exclusive_minimum=0)
    warmup_ratio: float = param(0.0, "Fraction of the steps with a linear warmup from 0.",
                                minimum=0, exclusive_maximum=1)
    max_steps: int | None = param(None, "Stop after this many optimizer steps (null: run the "
                                  "epochs).", minimum=1)

    def schedule(self) -> dict:
        return {"num_train_epochs": float(self.epochs),
                "max_steps": -1 if self.max_steps is None else int(self.max_steps),
                "warmup_steps": self.warmup_ratio or 0}  # a float < 1 is a ratio


@dataclass(kw_only=True)
class ResponseEOS(Section):
    """Where EOS goes when a response is cut (the stages that train on EOS: SFT, alignment and
    its reference log-probs; the RM's head reads the last response token, never an EOS)."""

    eos_after_cut: bool = param(True, "Append EOS after the response is cut to max_gen_len, so "
                                "every sequence ends in EOS; false: append it before the cut, "
                                "as the original, so a response of max_gen_len tokens or more "
                                "has none.")


@dataclass(kw_only=True)
class SFTParams(TrainParams, ResponseEOS):
    SECTION: ClassVar[str] = "sft"


@dataclass(kw_only=True)
class RMParams(TrainParams):
    SECTION: ClassVar[str] = "rm"


@dataclass(kw_only=True)
class AlignParams(OptimParams, ResponseEOS):
    """One alignment run: ``align.defaults`` updated with the run's entry."""

    SECTION: ClassVar[str] = "align.defaults"
    loss: str | dict = param(help="Alignment loss: its name, or {name: <name>, <its own "
                             "hyperparameter>: <value>} (loss.<hyperparameter> below; "
                             "beta_pi, beta_r and pref_log_eps are set beside it).",
                             schema={"$loss": True})
    data: str = param(help="Alignment data: rm_labels (SFT samples + RM rewards) or p2r (the "
                      "preference pairs as rewards [1, 0]).", choices=ALIGN_DATA)
    max_steps: int = param(help="Optimizer steps trained (the original: max_iter_step / "
                           "gradient accumulation = 700 / 4 = 175).", minimum=1)
    save_every: int | None = param(None, "Steps between checkpoints: ckpt k is saved at step k "
                                   "x save_every, and max_steps must be a multiple of it "
                                   "(exoflow's way); null: saves_per_epoch.", minimum=1)
    saves_per_epoch: int | None = param(None, "The original's num_save_checkpoint: a checkpoint "
                                        "every len(train_dataloader) // saves_per_epoch "
                                        "micro-batches, mapped to optimizer steps as its "
                                        "micro-step counter does (exoflow.schedule); the steps "
                                        "depend on the data size. Needs checkpoints.", minimum=1)
    checkpoints: int | None = param(None, "With saves_per_epoch: how many checkpoints the run "
                                    "saves (ckpt1..ckptN; the original keeps the 10 that fall "
                                    "before max_iter_step); with save_every: null (max_steps / "
                                    "save_every).", minimum=1)
    lr_horizon: str = param("max_steps", "What the learning-rate schedule decays over: "
                            "max_steps (reaches its end at the last step) or epoch (one epoch "
                            "of the training prompts, as the original: the run stops part-way "
                            "down the cosine).", choices=("max_steps", "epoch"))
    beta_r: float = param(0.5, "Target temperature: q = softmax(r / beta_r) for *-rw.",
                          exclusive_minimum=0)
    beta_pi: float = param(0.5, "Policy scores s = beta_pi * (log pi - log pi_sft).",
                           exclusive_minimum=0)
    temp: float = param(0.8, "tau: log-probs of logits / tau, for the policy and the "
                        "reference.", exclusive_minimum=0)
    pref_log_eps: float = param(-10.0, "log q of the losers for *-pref (the original code's "
                                "-10).", exclusive_maximum=0)
    num_contrastive: int = param(2, "Candidates per group N; K (per prompt) must be a multiple "
                                 "of N.", minimum=2)
    warmup_steps: int = param(0, "Linear warmup steps from 0.", minimum=0)

    def check(self):
        super().check()
        # the shape here; the loss itself (its name, hyperparameters, N) where the losses are
        # known: exoflow.losses.make_loss, called by the plan and by the training job, so
        # that editing a loss re-runs the alignment jobs only (exoflow.codehash)
        if isinstance(self.loss, dict):
            if not isinstance(self.loss.get("name"), str):
                raise ParamsError(f"{self.where('loss')}: a mapping needs the loss's name "
                                  f"(loss: {{name: ipo, tau: 0.1}}), got {self.loss!r}")
        elif not isinstance(self.loss, str):
            raise ParamsError(f"{self.where('loss')} must be a loss's name or a mapping "
                              f"{{name: ..., <hyperparameter>: ...}}, got {self.loss!r}")
        if (self.save_every is None) == (self.saves_per_epoch is None):
            raise ParamsError(f"{self.where()}: set exactly one of save_every (checkpoints every "
                              "N optimizer steps) and saves_per_epoch (the original's "
                              f"checkpoints), got save_every {self.save_every}, saves_per_epoch "
                              f"{self.saves_per_epoch}")
        if self.save_every is not None:
            if self.checkpoints is not None:
                raise ParamsError(f"{self.where()}: checkpoints goes with saves_per_epoch; with "
                                  "save_every the run has max_steps / save_every checkpoints "
                                  "(set checkpoints: null)")
            if self.max_steps % self.save_every:
                raise ParamsError(
                    f"{self.where()}: max_steps {self.max_steps} is not a multiple of save_every "
                    f"{self.save_every}: the steps after the last checkpoint would be trained "
                    "and thrown away; make max_steps a multiple of save_every")
        elif self.checkpoints is None:
            raise ParamsError(f"{self.where()}: saves_per_epoch needs checkpoints (how many the "
                              "run saves, e.g. 10 as the original)")

    @property
    def loss_label(self) -> str:
        """The loss as tables show it: ``ipo`` or ``ipo(tau=0.05)``."""
        if not isinstance(self.loss, dict):
            return self.loss
        own = ", ".join(f"{k}={v}" for k, v in self.loss.items() if k != "name")
        return f"{self.loss['name']}({own})" if own else self.loss["name"]

    @property
    def num_checkpoints(self) -> int:
        if self.save_every is not None:
            return self.max_steps // self.save_every
        return int(self.checkpoints)

    def schedule(self) -> dict:
        return {"num_train_epochs": 1.0, "max_steps": int(self.max_steps),
                "warmup_steps": self.warmup_steps}


@dataclass(kw_only=True)
class AlignSection(Section):
    SECTION: ClassVar[str] = "align"
    defaults: dict = param(help="What every run takes unless it overrides it (any key of an "
                           "alignment run).", schema={"$align": False})
    seeds: list[int] | None = param(None, "Every run is trained once per seed (default: "
                                    "[seed]); the run of seed s is <run>_s<s>, and <run> for "
                                    "the top-level seed.",
                                    schema={"minItems": 1, "items": {"type": "integer",
                                                                     "minimum": 0}})
    grid: list[dict] | None = param(None, "Sweeps: each {name: template, key: value or "
                                    "[values], ...} expands into one run per combination of "
                                    "the listed values, named by the template (e.g. "
                                    "'{loss}_nc{num_contrastive}').",
                                    schema={"items": {"type": "object", "required": ["name"],
                                                      "properties": {"name": {
                                                          "type": "string", "minLength": 1}}}})
    only: list[str] | None = param(None, "The exact set of runs (names of runs or grid "
                                   "points); replaces the runs of the config files it extends.")
    precompute_ref: bool = param(True, "Reference log-probs computed once per data set (a "
                                 "cache), not in every step.")
    ref_records: str = param("all", "The records the reference cache covers: all of the data "
                             "set (shared by every run on it), or visited: those a run's seed, "
                             "steps and batch visit (shared by the runs that visit the same "
                             "ones, e.g. EXO and DPO of one seed; with several seeds each seed "
                             "has its own, which costs more than all once max_steps covers "
                             "more than 1/seeds of an epoch).", choices=("all", "visited"))
    runs: dict = param(factory=dict, help="Run name -> overrides of defaults; loss and data are "
                       "required.", schema={"$align": True})

    def check(self):
        for where, entry in [("align.defaults", self.defaults),
                             *((f"align.runs.{n}", e) for n, e in self.runs.items())]:
            check_partial(AlignParams, entry, where)
        for name in self.runs:
            check_run_name(name, "align.runs")


# ---- sampling and evaluation -----------------------------------------------------------------


@dataclass(kw_only=True)
class GenerationParams(Section):
    """How completions are drawn (exoflow.sampling)."""

    num_return: int = param(2, "Completions per prompt.", minimum=1)
    temperature: float = param(0.8, "Softmax temperature; 0 = greedy.", minimum=0)
    top_k: int = param(0, "Keep the k most likely tokens; 0 = all.", minimum=0)
    max_new_tokens: int = param(200, "Tokens generated at most.", minimum=1)
    max_prompt_len: int = param(512, "Prompt tokens kept (left-truncated): the original keeps "
                                "model_max_length - max_new_tokens = 512 - 200 = 312 (the "
                                "text-generation pipeline's handle_long_generation='hole').",
                                minimum=1)
    stop_at_turn: bool = param(True, "End a completion where the model starts a new dialogue "
                               "turn ('\\n\\nHuman:' or '\\n\\nAssistant:'; the marker and "
                               "what follows are cut); false: only EOS or max_new_tokens end "
                               "it, and the next turns are kept (the original).")
    batch_size: int = param(32, "Prompts per generate call.", minimum=1)

    def generation(self) -> GenerationParams:
        return self.project(GenerationParams)


@dataclass(kw_only=True)
class ScoredParams(GenerationParams):
    """Sampling, then scoring the samples (``sample`` and ``eval`` share these keys)."""

    score_batch_size: int = param(32, "Sequences per forward when scoring (RM rewards, "
                                  "log-probs).", minimum=1)


@dataclass(kw_only=True)
class SampleParams(ScoredParams):
    """Config ``sample``: the SFT samples that the RM labels for the *-rw runs."""

    SECTION: ClassVar[str] = "sample"
    max_prompts: int | None = param(None, "This many train prompts, a subset drawn by the seed "
                                    "(kept in file order, each prompt's samples those it has "
                                    "in the whole file), for quick runs: the rm_labels runs "
                                    "train on them; null: all.", minimum=1)


@dataclass(kw_only=True)
class EvalParams(ScoredParams):
    """Config ``eval``: samples of every evaluated checkpoint on the test prompts."""

    SECTION: ClassVar[str] = "eval"
    num_prompts: int | None = param(None, "The first N test prompts (null: all).", minimum=1)
    checkpoints: int = param(0, "ckpt1..ckptN of every run are evaluated (ckpt0 is the SFT "
                             "model); at most the runs' checkpoints.", minimum=0)
    val_prompts: int = param(0, "The first N evaluated prompts pick each run's checkpoint "
                             "(select_by); the summary and the study report on the others "
                             "only.", minimum=0)
    select_by: str = param("reward", "The validation criterion that picks a run's checkpoint "
                           "(gold: synthetic source only).", choices=("reward", "gold",
                                                                      "win_rate"))

    def check(self):
        if self.num_prompts is not None and self.val_prompts >= self.num_prompts:
            raise ParamsError(f"eval.val_prompts = {self.val_prompts} leaves no report prompt "
                              f"of eval.num_prompts = {self.num_prompts}")


@dataclass(kw_only=True)
class StudyParams(Section):
    SECTION: ClassVar[str] = "study"
    compare: list[list[str]] = param(factory=list, help="Pairs [a, b] of runs (configurations, "
                                     "not seeds): the difference a - b with a paired bootstrap "
                                     "interval over seeds and prompts.",
                                     schema={"items": {"type": "array", "items": {
                                         "type": "string"}, "minItems": 2, "maxItems": 2}})
    bootstrap: int = param(2000, "Bootstrap resamples.", minimum=1)

    def check(self):
        for pair in self.compare:
            if len(pair) != 2:
                raise ParamsError(f"study.compare: {pair} is not a pair [a, b]")


@dataclass(kw_only=True)
class JudgeParams(Section):
    """Config ``judge``: LLM-judge win rates through an OpenAI-compatible endpoint
    (exoflow.judge); off while ``base_url`` is null."""

    SECTION: ClassVar[str] = "judge"
    base_url: str | None = param(None, "The endpoint, e.g. https://api.openai.com/v1 or "
                                 "http://127.0.0.1:8000/v1 (transformers serve, vLLM, "
                                 "llama.cpp); null: no judge.")
    model: str | None = param(None, "The judge model's name at the endpoint (e.g. gpt-4o).")
    api_key_env: str = param("OPENAI_API_KEY", "The name of the environment variable holding "
                             "the API key (the key itself never enters a config, a log or an "
                             "output; a local server needs none).")
    num_prompts: int = param(100, "Report prompts judged per checkpoint (the first ones after "
                             "eval.val_prompts), each in both orders.", minimum=1)
    baselines: list[str] = param(factory=lambda: ["sft", "chosen"], help="What each checkpoint "
                                 "is judged against: sft (the SFT model's sample of the same "
                                 "prompt) and/or chosen (the dataset's chosen response).",
                                 schema={"minItems": 1, "items": {"enum": ["sft", "chosen"]}})
    checkpoints: list[int] | None = param(None, "The checkpoints judged (numbers of "
                                          "eval.checkpoints'); null: every evaluated one.",
                                          schema={"items": {"type": "integer", "minimum": 1}})
    template: str | None = param(None, "A file holding the judge's prompt with {dialogue}, "
                                 "{response_a} and {response_b}; null: exoflow's own (in the "
                                 "spirit of the DPO/EXO papers' HH helpfulness prompt).")
    temperature: float = param(0.0, "The judge's sampling temperature.", minimum=0)
    max_tokens: int = param(256, "Tokens the judge may write per answer.", minimum=1)
    concurrency: int = param(4, "Requests in flight at once.", minimum=1)
    timeout_s: float = param(120.0, "Seconds one request may take.", exclusive_minimum=0)
    retries: int = param(4, "Tries after a 429, a 5xx, a timeout or a refused connection "
                         "(exponential backoff), before the job stops.", minimum=0)
    backoff_s: float = param(1.0, "The first backoff; each retry doubles it.", minimum=0)
    invalid_retries: int = param(1, "New tries of an answer that names neither A nor B "
                                 "(then it is counted invalid).", minimum=0)
    max_requests: int = param(2000, "A job's budget of requests: it stops before exceeding "
                              "it, saying how many it needs.", minimum=1)

    def check(self):
        if self.base_url and not self.model:
            raise ParamsError("judge.base_url is set but judge.model is not: name the judge "
                              "model the endpoint serves")
        if len(set(self.baselines)) != len(self.baselines):
            raise ParamsError(f"judge.baselines {self.baselines} repeats a baseline")


# ---- the whole config ------------------------------------------------------------------------


@dataclass(kw_only=True)
class Config(Section):
    """A whole config (config.yaml with the --configfile overlays merged over it)."""

    run_name: str = param(help="Outputs go to results/<run_name>/.", pattern=RUN_NAME)
    seed: int = param(help="One seed for every stage (each derives its own stream).", minimum=0)
    data: DataParams = param(help="Where the preference pairs come from.")
    model: ModelParams = param(help="The base model SFT and the RM start from.")
    engine: EngineParams = param(help="How training jobs run (SFT, RM, alignment); model.dtype "
                                 "and seed complete it.")
    sft: SFTParams = param(help="Supervised fine-tuning on prompt + chosen.")
    rm: RMParams = param(help="The reward model (Bradley-Terry on the pairs).")
    sample: SampleParams = param(help="SFT samples that the RM labels for the *-rw runs.")
    align: AlignSection = param(help="The alignment runs.")
    eval: EvalParams = param(help="Samples of every evaluated checkpoint on the test prompts.")
    study: StudyParams = param(factory=StudyParams, help="What `snakemake study` compares "
                               "across seeds.")
    judge: JudgeParams = param(factory=JudgeParams, help="LLM-judge win rates (snakemake "
                               "judge_all); off while judge.base_url is null.")

    def runtime(self, seed: int | None = None) -> Runtime:
        """What a training job runs with (the run's seed, else the top-level one)."""
        return Runtime(engine=self.engine, dtype=self.model.dtype, lora=self.model.lora,
                       seed=self.seed if seed is None else int(seed))


# ---- the JSON schema -------------------------------------------------------------------------
