"""Reference log-probs computed once, for every candidate of an alignment data set.

The reference (the SFT model) is frozen during alignment, so its summed response log-probs
log π_ref^τ(y|x) are a function of the data and a few settings only: computing them once saves a
forward pass per step and the memory of a second model. They depend on the data file, the
reference, τ and the truncation (``max_len``, ``max_gen_len``, ``eos_after_cut``), and on nothing else: the token
layout is the alignment batches' (:mod:`exoflow.align_data`), padding does not change
a causal LM's logits, and the values are sums in fp32.

File format (JSON Lines): the first line ``{"settings": {...}, "content_sha256": "..."}`` says
what made the file (data path and sha256, number of records, K, reference path and weights
sha256, temp, max_len, max_gen_len, eos_after_cut, dtype) and carries the sha256 of every byte after that line;
then one line per record, in record order, the list of its K log-probs (finite numbers).
:func:`load_ref_cache` refuses a file whose settings differ from the run's, whose content does
not match its checksum (a value edited, the file cut short), or that holds a value that is not a
finite number, each with one line naming the file (and line) and saying to delete it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .align_data import check_num_candidates, encode_align
from .config import Runtime
from .errors import ExoflowError, NonFiniteError
from .io import atomic_write, loads, read_numbered
from .logps import text_logps
from .modeling import load_causal_lm, load_tokenizer
from .order import visited_records
from .runtime import on_cpu, reference_dtype, reference_precision, setup_threads, torch_dtype
from .schedule import Visits

__all__ = ["RefCacheError", "cache_settings", "load_ref_cache", "precompute_ref",
           "read_ref_cache", "write_ref_cache"]

# What must match between a cache and the run reading it; the paths are kept for information
# only (the data and the weights are identified by their content). "code" (the hash of the code
# that computes the values, exoflow.codehash: the token layout included) and "dtype" are checked
# when the reader says what it expects.
CHECKED = ("data_sha256", "num_records", "num_candidates", "reference_sha256", "temp", "max_len",
           "max_gen_len", "eos_after_cut")
CHECKED_IF_GIVEN = ("code", "dtype")


class RefCacheError(ExoflowError, ValueError):
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
                   records=None, lines=None, eos_after_cut: bool = True) -> dict:
    """The settings that identify a cache (see :data:`CHECKED`); ``records`` (read from
    ``data_file`` when None) are checked, their errors naming ``lines`` (1-based)."""
    if records is None:
        numbered = read_numbered(data_file)
        records, lines = [r for _, r in numbered], [n for n, _ in numbered]
    k = len(records[0]["completions"]) if records else 0
    if records:
        check_num_candidates(records, 1, str(data_file), lines=lines)
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
        "eos_after_cut": bool(eos_after_cut),
    }


_DELETE = "delete it and run precompute_ref again (snakemake re-makes it)"


def write_ref_cache(path, settings: dict, logps: list[list[float]]) -> None:
    """Header line with ``settings`` and the content's sha256, then one JSON list per record,
    ``null`` for a record not computed (``visits``) (atomic write). Non-finite values are
    refused."""
    for i, row in enumerate(logps):
        if row is not None and not all(math.isfinite(v) for v in row):
            raise NonFiniteError(f"{path}: the reference log-probs of record {i + 1} are {row}; "
                                 "the reference model or the data is broken, nothing was written")
    body = "".join(json.dumps(row) + "\n" for row in logps).encode("utf-8")
    head = json.dumps({"settings": settings, "content_sha256": hashlib.sha256(body).hexdigest()},
                      sort_keys=True) + "\n"
    atomic_write(path, lambda f: (f.write(head.encode("utf-8")), f.write(body)), mode="wb")


def read_ref_cache(path) -> tuple[dict, list[list[float]]]:
    """``(settings, logps)`` of a cache file whose content matches its checksum and holds
    finite numbers only (:class:`RefCacheError` naming the file and line otherwise); the
    settings are not compared with anything here (:func:`load_ref_cache` does)."""
    with open(path, "rb") as f:
        first = f.readline()
        body = f.read()
    try:
        head = loads(first.decode("utf-8"))
        settings, want = head["settings"], head["content_sha256"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise RefCacheError(f"{path}:1: not a reference log-prob cache (no settings line with a "
                            f"content checksum); {_DELETE}") from None
    if hashlib.sha256(body).hexdigest() != want:
        raise RefCacheError(f"{path}: content does not match its checksum (edited, or cut short "
                            f"by a crash); {_DELETE}")
    rows = []
    for lineno, line in enumerate(body.decode("utf-8").splitlines(), start=2):
        try:
            row = loads(line)
        except ValueError as e:
            raise RefCacheError(f"{path}:{lineno}: {e}; {_DELETE}") from None
        if row is None:  # a record the runs of this cache do not visit
            rows.append(row)
            continue
        if not isinstance(row, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise RefCacheError(f"{path}:{lineno}: expected a list of numbers; {_DELETE}")
        rows.append(row)
    return settings, rows


def load_ref_cache(path, data_file, reference, temp: float, max_len: int,
                   max_gen_len: int, code: str | None = None, dtype: str | None = None,
                   records=None, lines=None, eos_after_cut: bool = True,
                   visits: Visits | None = None) -> list[list[float] | None]:
    """The cached log-probs, after checking that they were made from this data and reference
    with these settings, and (when given) by this code in this precision
    (:class:`RefCacheError` naming each difference otherwise). ``records``/``lines``: the
    data file's records as the caller already read them (read here when None). ``visits``:
    the run's (:class:`exoflow.schedule.Visits`); a cache made for the records of some visits
    only (None for the others) must have been made for these."""
    settings, rows = read_ref_cache(path)
    want = cache_settings(data_file, reference, temp, max_len, max_gen_len, records, lines,
                          eos_after_cut)
    want.update({k: v for k, v in (("code", code), ("dtype", dtype)) if v is not None})
    diff = [f"{k}: cache {settings.get(k)!r}, run {want[k]!r}"
            for k in (*CHECKED, *CHECKED_IF_GIVEN) if k in want and settings.get(k) != want[k]]
    if diff:
        raise RefCacheError(f"{path} was made with other settings than this run's "
                            f"({'; '.join(diff)}); delete it and run precompute_ref again")
    k = want["num_candidates"]
    if len(rows) != want["num_records"]:
        raise RefCacheError(f"{path}: {len(rows)} rows for {want['num_records']} records; "
                            f"{_DELETE}")
    made_for = settings.get("visits", "all")
    if made_for != "all" and (visits is None or made_for != visits.name):
        raise RefCacheError(f"{path} holds only the records that runs of {made_for} visit; this "
                            f"run is {visits.name if visits else 'not said'}; {_DELETE}")
    for lineno, r in enumerate(rows, start=2):
        if r is None and made_for == "all":
            raise RefCacheError(f"{path}:{lineno}: no values (null); {_DELETE}")
        if r is not None and len(r) != k:
            raise RefCacheError(f"{path}:{lineno}: {len(r)} values for K={k} candidates; {_DELETE}")
    return rows


def precompute_ref(reference, data_file, out_path, temp: float, max_len: int, max_gen_len: int,
                   batch_size: int = 32, runtime: Runtime | None = None, progress: bool = True,
                   code: str | None = None, eos_after_cut: bool = True,
                   visits: Visits | None = None) -> dict:
    """Compute the reference log-probs of ``data_file``'s candidates into ``out_path``.

    ``runtime`` (:class:`exoflow.config.Runtime`, default: CPU, fp32) says how the alignment
    runs train: with ``engine.gpus > 0`` and a visible GPU this runs on the first one, in the
    precision training runs the policy in (:func:`exoflow.runtime.reference_precision`); on the
    CPU in fp32. ``code``: the hash of the code that computes the values (the workflow passes
    :func:`exoflow.codehash.code_hash` of precompute_ref's script), recorded so that a reader
    can refuse values made by other code. ``visits``: only the records runs of these visits
    train on (:func:`exoflow.order.visited_records`; the others are null). Returns the
    settings written to the file.
    """
    rt = runtime or Runtime()
    setup_threads(rt)
    numbered = read_numbered(data_file)
    records = [r for _, r in numbered]
    settings = cache_settings(data_file, reference, temp, max_len, max_gen_len, records,
                              lines=[n for n, _ in numbered], eos_after_cut=eos_after_cut)
    weights, amp = reference_precision(rt)
    settings["dtype"] = reference_dtype(rt)
    if code is not None:
        settings["code"] = code
    tok = load_tokenizer(reference, padding_side="right")
    chosen = list(range(len(records)))
    if visits is not None:
        lengths = None
        if visits.grouped:  # the run's grouping lengths: its features' longest candidate
            feats = encode_align(tok, records, max_len, max_gen_len, eos_after_cut=eos_after_cut)
            lengths = [max(len(ids) for ids in f["input_ids"]) for f in feats]
        chosen = visited_records(visits, len(records), lengths)
        settings.update(visits=visits.name, num_visited=len(chosen))
        print(f"[exoflow] {out_path}: the {len(chosen)} of {len(records)} records that runs of "
              f"{visits.name} visit", flush=True)
    model = load_causal_lm(reference, dtype=weights).to("cpu" if on_cpu(rt) else "cuda")
    values = text_logps(model, tok, [records[i]["prompt"] for i in chosen],
                        [records[i]["completions"] for i in chosen], max_len, max_gen_len,
                        batch_size, temperature=temp, amp_dtype=torch_dtype(amp),
                        progress=progress, desc="reference log-probs",
                        eos_after_cut=eos_after_cut)
    logps: list = [None] * len(records)
    for i, v in zip(chosen, values):
        logps[i] = v
    write_ref_cache(out_path, settings, logps)
    return settings
