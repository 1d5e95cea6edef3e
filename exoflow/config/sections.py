"""The config's sections besides the training stages and alignment (:mod:`.training`,
:mod:`.align`): data, model, engine, sampling, evaluation, the study and the judge, and
:class:`Config` (the whole file). No torch, no Snakemake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import ParamsError
from .align import AlignSection
from .fields import RUN_NAME, Section, param
from .training import RMParams, SFTParams

__all__ = ["Config", "DTYPES", "DataParams", "EngineParams", "EvalParams", "GenerationParams",
           "JudgeParams", "LoraParams", "ModelParams", "Runtime", "SampleParams", "ScoredParams",
           "ScratchParams", "StudyParams", "SyntheticParams", "zero_stage"]

DTYPES = ("bf16", "fp16", "fp32")


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

    ROOT: ClassVar[bool] = True
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
