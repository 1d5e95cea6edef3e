"""Comparing alignment losses across seeds: statistics a reviewer would accept.

A *configuration* (an entry of ``align.runs`` or a point of an ``align.grid`` sweep) is trained
once per seed of ``align.seeds``; each (configuration, seed) is a run with its own checkpoints
and evaluations. Every number here is over the *report* prompts only (the evaluated test prompts
after the first ``eval.val_prompts``, which pick each run's checkpoint: see
:mod:`exoflow.summary`).

``study.csv``, per configuration and checkpoint (``ckpt`` 1..K, and ``selected``: each seed's
checkpoint picked on the validation prompts), for each metric m of :data:`METRICS`:
``m_mean`` (the mean over seeds of each seed's mean over report prompts and samples) and
``m_ci95_low`` / ``m_ci95_high``: the 95 % t-interval across seeds (``seeds`` of them; the
interval is the point with one seed); with the judge run (``judge_all``), ``judge_vs_<baseline>``
likewise, over each seed's judge win rate. The SFT model is the row ``configuration = sft``,
``ckpt = 0``.

``compare.csv``, per comparison ``a - b`` of ``study.compare`` and checkpoint: the difference of
the means over the common seeds and the report prompts, and its 95 % paired bootstrap interval
(:func:`paired_bootstrap`: resample seeds, then prompts, the same draws for a and b). The runs
are evaluated with common random numbers: the same prompts, and sample j of prompt i drawn from
the same random stream in every run (:mod:`exoflow.sampling`), so a and b differ by their
weights only.

``study.png``: RM reward and gold reward against the exact KL, per configuration (the mean over
seeds at each checkpoint, a band of the across-seed interval), and the paired differences with
their intervals.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from .errors import ExoflowError, check_finite
from .io import RecordError, read_json, read_records
from .losses.registry import loss_family
from .summary import save_figure, split, val_score

# a line style per loss family (exoflow/losses: each loss's FAMILY); dotted for any other
LINE_STYLES = {"exo": "-", "dpo": "--", "ipo": "-."}

__all__ = ["METRICS", "across_seeds", "paired_bootstrap", "study_tables", "write_study"]

# metric -> the per-sample field of rewards.jsonl it is the mean of
METRICS = {"reward": "rewards", "gold": "gold", "win_rate": "wins", "kl_exact": "kl_exact",
           "kl": None, "length_tokens": "lengths"}


def across_seeds(values: list[float]) -> dict:
    """Mean and 95 % t-interval of per-seed values (the point itself for one seed).

    >>> s = across_seeds([1.0, 2.0, 3.0])
    >>> round(s["mean"], 6), round(s["ci95_low"], 6), round(s["ci95_high"], 6)
    (2.0, -0.484138, 4.484138)
    """
    from scipy import stats

    check_finite(values, "across_seeds")
    if not values:
        raise ExoflowError("across_seeds: no values")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return {"mean": mean, "ci95_low": mean, "ci95_high": mean, "seeds": 1}
    half = float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "seeds": n}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """The difference of means ``a - b`` and its 95 % percentile interval.

    ``a`` and ``b``: (seeds, prompts) per-prompt means of two configurations, rows paired by
    seed, columns by prompt (the same prompts, the same sampling streams). Each of ``n_boot``
    draws resamples the seeds with replacement, then the prompts with replacement (one draw of
    prompts for both, so the pairing is kept), and takes the mean of ``a - b`` over the drawn
    cells.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ExoflowError(f"paired_bootstrap: shapes {a.shape} and {b.shape} must be equal "
                           "(seeds, prompts)")
    check_finite(a.ravel().tolist(), "paired_bootstrap: a")
    check_finite(b.ravel().tolist(), "paired_bootstrap: b")
    d = a - b
    rng = np.random.default_rng(seed)
    ns, npr = d.shape
    si = rng.integers(0, ns, size=(n_boot, ns))
    pi = rng.integers(0, npr, size=(n_boot, npr))
    # mean over the drawn seeds and prompts of d[s, p]
    draws = np.array([d[np.ix_(s, p)].mean() for s, p in zip(si, pi)])
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"diff": float(d.mean()), "ci95_low": float(lo), "ci95_high": float(hi),
            "seeds": ns, "prompts": npr, "bootstrap": n_boot}


# ---- reading the evaluations ---------------------------------------------------------------

def _per_prompt(records: list[dict], metric: str) -> np.ndarray:
    """(prompts,) mean over each prompt's samples of a metric."""
    field = METRICS[metric]
    if field is None:  # the log-ratio estimator
        return np.array([statistics.fmean(a - b for a, b in zip(r["logps"], r["sft_logps"]))
                         for r in records])
    return np.array([statistics.fmean(r[field]) for r in records])


