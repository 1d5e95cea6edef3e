"""The data stage: a source of raw HH pairs -> preprocessed pairs + counts.

Sources (config ``data.source``):

* ``hub``: ``datasets.load_dataset("Anthropic/hh-rlhf", data_dir=subset)``; fails at once, with
  the way out, when the hub cannot be reached;
* ``local``: a folder with ``train.jsonl[.gz]`` and ``test.jsonl[.gz]`` in the hub's raw format;
* ``synthetic``: :mod:`exoflow.synthetic`, dialogues with a programmatic gold reward.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from . import hh, synthetic
from .config import DataParams
from .errors import ExoflowError
from .hub import hub_reachable
from .io import RecordError, find_split_file, iter_records

HUB_DATASET = "Anthropic/hh-rlhf"


class DataSourceError(ExoflowError, RuntimeError):
    """The configured source cannot be read; the message says what to change."""


@dataclass
class SplitStats:
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    subsampled_out: int = 0
    rewritten: Counter = field(default_factory=Counter)  # kept pairs a rule rewrote (hh.py)

    def as_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "dropped": dict(sorted(self.dropped.items())),
                "subsampled_out": self.subsampled_out,
                "rewritten": dict(sorted(self.rewritten.items()))}


# -- sources: each yields (where, raw record) with `where` = "file:line" for messages ----------

def iter_hub(subset: str, split: str) -> Iterator[tuple[str, object]]:
    if not hub_reachable():
        raise DataSourceError(
            f"cannot reach the Hugging Face hub to download {HUB_DATASET} ({subset}). "
            "Without network, set `data.source: local` and `data.path:` to a folder holding "
            "train.jsonl[.gz] and test.jsonl[.gz] in the HH raw format."
        )
    import datasets

    try:
        ds = datasets.load_dataset(HUB_DATASET, data_dir=subset, split=split)
    except Exception as e:  # noqa: BLE001 - re-raised with the way out
        raise DataSourceError(
            f"could not load {HUB_DATASET} data_dir={subset!r} split={split!r}: {e}. "
            "Use `data.source: local` with `data.path:` for a local copy."
        ) from e
    for i, row in enumerate(ds, start=1):
        yield f"{HUB_DATASET}/{subset}/{split}:{i}", row


def iter_local(path: str, split: str, on_bad_row: str) -> Iterator[tuple[str, object]]:
    if not path:
        raise DataSourceError("data.source: local needs data.path (a folder with train/test.jsonl)")
    f = find_split_file(path, split)
    for lineno, rec in iter_records(f, on_error=on_bad_row,
                                    hint="fix or remove that line of the raw data"):
        yield f"{f}:{lineno}", rec


def iter_synthetic(n: int, seed: int, split: str, label_noise: float) -> Iterator[tuple[str, object]]:
    for i, rec in enumerate(synthetic.generate_raw_pairs(n, seed=seed, split=split,
                                                         label_noise=label_noise), start=1):
        yield f"synthetic/{split}:{i}", rec


def iter_source(data: DataParams, split: str, seed: int) -> Iterator[tuple[str, object]]:
    if data.source == "hub":
        return iter_hub(data.subset, split)
    if data.source == "local":
        return iter_local(data.path, split, data.on_bad_row)
    syn = data.synthetic
    n = syn.num_train if split == "train" else syn.num_test
    return iter_synthetic(n, seed, split, syn.label_noise)


# -- preprocessing ------------------------------------------------------------------------------

def preprocess(rows, on_bad_row: str = "error") -> tuple[list[dict], SplitStats]:
    """Turn ``(where, raw)`` rows into pairs; never crash on one bad pair.

    A pair that cannot make an example is dropped and counted by reason. A malformed row
    (not JSON, not an object, missing or non-string ``chosen``/``rejected``) raises
    :class:`~exoflow.io.RecordError` naming ``file:line``, or with ``on_bad_row="skip"`` is
    counted as ``bad_row`` and skipped.
    """
    stats, pairs = SplitStats(), []
    for where, raw in rows:
        stats.read += 1
        problem = None
        if isinstance(raw, RecordError):
            problem = str(raw)
        elif not isinstance(raw, dict):
            problem = f"{where}: expected a JSON object, got {type(raw).__name__}"
        else:
            missing = [k for k in ("chosen", "rejected") if not isinstance(raw.get(k), str)]
            if missing:
                problem = f"{where}: missing or non-string field(s) {', '.join(missing)}"
        if problem:
            if on_bad_row != "skip":
                raise RecordError(problem + " (set data.on_bad_row: skip to count and skip such rows)")
            stats.dropped["bad_row"] += 1
            continue
        try:
            pairs.append(hh.to_pair(raw["chosen"], raw["rejected"], stats.rewritten))
        except hh.Dropped as d:
            stats.dropped[d.reason] += 1
    stats.kept = len(pairs)
    return pairs, stats


def subsample(pairs: list[dict], max_n: int | None, seed: int) -> list[dict]:
    """At most ``max_n`` pairs, a seeded random subset kept in file order."""
    if max_n is None or len(pairs) <= max_n:
        return pairs
    keep = sorted(random.Random(seed).sample(range(len(pairs)), max_n))
    return [pairs[i] for i in keep]


def prepare_split(data: DataParams | dict, split: str, seed: int) -> tuple[list[dict], dict]:
    """Preprocessed (and subsampled) pairs of one split, and its stats (``data``: the config's
    data section)."""
    if isinstance(data, dict):
        data = DataParams.from_dict(data)
    pairs, stats = preprocess(iter_source(data, split, seed), data.on_bad_row)
    max_n = data.max_train if split == "train" else data.max_test
    kept = subsample(pairs, max_n, seed)
    stats.subsampled_out = len(pairs) - len(kept)
    stats.kept = len(kept)
    if not kept:
        raise DataSourceError(
            f"{split}: no pairs left after preprocessing ({stats.as_dict()}); check data.source/path"
        )
    return kept, stats.as_dict()
