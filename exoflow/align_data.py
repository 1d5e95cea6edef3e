"""The alignment data and its token layout, shared by the training (:mod:`exoflow.align`), the
reference log-prob cache (:mod:`exoflow.refcache`) and every summed log-prob of a text
(:func:`exoflow.logps.text_logps`).

Records ``{"prompt", "completions": [y_1..y_K], "rewards": [r_1..r_K]}``; every record has the
same K, a multiple of N = ``num_contrastive``. A batch is whole prompts with all their
candidates: B prompts give B·K sequences, prompt 0's candidates first, right-padded to the
batch's longest (:func:`exoflow.batching.encode_pair`, EOS appended).
"""

from __future__ import annotations

import math

import torch

from .batching import Encoded, encode_pair, pad_batch
from .errors import NonFiniteError, ParamsError
from .io import RecordError

__all__ = ["AlignCollator", "check_num_candidates", "encode_align", "pad_candidates"]


def check_num_candidates(records, num_contrastive: int, source: str = "alignment data",
                         lines: list[int] | None = None) -> int:
    """The common K of ``records``; refuses a malformed record (prompt not a string,
    completions not strings, rewards not finite numbers, unequal lengths), unequal K across
    records, or K % N != 0. ``lines``: each record's 1-based line in ``source`` (default: its
    1-based position), so that the error names ``source:line``."""
    if not records:
        raise RecordError(f"{source}: no records")
    lines = list(range(1, len(records) + 1)) if lines is None else lines
    for line, r in zip(lines, records):
        where = f"{source}:{line}"
        if not isinstance(r, dict):
            raise RecordError(f"{where}: a record must be a JSON object")
        if not isinstance(r.get("prompt"), str):
            raise RecordError(f"{where}: 'prompt' must be a string")
        ys, rs = r.get("completions"), r.get("rewards")
        if not isinstance(ys, list) or not ys or not all(isinstance(y, str) for y in ys):
            raise RecordError(f"{where}: 'completions' must be a non-empty list of strings")
        if (not isinstance(rs, list)
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rs)):
            raise RecordError(f"{where}: 'rewards' must be a list of numbers")
        if not all(math.isfinite(x) for x in rs):
            raise NonFiniteError(f"{where}: 'rewards' holds {rs}, not all finite; fix the "
                                 "rewards (label_rewards makes them) and re-run")
        if len(rs) != len(ys):
            raise RecordError(f"{where}: {len(rs)} rewards for {len(ys)} completions")
    ks = {len(r["completions"]) for r in records}
    if len(ks) != 1:
        first = {}
        for line, r in zip(lines, records):
            first.setdefault(len(r["completions"]), line)
        raise ParamsError(f"{source}: records have different numbers of completions {sorted(ks)} "
                          f"(first seen at lines {[first[k] for k in sorted(ks)]}); a batch needs "
                          "the same K for every prompt")
    (k,) = ks
    if k % num_contrastive:
        raise ParamsError(
            f"{source}: each prompt has K={k} completions, which is not a multiple of "
            f"num_contrastive N={num_contrastive}; set num_contrastive to a divisor of {k} "
            f"(or sample a multiple of {num_contrastive} completions per prompt)")
    return k


def encode_align(tokenizer, records, max_len: int, max_gen_len: int, ref_logps=None,
                 eos_after_cut: bool = True) -> list[dict]:
    """One feature per prompt: ``input_ids`` (K lists), ``n_prompt`` (K ints), ``rewards``
    (K floats) and, when given (one list of K per record, or None for a record without them),
    ``ref_logps``."""
    out = []
    for i, r in enumerate(records):
        enc = [encode_pair(tokenizer, r["prompt"], y, max_len, max_gen_len, add_eos=True,
                           eos_after_cut=eos_after_cut) for y in r["completions"]]
        f = {"input_ids": [e.input_ids for e in enc], "n_prompt": [e.n_prompt for e in enc],
             "rewards": [float(x) for x in r["rewards"]]}
        if ref_logps is not None:  # None: a record the cache's runs do not visit
            f["ref_logps"] = None if ref_logps[i] is None else [float(x) for x in ref_logps[i]]
        out.append(f)
    return out


def pad_candidates(seqs: list[Encoded], pad_id: int) -> dict:
    """Right-padded ``input_ids``, ``attention_mask``, ``loss_mask`` (S, T) for log-probs."""
    b = pad_batch(seqs, pad_id, "right")
    # No logits predict the first token, so it is never scored (matters only for an empty prompt).
    b["loss_mask"][:, 0] = 0
    return b


class AlignCollator:
    """B prompts x K candidates -> one batch of B·K sequences, candidates of a prompt adjacent.

    Returns ``input_ids``, ``attention_mask``, ``loss_mask`` (B·K, T) padded to the batch's
    longest sequence, ``rewards`` (B, K) float32 and, when every feature has them,
    ``ref_logps`` (B, K) float32 (and ``ref_missing`` (B,) when some feature has None:
    the loss refuses the batch).
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        seqs = [Encoded(ids, n) for f in features for ids, n in zip(f["input_ids"], f["n_prompt"])]
        out = pad_candidates(seqs, self.pad_id)  # (B·K, T)
        out["rewards"] = torch.tensor([f["rewards"] for f in features], dtype=torch.float32)
        if all("ref_logps" in f for f in features):
            k = len(features[0]["rewards"])
            missing = [f["ref_logps"] is None for f in features]
            out["ref_logps"] = torch.tensor([[0.0] * k if m else f["ref_logps"]
                                             for f, m in zip(features, missing)],
                                            dtype=torch.float32)
            if any(missing):  # the loss refuses such a batch (a prefetched one is not trained)
                out["ref_missing"] = torch.tensor(missing)
        return out