class _Evals:
    """Every run's report-slice records per checkpoint, and its picked checkpoint."""

    def __init__(self, checkpoint_jsons, sft_json, runs: dict, val_prompts: int, select_by: str):
        self.meta, self.val_prompts = runs, val_prompts
        sft_recs = read_records(Path(sft_json).with_name("rewards.jsonl"))
        self.prompts = [r["prompt"] for r in sft_recs]
        self.sft = split(sft_recs, val_prompts, str(sft_json))[1]
        self.recs: dict = {}  # run -> {ckpt: report records}
        self.steps: dict = {}  # (run, ckpt) -> step
        val_scores: dict = {}
        for path in checkpoint_jsons:
            s = read_json(path)
            run, k = s["run"], int(s["ckpt"])
            if run not in runs:
                raise RecordError(f"{path}: run {run!r} is not one of {sorted(runs)}")
            recs = read_records(Path(path).with_name("rewards.jsonl"))
            if [r["prompt"] for r in recs] != self.prompts:
                raise RecordError(f"{path}: evaluated on other prompts than {sft_json}; "
                                  "delete both and run snakemake again")
            val, report = split(recs, val_prompts, str(path))
            self.recs.setdefault(run, {})[k] = report
            self.steps[(run, k)] = int(s["step"])
            if val_prompts:
                val_scores.setdefault(run, {})[k] = val_score(val, select_by, str(path))
        self.selected = {run: max(sc, key=lambda k: (sc[k], -k)) for run, sc in val_scores.items()}

    def seeds_of(self, configuration: str) -> dict[int, str]:
        return {m["seed"]: run for run, m in self.meta.items()
                if m["configuration"] == configuration and run in self.recs}

    def ckpt_of(self, run: str, ckpt) -> int:
        return self.selected[run] if ckpt == "selected" else int(ckpt)

    def has_ckpt(self, run: str, ckpt) -> bool:
        if ckpt == "selected":
            return run in self.selected
        return int(ckpt) in self.recs.get(run, {})

    def has(self, metric: str) -> bool:
        field = METRICS[metric]
        return field is None or all(field in r for recs in self.recs.values()
                                    for rr in recs.values() for r in rr)


def _judge_cells(judge_jsons) -> tuple[dict, list[str]]:
    """``({(run, ckpt, baseline): win rate or None}, baselines)`` from win_rate.json files."""
    cells, baselines = {}, []
    for path in judge_jsons:
        j = read_json(path)
        cells[(j["run"], int(j["ckpt"]), j["baseline"])] = j["win_rate"]
        if j["baseline"] not in baselines:
            baselines.append(j["baseline"])
    return cells, sorted(baselines)


def study_tables(sft_json, checkpoint_jsons, runs: dict, comparisons, val_prompts: int = 0,
                 select_by: str = "reward", n_boot: int = 2000, seed: int = 0, judge_jsons=()):
    """``(study, compare)`` DataFrames (see the module docstring). ``runs``: ``{run:
    {configuration, seed, loss, data, num_contrastive}}`` (config order). ``judge_jsons``: the
    judge's win_rate.json files; a configuration's checkpoint gets ``judge_vs_<baseline>_mean``
    and its across-seed interval when every seed's checkpoint was judged (with a valid
    verdict)."""
    import pandas as pd

    ev = _Evals(checkpoint_jsons, sft_json, runs, val_prompts, select_by)
    judged, baselines = _judge_cells(judge_jsons)
    metrics = [m for m in METRICS if ev.has(m)]
    configs = list(dict.fromkeys(m["configuration"] for m in runs.values()))
    ckpt_ids = sorted({k for recs in ev.recs.values() for k in recs})
    if val_prompts:
        ckpt_ids = [*ckpt_ids, "selected"]
    rows = [{"configuration": "sft", "ckpt": "0", "step": 0, "seeds": 1,
             **{f"{m}_{k}": v for m in metrics
                for k, v in across_seeds([float(_per_prompt(ev.sft, m).mean())]).items()
                if k != "seeds"}}]
    for conf in configs:
        by_seed = ev.seeds_of(conf)
        meta = next(m for m in runs.values() if m["configuration"] == conf)
        for k in ckpt_ids:
            present = {s: r for s, r in by_seed.items() if ev.has_ckpt(r, k)}
            if not present:
                continue
            row = {"configuration": conf, "loss": meta["loss"], "data": meta["data"],
                   "num_contrastive": meta["num_contrastive"], **meta.get("params", {}),
                   "ckpt": str(k),
                   "step": (statistics.fmean(ev.steps[(r, ev.ckpt_of(r, k))]
                                             for r in present.values())),
                   "seeds": len(present)}
            for m in metrics:
                stats_ = across_seeds([float(_per_prompt(ev.recs[r][ev.ckpt_of(r, k)], m).mean())
                                       for r in present.values()])
                row.update({f"{m}_{key}": v for key, v in stats_.items() if key != "seeds"})
            for b in baselines:
                rates = [judged.get((r, ev.ckpt_of(r, k), b)) for r in present.values()]
                if rates and None not in rates:
                    row.update({f"judge_vs_{b}_{key}": v for key, v in
                                across_seeds(rates).items() if key != "seeds"})
            rows.append(row)
    study = pd.DataFrame(rows)

    out = []
    for a, b in comparisons:
        sa, sb = ev.seeds_of(a), ev.seeds_of(b)
        common = [s for s in sa if s in sb]
        if not common:
            raise ExoflowError(f"study.compare {a} - {b}: no seed was evaluated for both")
        for k in ckpt_ids:
            if not all(ev.has_ckpt(sa[s], k) and ev.has_ckpt(sb[s], k) for s in common):
                continue
            ka = [ev.ckpt_of(sa[s], k) for s in common]
            kb = [ev.ckpt_of(sb[s], k) for s in common]
            for m in metrics:
                if m == "length_tokens":
                    continue
                A = np.stack([_per_prompt(ev.recs[sa[s]][x], m) for s, x in zip(common, ka)])
                B = np.stack([_per_prompt(ev.recs[sb[s]][x], m) for s, x in zip(common, kb)])
                res = paired_bootstrap(A, B, n_boot, seed)
                out.append({"a": a, "b": b, "ckpt": str(k), "metric": m, **res})
    compare = pd.DataFrame(out, columns=["a", "b", "ckpt", "metric", "diff", "ci95_low",
                                         "ci95_high", "seeds", "prompts", "bootstrap"])
    return study, compare


