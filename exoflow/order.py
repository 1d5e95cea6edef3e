"""The order in which an alignment run visits its training records, and which it visits.

One function gives the order to the run's sampler (:mod:`exoflow.trainer`) and to the
reference cache (:mod:`exoflow.refcache`), so that a cache made for the records a run visits
(``align.ref_records: visited``) holds exactly those: epoch ``e``'s order depends only on the
seed, the number of records, the optimizer step's batch (all processes together: accelerate
deals one step's micro-batches out in turn, so n processes see the order one process does)
and, with ``group_by_length``, the records' lengths (transformers' megabatches of 50 batches,
each sorted by length, in random order). A run of ``max_steps`` optimizer steps trains on the
first ``max_steps × batch`` records of that order (all of them once it passes an epoch).
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from .schedule import Visits

__all__ = ["visit_order", "visited_records"]


def visit_order(n: int, seed: int, batch: int, lengths: list[int] | None = None,
                epoch: int = 0) -> list[int]:
    """The records' indices in the order epoch ``epoch`` visits them."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if lengths is None:
        return torch.randperm(n, generator=g).tolist()
    if len(lengths) != n:
        raise ValueError(f"{len(lengths)} lengths for {n} records")
    return get_length_grouped_indices(list(lengths), batch, generator=g)


def visited_records(visits: Visits, n: int, lengths: list[int] | None = None) -> list[int]:
    """The indices (ascending) of the ``n`` records a run of ``visits`` trains on;
    ``lengths`` (one per record, the run's grouping lengths) when it groups by length."""
    if visits.steps * visits.batch >= n:
        return list(range(n))
    order = visit_order(n, visits.seed, visits.batch, lengths if visits.grouped else None)
    return sorted(order[:visits.steps * visits.batch])
