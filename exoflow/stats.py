"""Summary statistics shared by the evaluation, the summary, the study and the judge: means with
normal 95 % intervals, and flattening per-prompt lists of per-sample values. No torch."""

from __future__ import annotations

import math
import statistics

from .errors import check_finite
from .io import RecordError

__all__ = ["flatten", "reshape", "summarize", "wilson_interval"]


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score 95 % interval of a proportion ``p`` measured on ``n`` trials (ties
    counted as halves make ``p`` any number in [0, 1]; the interval is then approximate).

    >>> tuple(round(x, 4) for x in wilson_interval(0.5, 100))
    (0.4038, 0.5962)
    """
    if n <= 0:
        raise RecordError("wilson_interval: no trials")
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


def summarize(values) -> dict:
    """Mean, sample std (ddof=1), count and the normal 95% interval of the mean.

    ``ci95 = mean ± 1.96 · std / sqrt(count)``; with one value the std is 0 and the
    interval is the point.

    >>> s = summarize([1, 2, 3, 4])
    >>> round(s["mean"], 4), round(s["std"], 5), s["count"], round(s["ci95_low"], 4)
    (2.5, 1.29099, 4, 1.2348)
    """
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise RecordError("summarize: no values")
    check_finite(values, "summarize")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = 1.96 * std / math.sqrt(n)
    return {"mean": mean, "std": std, "count": n, "ci95_low": mean - half, "ci95_high": mean + half}


def flatten(rows) -> list:
    """The values of per-prompt lists, prompt by prompt."""
    return [v for row in rows for v in row]


def reshape(flat: list, like: list[list]) -> list[list]:
    """``flat`` cut into lists of the lengths of ``like``'s (the inverse of :func:`flatten`)."""
    out, k = [], 0
    for row in like:
        out.append(flat[k:k + len(row)])
        k += len(row)
    return out