# ---- figure -------------------------------------------------------------------------------

def plot_study(study, compare, out_png, title: str | None = None) -> None:
    """``study.png``: reward and gold against the exact KL per configuration (mean over seeds,
    across-seed bands), and the paired differences with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ys = [y for y in ("reward", "gold") if f"{y}_mean" in study.columns]
    diff_metrics = [m for m in ("gold", "reward") if m in set(compare["metric"])][:1]
    n = len(ys) + len(diff_metrics)
    fig, axes = plt.subplots(1, n, figsize=(6.0 * n, 4.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sft = study[study["configuration"] == "sft"].iloc[0]
    curves = study[(study["configuration"] != "sft") & (study["ckpt"] != "selected")]
    for ax, y in zip(axes[0], ys):
        for i, (conf, c) in enumerate(curves.groupby("configuration", sort=False)):
            c = c.assign(k=c["ckpt"].astype(int)).sort_values("k")
            x = np.r_[0.0, c["kl_exact_mean"].to_numpy(float)]
            mid = np.r_[sft[f"{y}_mean"], c[f"{y}_mean"].to_numpy(float)]
            lo = np.r_[sft[f"{y}_mean"], c[f"{y}_ci95_low"].to_numpy(float)]
            hi = np.r_[sft[f"{y}_mean"], c[f"{y}_ci95_high"].to_numpy(float)]
            col = colors[i % len(colors)]
            ls = LINE_STYLES.get(loss_family(str(c["loss"].iloc[0])), ":")
            ax.plot(x, mid, color=col, ls=ls, marker="o", ms=3, lw=1.5, label=conf)
            ax.fill_between(x, lo, hi, color=col, alpha=0.12)
        ax.plot([0], [sft[f"{y}_mean"]], marker="*", ms=12, color="black", ls="none",
                label="SFT")
        ax.set_xlabel(r"KL($\pi\,\|\,\pi_{\mathrm{SFT}}$) per sample (exact token sums, nats)")
        ax.set_ylabel({"reward": "RM reward", "gold": "gold reward"}[y])
        ax.set_title(f"{ax.get_ylabel()} vs KL (bands: 95 % across seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax, m in zip(axes[0][len(ys):], diff_metrics):
        d = compare[compare["metric"] == m]
        labels = [f"{a} - {b}\n{'sel' if k == 'selected' else 'ckpt' + k}"
                  for a, b, k in zip(d["a"], d["b"], d["ckpt"])]
        pos = np.arange(len(d))
        ax.errorbar(d["diff"], pos, xerr=[d["diff"] - d["ci95_low"], d["ci95_high"] - d["diff"]],
                    fmt="o", capsize=3)
        ax.axvline(0, color="gray", lw=1)
        ax.set_yticks(pos, labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel(f"difference in {m} (95 % paired bootstrap over seeds and prompts)")
        ax.set_title(f"paired differences: {m}")
        ax.grid(alpha=0.3, axis="x")
    save_figure(fig, out_png, title)


def write_study(sft_json, checkpoint_jsons, runs: dict, comparisons, out_dir, val_prompts=0,
                select_by="reward", n_boot=2000, seed=0, title=None, judge_jsons=()):
    """Write ``study.csv``, ``compare.csv`` and ``study.png`` into ``out_dir``."""
    study, compare = study_tables(sft_json, checkpoint_jsons, runs, comparisons, val_prompts,
                                  select_by, n_boot, seed, judge_jsons)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study.to_csv(out / "study.csv", index=False)
    compare.to_csv(out / "compare.csv", index=False)
    plot_study(study, compare, out / "study.png", title)
    return study, compare
