"""Evaluating a policy checkpoint (or the SFT model) on the test prompts.

Per checkpoint ``k`` of a run, on the first ``eval.num_prompts`` test prompts with
``eval.num_return`` samples each (``samples/<run>/ckpt<k>/test.jsonl``, drawn with the
same seed for every checkpoint, see ``exoflow.sampling``):

* **reward**: the RM reward of every sample, summarised by ``stats.summarize``
  (mean, std, count, normal 95% interval of the mean).
* **win rate** against the SFT model: sample ``j`` of prompt ``i`` is paired with SFT
  sample ``j`` of prompt ``i`` (``samples/sft/ckpt0/test.jsonl``); the pair scores 1 if the
  checkpoint's reward is higher, 0.5 on a tie, else 0. Two identical texts tie whatever
  their scores (so the SFT model against itself is exactly 0.5, even where batching
  moves a reward in its last bits).
* **KL(pi || pi_SFT)**, two ways, on the checkpoint's own samples:

  - ``kl_exact``: the exact per-token KL over the whole vocabulary at the sampling temperature,
    ``sum_t KL(pi_tau(.|x, y<t) || pi_SFT,tau(.|x, y<t))``, summed along each sample
    (``logps.model_pair_stats``): its mean is an unbiased, non-negative, low-variance estimate
    of the sequence-level KL between the tempered policies (tested against brute-force
    enumeration in tests/test_kl.py);
  - ``kl``: the plain Monte-Carlo estimate, the mean of ``log pi(y|x) - log pi_SFT(y|x)`` at
    temperature 1 on samples drawn at ``eval.temperature``: not a KL of anything the samples
    are drawn from, and it can come out negative, notably for checkpoints that barely moved.
    (The original code computes a KL only in its IMDB experiment, with this estimator at
    temperature 0.8; for HH it computes none: docs/DIFFERENCES.md.)

  Both on the whole re-tokenised completion with EOS appended; the prompt keeps the
  ``eval.max_prompt_len`` tokens it had when sampling. A checkpoint folder equal to the SFT folder
  gets exactly 0 without a forward pass.
* **length**: mean response length in tokens (the SFT tokenizer, no truncation) and in
  characters: the real-HH RM is close to "shorter answer wins", so length is reported
  beside every reward.
* **gold** (synthetic source only): ``synthetic.gold_rewards`` of every sample, its
  summary, and the gold win rate against the SFT samples.

``reward.json`` of a checkpoint::

    {"kind": "checkpoint", "run", "ckpt", "step", "epoch", "lr", "num_prompts", "num_return",
     "reward": {mean, std, count, ci95_low, ci95_high},
     "sft_reward": {...},            # the SFT samples' RM reward on the same prompts
     "win_rate", "win": {...},       # the mean of the pair scores, and their summary
     "kl", "kl_terms": {...},        # the log-ratio estimate and the summary of its terms
     "kl_exact",                     # the mean exact per-token KL
     "length_tokens", "length_chars",
     "gold": {...}, "gold_win_rate"  # synthetic source only
    }

and ``rewards.jsonl`` beside it holds one record per prompt: ``prompt``, ``completions``,
``rewards``, ``sft_rewards``, ``wins``, ``logps``, ``sft_logps``, ``kl_exact``, ``lengths``
(tokens) and,
with gold, ``gold`` and ``sft_gold``.

The dataset reference (``eval/dataset/reward.json``) scores the dataset's own chosen and
rejected responses of the same prompts::

    {"kind": "dataset", "num_prompts",
     "chosen": {"reward": {...}, "length_tokens", "length_chars", "gold": {...}},
     "rejected": {...},
     "accuracy": P(RM prefers chosen), "gold_accuracy": P(gold prefers chosen)}

Example::

    from exoflow.evaluate import eval_checkpoint
    from exoflow.config import EvalParams, LayoutParams
    eval_checkpoint("samples/exo-rw_nc2/ckpt1/test.jsonl", "samples/sft/ckpt0/test.jsonl",
                    "models/rm", "models/sft", "models/align/exo-rw_nc2/ckpt1",
                    "eval/exo-rw_nc2/ckpt1/reward.json", "eval/exo-rw_nc2/ckpt1/rewards.jsonl",
                    run="exo-rw_nc2", ckpt=1, step=20,
                    scoring=EvalParams(max_prompt_len=256, score_batch_size=64),
                    rm_layout=LayoutParams(max_len=256, max_gen_len=64), gold=True)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from .batching import response_ids
from .config import LayoutParams, ScoredParams
from .errors import check_finite
from .io import (
    PARAMS_FILE,
    RecordError,
    iter_records,
    read_json,
    read_numbered,
    write_json,
    write_records,
)
from .logps import text_logps, text_pair_stats
from .modeling import load_causal_lm, load_tokenizer
from .rewards import load_scorer, score_texts
from .runtime import default_device
from .stats import flatten, reshape, summarize
from .synthetic import gold_rewards

# ---- pure aggregation ------------------------------------------------------------------

def _check_shapes(a: list[list], b: list[list], what: str) -> None:
    if len(a) != len(b):
        raise RecordError(f"{what}: {len(a)} prompts vs {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        if len(x) != len(y):
            raise RecordError(f"{what}: prompt {i} has {len(x)} samples vs {len(y)}")


def pair_wins(rewards: list[list[float]], sft_rewards: list[list[float]],
              texts: list[list[str]] | None = None,
              sft_texts: list[list[str]] | None = None) -> list[list[float]]:
    """1 / 0.5 / 0 for sample ``j`` of prompt ``i`` against SFT sample ``j`` of prompt ``i``.

    With ``texts`` and ``sft_texts``, identical texts tie whatever their rewards.

    >>> pair_wins([[1, 2], [0, 0]], [[0, 3], [0, 1]])
    [[1.0, 0.0], [0.5, 0.0]]
    """
    _check_shapes(rewards, sft_rewards, "win rate")
    check_finite(rewards, "win rate: rewards")
    check_finite(sft_rewards, "win rate: SFT rewards")
    same = None
    if texts is not None and sft_texts is not None:
        _check_shapes(texts, sft_texts, "win rate texts")
        same = [[a == b for a, b in zip(x, y)] for x, y in zip(texts, sft_texts)]
    out = []
    for i, (rs, ss) in enumerate(zip(rewards, sft_rewards)):
        row = []
        for j, (r, s) in enumerate(zip(rs, ss)):
            if (same is not None and same[i][j]) or r == s:
                row.append(0.5)
            else:
                row.append(1.0 if r > s else 0.0)
        out.append(row)
    return out


def win_rate(rewards: list[list[float]], sft_rewards: list[list[float]],
             texts: list[list[str]] | None = None,
             sft_texts: list[list[str]] | None = None) -> float:
    """The mean of :func:`pair_wins`.

    >>> win_rate([[1, 2], [0, 0]], [[0, 3], [0, 1]])
    0.375
    """
    flat = [w for row in pair_wins(rewards, sft_rewards, texts, sft_texts) for w in row]
    if not flat:
        raise RecordError("win rate: no samples")
    return statistics.fmean(flat)


def kl_terms(logps: list[list[float]], sft_logps: list[list[float]]) -> list[list[float]]:
    """``log pi(y|x) - log pi_SFT(y|x)`` per sample (``y`` drawn from pi)."""
    _check_shapes(logps, sft_logps, "KL")
    check_finite(logps, "KL: log-probs")
    check_finite(sft_logps, "KL: SFT log-probs")
    return [[a - b for a, b in zip(x, y)] for x, y in zip(logps, sft_logps)]


def kl_estimate(logps: list[list[float]], sft_logps: list[list[float]]) -> float:
    """The Monte Carlo estimate of KL(pi || pi_SFT): the mean of :func:`kl_terms`.

    >>> kl_estimate([[-1.0, -2.0], [-3.0, -1.0]], [[-2.0, -2.0], [-2.0, -4.0]])
    0.75
    """
    flat = [t for row in kl_terms(logps, sft_logps) for t in row]
    if not flat:
        raise RecordError("KL: no samples")
    return statistics.fmean(flat)


def checkpoint_position(policy_dir, sft_dir) -> dict:
    """``{"step", "epoch", "lr"}`` of a checkpoint, as the training job recorded them in its
    ``exoflow_params.json`` (the plan cannot know them: with ``saves_per_epoch`` they depend on
    the data size); the SFT model is step 0, epoch 0, no lr."""
    if _same_folder(policy_dir, sft_dir):
        return {"step": 0, "epoch": 0.0, "lr": None}
    path = Path(policy_dir) / PARAMS_FILE
    try:
        stamp = read_json(path)
        return {"step": int(stamp["step"]), "epoch": stamp.get("epoch"), "lr": stamp.get("lr")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RecordError(f"{path}: no checkpoint step recorded ({type(e).__name__}: {e}); the "
                          "folder is not an alignment checkpoint that exoflow wrote: delete it "
                          "and run snakemake again") from None


def summarize_checkpoint(records: list[dict], *, run: str, ckpt: int, step: int,
                         epoch: float | None = None, lr: float | None = None) -> dict:
    """``reward.json`` from the per-prompt records of ``rewards.jsonl`` (see the module)."""
    if not records:
        raise RecordError("no records to summarize")
    rewards = [r["rewards"] for r in records]
    sft_rewards = [r["sft_rewards"] for r in records]
    wins = flatten([r["wins"] for r in records])
    kls = flatten(kl_terms([r["logps"] for r in records], [r["sft_logps"] for r in records]))
    texts = [r["completions"] for r in records]
    out = {
        "kind": "checkpoint", "run": run, "ckpt": int(ckpt), "step": int(step),
        "epoch": epoch, "lr": lr,
        "num_prompts": len(records),
        "num_return": max(len(c) for c in texts),
        "reward": summarize(flatten(rewards)),
        "sft_reward": summarize(flatten(sft_rewards)),
        "win_rate": statistics.fmean(wins), "win": summarize(wins),
        "kl": statistics.fmean(kls), "kl_terms": summarize(kls),
        "kl_exact": summarize(flatten([r["kl_exact"] for r in records]))["mean"],
        "length_tokens": statistics.fmean(flatten([r["lengths"] for r in records])),
        "length_chars": statistics.fmean(len(c) for c in flatten(texts)),
    }
    if all("gold" in r for r in records):
        gold, sft_gold = [r["gold"] for r in records], [r["sft_gold"] for r in records]
        out["gold"] = summarize(flatten(gold))
        out["sft_gold"] = summarize(flatten(sft_gold))
        out["gold_win_rate"] = win_rate(gold, sft_gold, texts,
                                        [r["sft_completions"] for r in records])
    return out


# ---- model passes ----------------------------------------------------------------------

def _same_folder(a, b) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _lm_logps(model_dir, prompts, completions, params: ScoredParams, dtype, device,
              max_gen_len: int):
    """Summed log-probs (EOS appended) of whole completions; prompts cut as when sampling."""
    tok = load_tokenizer(str(model_dir), padding_side="right")
    model = load_causal_lm(str(model_dir), dtype=dtype).to(default_device(device)).eval()
    t0 = time.perf_counter()
    out = text_logps(model, tok, prompts, completions,
                           max_len=params.max_prompt_len + max_gen_len + 1, max_gen_len=max_gen_len,
                           batch_size=params.score_batch_size, temperature=1.0)
    print(f"log-probs of {sum(map(len, completions))} samples under {model_dir} "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    del model
    return out


def _pair_stats(policy_dir, sft_dir, prompts, completions, params: ScoredParams, dtype, device,
                max_gen_len: int):
    """(log π, log π_SFT, exact per-token KL at the sampling temperature) of every sample, with
    both models in memory and one forward of each per batch."""
    tok = load_tokenizer(str(policy_dir), padding_side="right")
    policy = load_causal_lm(str(policy_dir), dtype=dtype).to(default_device(device)).eval()
    sft = load_causal_lm(str(sft_dir), dtype=dtype).to(default_device(device)).eval()
    t0 = time.perf_counter()
    out = text_pair_stats(policy, sft, tok, prompts, completions,
                          max_len=params.max_prompt_len + max_gen_len + 1, max_gen_len=max_gen_len,
                          batch_size=params.score_batch_size,
                          kl_temperature=params.temperature or 1.0)
    print(f"log-probs and exact KL of {sum(map(len, completions))} samples under {policy_dir} "
          f"and {sft_dir} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    del policy, sft
    return out


def _rm_scores(model, tok, prompts, completions, batch_size: int,
               layout: LayoutParams) -> list[list[float]]:
    flat_p = [p for p, cs in zip(prompts, completions) for _ in cs]
    values = score_texts(model, tok, flat_p, flatten(completions), batch_size,
                         layout.max_len, layout.max_gen_len, progress=False)
    return reshape(values, completions)


def _gold(prompts, completions) -> list[list[float]]:
    flat_p = [p for p, cs in zip(prompts, completions) for _ in cs]
    return reshape(gold_rewards(flat_p, flatten(completions)), completions)


def _token_lengths(tok, prompts, completions) -> list[list[int]]:
    """Each completion's length in tokens, as the layout tokenises it after its prompt."""
    out = []
    for p, cs in zip(prompts, completions):
        ids = tok(p, add_special_tokens=False)["input_ids"]
        out.append([len(response_ids(tok, ids, p, c)) for c in cs])
    return out


