"""Reference log-probs computed once, for every candidate of an alignment data set.

The reference (the SFT model) is frozen during alignment, so its summed response log-probs
log π_ref^τ(y|x) are a function of the data and a few settings only: computing them once saves a
forward pass per step and the memory of a second model. They depend on the data file, the
reference, τ and the truncation (``max_len``, ``max_gen_len``), and on nothing else: the token
layout is the alignment batches' (:func:`exoflow.align.pad_candidates`), padding does not change
a causal LM's logits, and the values are sums in fp32.

File format (JSON Lines): the first line ``{"settings": {...}}`` says what made the file (data
path and sha256, number of records, K, reference path and weights sha256, temp, max_len,
max_gen_len, dtype); then one line per record, in record order, the list of its K log-probs.
:func:`load_ref_cache` refuses a file whose settings differ from the run's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["RefCacheError", "cache_settings", "compute_ref_logps", "load_ref_cache",
           "precompute_ref", "write_ref_cache"]

# What must match between a cache and the run reading it; "dtype" and the paths are kept for
# information only (the data and the weights are identified by their content).
CHECKED = ("data_sha256", "num_records", "num_candidates", "reference_sha256", "temp", "max_len",
           "max_gen_len")


class RefCacheError(ValueError):
    """A reference log-prob cache does not fit the run; the message says what differs."""


def _sha256(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def weights_sha256(model_dir) -> str:
    """sha256 of a ``save_pretrained`` folder's weight files (safetensors or bin), in name order."""
    d = Path(model_dir)
    files = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))
    if not files:
        raise RefCacheError(f"{model_dir}: no weight files (*.safetensors, *.bin) found; the "
                            "reference must be a local save_pretrained folder")
    return _sha256(files)


def cache_settings(data_file, reference, temp: float, max_len: int, max_gen_len: int,
                   records=None) -> dict:
    """The settings that identify a cache (see :data:`CHECKED`)."""
    from .align import check_num_candidates
    from .io import read_records

    records = read_records(data_file) if records is None else records
    k = len(records[0]["completions"]) if records else 0
    if records:
        check_num_candidates(records, 1, str(data_file))
    return {
        "data": str(data_file),
        "data_sha256": _sha256([data_file]),
        "num_records": len(records),
        "num_candidates": k,
        "reference": str(reference),
        "reference_sha256": weights_sha256(reference),
        "temp": float(temp),
        "max_len": int(max_len),
        "max_gen_len": int(max_gen_len),
    }


def compute_ref_logps(model, tokenizer, records, temp: float, max_len: int, max_gen_len: int,
                      batch_size: int = 32, amp_dtype=None, progress: bool = False) -> list[list[float]]:
    """Summed response log-probs of every candidate: one list of K floats per record.

    Sequences are batched by length (``batch_size`` sequences per forward, longest first) and
    run under ``torch.inference_mode`` on the model's device; ``amp_dtype`` (e.g.
    ``torch.bfloat16`` on a GPU) autocasts the forward as mixed-precision training does.
    """
    import torch

    from .align import encode_align, pad_candidates
    from .batching import Encoded, length_sorted_batches
    from .logps import model_response_logps

    feats = encode_align(tokenizer, records, max_len, max_gen_len)
    seqs = [(i, j, Encoded(ids, n)) for i, f in enumerate(feats)
            for j, (ids, n) in enumerate(zip(f["input_ids"], f["n_prompt"]))]
    out = [[0.0] * len(f["input_ids"]) for f in feats]
    batches = length_sorted_batches([len(s[2]) for s in seqs], batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="reference log-probs", unit="batch")
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype,
                                                enabled=amp_dtype is not None):
        for idx in batches:
            b = pad_candidates([seqs[n][2] for n in idx], tokenizer.pad_token_id)
            b = {k: v.to(device) for k, v in b.items()}
            lp = model_response_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"],
                                      temp).tolist()  # (S,)
            for n, v in zip(idx, lp):
                i, j, _ = seqs[n]
                out[i][j] = float(v)
    return out


def write_ref_cache(path, settings: dict, logps: list[list[float]]) -> None:
    """Header line with ``settings``, then one JSON list per record (atomic write)."""
    from .io import _atomic_write

    def write(f):
        f.write(json.dumps({"settings": settings}, sort_keys=True) + "\n")
        for row in logps:
            f.write(json.dumps(row) + "\n")

    _atomic_write(Path(path), write)


def read_ref_cache(path) -> tuple[dict, list[list[float]]]:
    """``(settings, logps)`` of a cache file, unchecked."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        try:
            settings = json.loads(first)["settings"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RefCacheError(f"{path}: not a reference log-prob cache (no settings line)") from None
        rows = [json.loads(line) for line in f if line.strip()]
    return settings, rows


def load_ref_cache(path, data_file, reference, temp: float, max_len: int,
                   max_gen_len: int) -> list[list[float]]:
    """The cached log-probs, after checking that they were made from this data and reference
    with these settings (:class:`RefCacheError` naming each difference otherwise)."""
    settings, rows = read_ref_cache(path)
    want = cache_settings(data_file, reference, temp, max_len, max_gen_len)
    diff = [f"{k}: cache {settings.get(k)!r}, run {want[k]!r}" for k in CHECKED
            if settings.get(k) != want[k]]
    if diff:
        raise RefCacheError(f"{path} was made with other settings than this run's "
                            f"({'; '.join(diff)}); delete it and run precompute_ref again")
    k = want["num_candidates"]
    if len(rows) != want["num_records"] or any(len(r) != k for r in rows):
        raise RefCacheError(f"{path}: expected {want['num_records']} rows of {k} values; "
                            "the file is truncated or corrupt, delete it and run precompute_ref")
    return rows


def precompute_ref(reference, data_file, out_path, temp: float, max_len: int, max_gen_len: int,
                   batch_size: int = 32, engine=None, progress: bool = True) -> dict:
    """Compute the reference log-probs of ``data_file``'s candidates into ``out_path``.

    ``engine`` (:class:`exoflow.engine.EngineParams`, default: CPU, fp32) says how the
    alignment runs train: with ``gpus > 0`` and a visible GPU this runs on the first one, in
    the precision training runs the policy in (:func:`exoflow.align.reference_precision`);
    on the CPU in fp32. Returns the settings written to the file.
    """
    import torch

    from .align import reference_precision
    from .engine import EngineParams, on_cpu, setup_threads
    from .io import read_records
    from .modeling import load_causal_lm, load_tokenizer

    engine = engine or EngineParams()
    setup_threads(engine)
    records = read_records(data_file)
    settings = cache_settings(data_file, reference, temp, max_len, max_gen_len, records)
    weights, amp = reference_precision(engine)
    settings["dtype"] = weights if amp is None else f"fp32+autocast-{amp}"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    tok = load_tokenizer(reference, padding_side="right")
    model = load_causal_lm(reference, dtype=weights).to("cpu" if on_cpu(engine) else "cuda")
    logps = compute_ref_logps(model, tok, records, temp, max_len, max_gen_len, batch_size,
                              amp_dtype=amp_dtype, progress=progress)
    write_ref_cache(out_path, settings, logps)
    return settings


def default_cache_name(data: str, temp: float, max_len: int, max_gen_len: int) -> str:
    """``<data>_t<temp>_l<max_len>_g<max_gen_len>.jsonl``: the workflow's cache file name."""
    return f"{data}_t{float(temp)!r}_l{int(max_len)}_g{int(max_gen_len)}.jsonl"
