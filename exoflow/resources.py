"""Memory and time a job asks a cluster for, from the model's size and the job's work.

Torch-free. The rules give Snakemake callables (:meth:`exoflow.plan.Plan.job_resources`) that
Snakemake evaluates again when a job is about to be submitted, once its inputs exist: the
parameter count is read from the model folder's safetensors headers (never the weights), the
vocabulary from its config.json, the records from the job's data file.

Memory (host, MB) follows what was measured on the CPU here (Snakemake's max_rss): an
interpreter with torch and transformers takes ~0.5-0.7 GB (the tiny preset's 1.1M-parameter
jobs peaked at 0.4-1.06 GB), and a Gemma 3 270M SFT job peaked at 6.9 GB (micro-batch 8 × 192
tokens, 262,144-token vocabulary):

* training on the CPU: 1.5 GB + 16 B per parameter (fp32 weights, gradients, Adam's two
  moments) + 3 × 4 B per logit of a micro-batch (logits, their softmax, its gradient: the
  vocabulary term that dominates small models with large vocabularies): Gemma 3 270M 10.1 GB;
* training on GPUs: per process 3 GB + 8 B per parameter (the fp32 weights pass through the
  host when loaded; the rest lives on the GPU);
* inference (sampling, scoring, labels): 1.5 GB (3 GB with a GPU) + 4 B per parameter of each
  model held at once + 2 × 4 B per logit of a scoring batch (on the CPU).

Time (minutes) is the job's FLOPs (6 per parameter per trained token, 8 without a reference
cache; 2 per scored token; 2 per generated token at a tenth of the rate, decoding being
memory-bound) at a rate stated below, times 3 for what a FLOP count misses, at least 20 min,
and twice that on a retry (``attempt``). The rates are guides, not measurements of your
cluster: 25 GFLOP/s per CPU thread (SmolLM2-135M trained at ~55 GFLOP/s on 2 cores here) and
100 TFLOP/s per GPU (an A100/H100 at 30-40 % of its bf16 peak). Override any of them with
``--set-resources`` when you know better.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .io import model_config

__all__ = ["Work", "count_records", "job_work", "mem_mb", "model_size", "runtime_min", "snakemake_resources", "train_steps"]

CPU_FLOPS_PER_THREAD = 25e9
GPU_FLOPS = 100e12
DECODE_EFFICIENCY = 0.1
MARGIN = 3.0
MIN_MINUTES = 20
MB = 1e6


def model_size(folder) -> tuple[int, int]:
    """``(parameters, vocabulary)`` of a ``save_pretrained`` folder, from its safetensors
    headers and config.json; ``(0, 0)`` for what is not there yet (a dry run)."""
    d = Path(folder)
    params = 0
    for f in sorted(d.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        params += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return params, int(model_config(d).get("vocab_size") or 0)


@dataclass
class Work:
    """What a job does: ``kind`` train | score | sample; ``tokens`` it trains, scores or
    generates in all; ``logits``: logits of one forward (tokens × vocabulary, with the LM
    head; 0 for a reward model); ``models`` held at once; ``gpus`` (0: the CPU, else the
    processes); ``threads`` on the CPU; ``reference``: a training forward of the reference
    too (no cache)."""

    kind: str
    params: int
    tokens: float
    logits: float = 0.0
    models: int = 1
    gpus: int = 0
    threads: int = 1
    reference: bool = False


def mem_mb(w: Work, attempt: int = 1) -> int:
    """Host memory to ask for (MB), 50 % more on each retry."""
    if w.kind == "train":
        if w.gpus:
            b = w.gpus * (3e9 + 8 * w.params)
        else:
            b = 1.5e9 + 16 * w.params + 3 * 4 * w.logits
    else:
        b = (3e9 if w.gpus else 1.5e9 + 2 * 4 * w.logits) + 4 * w.params * w.models
    return math.ceil(b * (1 + 0.5 * (attempt - 1)) / MB)


def runtime_min(w: Work, attempt: int = 1) -> int:
    """Minutes to ask for: the FLOPs at the stated rate × 3, at least 20, × ``attempt``."""
    rate = w.gpus * GPU_FLOPS if w.gpus else max(1, w.threads) * CPU_FLOPS_PER_THREAD
    per_token = {"train": 8 if w.reference else 6, "score": 2,
                 "sample": 2 / DECODE_EFFICIENCY}[w.kind]
    seconds = per_token * w.params * w.models * w.tokens / rate
    return attempt * max(MIN_MINUTES, math.ceil(MARGIN * seconds / 60))


def count_records(path) -> int:
    """The non-empty lines of a JSON Lines file (OSError when it is not there)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def train_steps(section, n: int) -> int:
    """The optimizer steps of an SFT or RM job (``sft``/``rm`` section) on ``n`` records:
    ``max_steps``, else ``epochs`` x ceil(n / batch_size)."""
    return section.max_steps or math.ceil(float(section.epochs) * math.ceil(n / section.batch_size))