def _read_samples(path) -> tuple[list[str], list[list[str]]]:
    numbered = read_numbered(path)
    for line, r in numbered:
        if not (isinstance(r, dict) and isinstance(r.get("prompt"), str)
                and isinstance(r.get("completions"), list)
                and all(isinstance(c, str) for c in r["completions"])):
            raise RecordError(f"{path}:{line}: not a {{prompt, completions}} record; delete it "
                              "and run snakemake again to re-make it")
    if not numbered:
        raise RecordError(f"{path}: no records")
    return [r["prompt"] for _, r in numbered], [list(r["completions"]) for _, r in numbered]


def evaluate_samples(prompts: list[str], completions: list[list[str]],
                     sft_completions: list[list[str]], *, rm_dir, sft_dir, policy_dir,
                     scoring: ScoredParams, rm_layout: LayoutParams, gold: bool,
                     dtype: str | None = None, device: str | None = None) -> list[dict]:
    """The per-prompt records of ``rewards.jsonl`` (one model in memory at a time):
    ``scoring`` gives the prompt length the samples were drawn with, the scoring batch size and
    the sampling temperature (that of the exact KL), ``rm_layout`` the RM's truncation."""
    _check_shapes(completions, sft_completions, "checkpoint vs SFT samples")
    lengths = _token_lengths(load_tokenizer(str(sft_dir)), prompts, completions)
    # Whole completions: a decoded sample can re-encode to more tokens than were generated,
    # and cutting it would score a different text (with an EOS where there was none).
    gen_len = max(1, max(flatten(lengths), default=1))
    if _same_folder(policy_dir, sft_dir):
        logps = _lm_logps(policy_dir, prompts, completions, scoring, dtype, device, gen_len)
        sft_logps = [list(x) for x in logps]
        kl_exact = [[0.0] * len(x) for x in logps]
    else:
        logps, sft_logps, kl_exact = _pair_stats(policy_dir, sft_dir, prompts, completions,
                                                 scoring, dtype, device, gen_len)

    rm, rm_tok = load_scorer(rm_dir, dtype, default_device(device))
    t0 = time.perf_counter()
    rewards = _rm_scores(rm, rm_tok, prompts, completions, scoring.score_batch_size, rm_layout)
    if sft_completions == completions:
        sft_rewards = [list(x) for x in rewards]
    else:
        sft_rewards = _rm_scores(rm, rm_tok, prompts, sft_completions,
                                 scoring.score_batch_size, rm_layout)
    print(f"RM scores in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    del rm
    wins = pair_wins(rewards, sft_rewards, completions, sft_completions)

    records = []
    for i, p in enumerate(prompts):
        rec = {"prompt": p, "completions": completions[i], "sft_completions": sft_completions[i],
               "rewards": rewards[i], "sft_rewards": sft_rewards[i], "wins": wins[i],
               "logps": logps[i], "sft_logps": sft_logps[i], "kl_exact": kl_exact[i],
               "lengths": lengths[i]}
        records.append(rec)
    if gold:
        g, sg = _gold(prompts, completions), _gold(prompts, sft_completions)
        for i, rec in enumerate(records):
            rec["gold"], rec["sft_gold"] = g[i], sg[i]
    return records


def eval_checkpoint(samples_file, sft_samples_file, rm_dir, sft_dir, policy_dir,
                    summary_json, rewards_file, *, run: str, ckpt: int,
                    scoring: ScoredParams, rm_layout: LayoutParams, gold: bool,
                    dtype: str | None = None, device: str | None = None) -> dict:
    """Evaluate one checkpoint's samples; write ``rewards_file`` and ``summary_json``
    (``scoring``, ``rm_layout``: see :func:`evaluate_samples`).

    ``sft_samples_file`` must hold the same prompts, in the same order, with as many
    samples each (the SFT model's samples: the win-rate baseline).
    """
    prompts, completions = _read_samples(samples_file)
    sft_prompts, sft_completions = _read_samples(sft_samples_file)
    if sft_prompts != prompts:
        raise RecordError(f"{samples_file} and {sft_samples_file} do not hold the same prompts "
                         f"in the same order ({len(prompts)} vs {len(sft_prompts)} records)")
    records = evaluate_samples(prompts, completions, sft_completions, rm_dir=rm_dir,
                               sft_dir=sft_dir, policy_dir=policy_dir, scoring=scoring,
                               rm_layout=rm_layout, gold=gold,
                               dtype=dtype, device=device)
    summary = summarize_checkpoint(records, run=run, ckpt=ckpt,
                                   **checkpoint_position(policy_dir, sft_dir))
    Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
    write_records(rewards_file, records)
    write_json(summary_json, summary)
    return summary


def eval_dataset(pref_file, rm_dir, summary_json, rewards_file, *, num_prompts: int | None,
                 score_batch_size: int, rm_layout: LayoutParams, gold: bool,
                 dtype: str | None = None, device: str | None = None) -> dict:
    """RM (and gold) rewards of the dataset's chosen and rejected responses.

    Uses the first ``num_prompts`` records of ``pref_file`` (``{prompt, chosen, rejected}``),
    the prompts the checkpoints are evaluated on.
    """
    recs = []
    for line, r in iter_records(pref_file):
        if num_prompts is not None and len(recs) >= num_prompts:
            break
        if not (isinstance(r, dict) and all(isinstance(r.get(k), str)
                                            for k in ("prompt", "chosen", "rejected"))):
            raise RecordError(f"{pref_file}:{line}: record is not {{prompt, chosen, rejected}}")
        recs.append(r)
    if not recs:
        raise RecordError(f"{pref_file}: no records")
    prompts = [r["prompt"] for r in recs]
    pairs = [[r["chosen"], r["rejected"]] for r in recs]
    rm, tok = load_scorer(rm_dir, dtype, default_device(device))
    rewards = _rm_scores(rm, tok, prompts, pairs, score_batch_size, rm_layout)
    del rm
    lengths = _token_lengths(tok, prompts, pairs)
    golds = _gold(prompts, pairs) if gold else None

    out_recs, summary = [], {"kind": "dataset", "num_prompts": len(recs)}
    for i, p in enumerate(prompts):
        rec = {"prompt": p, "completions": pairs[i], "rewards": rewards[i], "lengths": lengths[i]}
        if golds is not None:
            rec["gold"] = golds[i]
        out_recs.append(rec)
    for j, name in enumerate(("chosen", "rejected")):
        part = {"reward": summarize([r[j] for r in rewards]),
                "length_tokens": statistics.fmean(x[j] for x in lengths),
                "length_chars": statistics.fmean(len(x[j]) for x in pairs)}
        if golds is not None:
            part["gold"] = summarize([g[j] for g in golds])
        summary[name] = part
    summary["accuracy"] = win_rate([[r[0]] for r in rewards], [[r[1]] for r in rewards])
    if golds is not None:
        summary["gold_accuracy"] = win_rate([[g[0]] for g in golds], [[g[1]] for g in golds])
    Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
    write_records(rewards_file, out_recs)
    write_json(summary_json, summary)
    return summary