def _model_folder(paths) -> Path:
    """The model folder among a job's inputs for the model (its config.json, or the folder)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    for p in paths:
        if str(p).endswith("config.json"):
            return Path(p).parent
    return Path(paths[0]) if paths else Path("missing")


# stage: (the input naming the model, the input naming the records)
INPUTS = {"sft": ("base", "train"), "rm": ("base", "train"), "align": ("policy", "train"),
          "precompute_ref": ("reference", "data"), "sample_sft": ("model", "prompts"),
          "label_rewards": ("rm", "samples"), "sample_checkpoint": ("model", "prompts"),
          "eval_checkpoint": ("policy", "samples"), "eval_dataset": ("rm", "pairs")}


def job_work(plan, stage: str, run: str | None, params: int, vocab: int, n: int,
             threads: int) -> Work:
    """A job's :class:`Work` from ``plan`` (an :class:`exoflow.plan.Plan`), its model's size
    and its ``n`` input records."""
    c = plan.cfg
    train_gpus, gpus = plan.gpus(), plan.inference_gpus()
    common = {"params": params, "threads": threads}
    if stage in ("sft", "rm"):
        s = getattr(c, stage)
        steps = train_steps(s, n)
        seqs = 2 if stage == "rm" else 1
        logits = 0 if stage == "rm" else s.micro_batch_size * s.max_len * vocab
        return Work("train", tokens=steps * s.batch_size * seqs * s.max_len, logits=logits,
                    gpus=train_gpus, **common)
    if stage == "align":
        p = plan.run_params(run)
        k = p.num_contrastive
        return Work("train", tokens=p.max_steps * p.batch_size * k * p.max_len,
                    logits=p.micro_batch_size * k * p.max_len * vocab, gpus=train_gpus,
                    reference=not plan.precompute_ref(), **common)
    if stage == "precompute_ref":
        k = max(plan.run_params(r).num_contrastive for r in plan.align_runs())
        length = max(plan.run_params(r).max_len for r in plan.align_runs())
        return Work("score", tokens=n * k * length, gpus=gpus,
                    logits=c.sample.score_batch_size * length * vocab, **common)
    if stage in ("sample_sft", "sample_checkpoint"):
        g = c.sample if stage == "sample_sft" else c.eval
        limit = c.sample.max_prompts if stage == "sample_sft" else c.eval.num_prompts
        prompts = min(n, limit or n)
        return Work("sample", tokens=prompts * g.num_return * g.max_new_tokens, gpus=gpus,
                    logits=g.batch_size * g.num_return * vocab, **common)
    if stage == "label_rewards":
        return Work("score", tokens=n * c.sample.num_return * c.rm.max_len, gpus=gpus, **common)
    if stage == "eval_checkpoint":  # policy and SFT together, then the RM
        e = c.eval
        length = e.max_prompt_len + e.max_new_tokens
        return Work("score", tokens=1.5 * n * e.num_return * length, models=2, gpus=gpus,
                    logits=e.score_batch_size * length * vocab, **common)
    if stage == "eval_dataset":
        prompts = min(n, c.eval.num_prompts or n)
        return Work("score", tokens=prompts * 2 * c.rm.max_len, gpus=gpus, **common)
    raise KeyError(stage)


def snakemake_resources(plan, stage: str, run: str | None = None) -> dict:
    """``{"mem_mb": f, "runtime": f}``, each ``f(wildcards, input, threads, attempt)`` as
    Snakemake calls a resource function (again before submitting the job, its inputs there)."""
    model_key, data_key = INPUTS[stage]

    def work(input, threads) -> Work:
        params, vocab = model_size(_model_folder(input[model_key]))
        try:
            n = count_records(input[data_key])
        except OSError:  # a dry run: the data is not there yet
            n = 0
        return job_work(plan, stage, run, params, vocab, n, threads)

    def mem(wildcards, input, threads, attempt):
        return mem_mb(work(input, threads), attempt)

    def minutes(wildcards, input, threads, attempt):
        return runtime_min(work(input, threads), attempt)

    return {"mem_mb": mem, "runtime": minutes}
