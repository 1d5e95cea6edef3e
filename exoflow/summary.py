"""One table and one figure from every evaluated checkpoint, on the report prompts.

The evaluated test prompts are split (``eval.val_prompts``): the first ones (*validation*) pick
each run's checkpoint by ``eval.select_by`` (RM reward, gold reward or win rate, the mean over
the validation prompts' samples); every number in the table is over the others (*report*), so
the pick never sees the prompts it is reported on. With ``val_prompts: 0`` nothing is picked and
every prompt reports.

``summary.csv`` has one row per run and checkpoint, one for the SFT model (run ``sft``,
checkpoint 0, step 0, KL 0, win rate 0.5: every run's starting point) and one each for the
dataset's own chosen and rejected responses on the same prompts (runs ``dataset-chosen`` and
``dataset-rejected``: reference levels, no checkpoint, step or KL). Columns (``columns(gold)``)::

    run, configuration, seed, loss, data, num_contrastive, ckpt,
    step, epoch, step_lr,  # the checkpoint's optimizer step, the fraction of the training
                   # prompts its steps drew, the learning rate its last step applied (as the
                   # training job recorded them in the checkpoint's exoflow_params.json)
    reward_mean, reward_ci95_low, reward_ci95_high, win_rate,
    kl_exact,      # KL(pi || pi_SFT) of a whole sample (nats, >= 0): the exact per-token KLs
                   # at the sampling temperature summed along the sample, averaged over samples
    kl,            # the Monte-Carlo estimate: mean log pi(y) - log pi_SFT(y) (can be < 0)
    [gold_mean, gold_ci95_low, gold_ci95_high,      # only when the gold reward is known
     gold_vs_sft_mean, gold_vs_sft_ci95_low, gold_vs_sft_ci95_high,]
                   # gold minus the SFT samples' gold, paired by prompt (95 % over prompts)
    length_tokens, length_chars, report_prompts,
    selected, select_by, val_score                  # the run's picked checkpoint (validation)

Rows: SFT, then the runs in the given order (checkpoints ascending), then the dataset rows.

``summary.png``: RM reward against KL(pi || pi_SFT) (exact) for every run's checkpoints (the
paper's reward/KL frontier; each curve starts at the SFT point, KL 0; the picked checkpoint
circled), RM reward against step (95% intervals; the dataset's chosen and rejected rewards as
horizontal lines), the win rate against SFT and the mean response length against step; with a
gold reward, also gold reward against KL and against step.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .io import RecordError, read_json, read_records
from .stats import flatten, summarize, wilson_interval

BASE_COLUMNS = ["run", "configuration", "seed", "loss", "data", "num_contrastive", "ckpt",
                "step", "epoch", "step_lr", "reward_mean", "reward_ci95_low", "reward_ci95_high", "win_rate",
                "kl_exact", "kl"]
GOLD_COLUMNS = ["gold_mean", "gold_ci95_low", "gold_ci95_high", "gold_vs_sft_mean",
                "gold_vs_sft_ci95_low", "gold_vs_sft_ci95_high"]
LENGTH_COLUMNS = ["length_tokens", "length_chars", "report_prompts"]
SELECT_COLUMNS = ["selected", "select_by", "val_score"]
RM_COLUMNS = ["rm_test_accuracy", "rm_test_accuracy_ci95_low", "rm_test_accuracy_ci95_high",
              "rm_shorter_wins_accuracy", "rm_test_pairs"]
INT_COLUMNS = ["seed", "num_contrastive", "ckpt", "step", "report_prompts"]
CRITERIA = {"reward": "rewards", "gold": "gold", "win_rate": "wins"}


def columns(gold: bool, judged: tuple[str, ...] = (), params: tuple[str, ...] = (),
            rm: bool = False) -> list[str]:
    """The table's columns: the run parameters ``params`` after ``num_contrastive``; with the
    gold reward known, its columns; for each judge baseline (``judged``),
    ``judge_vs_<baseline>`` and its 95 % interval; with the RM's test metrics, its check."""
    judge = [f"judge_vs_{b}{s}" for b in judged for s in ("", "_ci95_low", "_ci95_high")]
    i = BASE_COLUMNS.index("num_contrastive") + 1
    base = BASE_COLUMNS[:i] + [p for p in params if p not in BASE_COLUMNS] + BASE_COLUMNS[i:]
    return (base + (GOLD_COLUMNS if gold else []) + judge + LENGTH_COLUMNS + SELECT_COLUMNS
            + (RM_COLUMNS if rm else []))


def rm_check(metrics: dict) -> dict:
    """The reward model's test accuracy with its 95 % (Wilson) interval beside the "shorter
    answer wins" baseline on the same pairs (its metrics.json), and whether the interval
    clears the baseline: below it, its rewards do not measure preference."""
    n, acc = int(metrics["num_test"]), float(metrics["test_accuracy"])
    lo, hi = wilson_interval(acc, n)
    base = float(metrics["test_shorter_wins_accuracy"])
    return {"rm_test_accuracy": acc, "rm_test_accuracy_ci95_low": lo,
            "rm_test_accuracy_ci95_high": hi, "rm_shorter_wins_accuracy": base,
            "rm_test_pairs": n, "clears_baseline": lo > base}


def print_rm_check(results_dir) -> None:
    """After a run (the Snakefile's onsuccess): the summary's path and whether its RM beats
    "the shorter answer wins" on the test pairs, when both files exist."""
    import sys

    summary = Path(results_dir) / "summary.csv"
    rm = Path(results_dir) / "models" / "rm" / "metrics.json"
    if summary.exists() and rm.exists():
        print(f"exoflow: {summary}: {rm_check_line(rm_check(read_json(rm)))}", file=sys.stderr)


def rm_check_line(check: dict) -> str:
    """One line saying whether the RM reward and win rates can be read as preference."""
    head = (f"RM test accuracy {check['rm_test_accuracy']:.3f} [95 % "
            f"{check['rm_test_accuracy_ci95_low']:.3f}, {check['rm_test_accuracy_ci95_high']:.3f}]"
            f" on {check['rm_test_pairs']} pairs vs {check['rm_shorter_wins_accuracy']:.3f} for "
            "\"the shorter answer wins\"")
    if check["clears_baseline"]:
        return head + ": the RM beats that baseline"
    return (head + ": the interval does not clear that baseline, so the RM reward and win-rate "
            "columns do not measure preference (the gold or judge columns may)")


def judge_columns(judge_jsons) -> tuple[dict, tuple[str, ...]]:
    """``({(run, ckpt): {judge_vs_<b>...}}, baselines)`` from the judge's win_rate.json files."""
    cells: dict = {}
    baselines: list[str] = []
    for path in judge_jsons:
        j = read_json(path)
        b = j["baseline"]
        if b not in baselines:
            baselines.append(b)
        cells.setdefault((j["run"], int(j["ckpt"])), {}).update({
            f"judge_vs_{b}": j["win_rate"], f"judge_vs_{b}_ci95_low": j["ci95_low"],
            f"judge_vs_{b}_ci95_high": j["ci95_high"]})
    return cells, tuple(sorted(baselines))


def _stats(prefix: str, s: dict | None) -> dict:
    if not s:
        return {}
    return {f"{prefix}_mean": s["mean"], f"{prefix}_ci95_low": s["ci95_low"],
            f"{prefix}_ci95_high": s["ci95_high"]}


def split(records: list, val_prompts: int, where: str) -> tuple[list, list]:
    """(validation, report) records: the first ``val_prompts`` and the others."""
    if val_prompts >= len(records):
        raise RecordError(f"{where}: {len(records)} evaluated prompts leave none to report on "
                          f"after eval.val_prompts = {val_prompts}")
    return records[:val_prompts], records[val_prompts:]


def slice_metrics(records: list[dict]) -> dict:
    """The summary numbers of some prompts' records (``eval/<run>/ckpt<k>/rewards.jsonl``)."""
    row = {"win_rate": statistics.fmean(flatten(r["wins"] for r in records)),
           "kl": statistics.fmean(a - b for r in records
                                  for a, b in zip(r["logps"], r["sft_logps"])),
           "kl_exact": statistics.fmean(flatten(r.get("kl_exact", [0.0] * len(r["logps"]))
                                              for r in records)),
           "length_tokens": statistics.fmean(flatten(r["lengths"] for r in records)),
           "length_chars": statistics.fmean(len(c) for r in records for c in r["completions"]),
           "report_prompts": len(records)}
    row.update(_stats("reward", summarize(flatten(r["rewards"] for r in records))))
    if all("gold" in r for r in records):
        row.update(_stats("gold", summarize(flatten(r["gold"] for r in records))))
        if all("sft_gold" in r for r in records):
            # paired by prompt (the same prompts, the same sampling streams): far tighter than
            # comparing two independent intervals
            row.update(_stats("gold_vs_sft", summarize(
                [statistics.fmean(r["gold"]) - statistics.fmean(r["sft_gold"]) for r in records])))
    return row


def val_score(records: list[dict], select_by: str, where: str) -> float:
    """The mean of the criterion over the validation records."""
    key = CRITERIA[select_by]
    if any(key not in r for r in records):
        raise RecordError(f"{where}: eval.select_by {select_by!r} needs {key!r} in every record "
                          "(gold: the synthetic source only)")
    return statistics.fmean(flatten(r[key] for r in records))


def dataset_rows(records: list[dict]) -> list[dict]:
    """The ``dataset-chosen`` and ``dataset-rejected`` rows of ``eval/dataset/rewards.jsonl``
    (report prompts only)."""
    rows = []
    for j, name in enumerate(("chosen", "rejected")):
        row = {"run": f"dataset-{name}",
               "length_tokens": statistics.fmean(r["lengths"][j] for r in records),
               "length_chars": statistics.fmean(len(r["completions"][j]) for r in records),
               "report_prompts": len(records)}
        row.update(_stats("reward", summarize([r["rewards"][j] for r in records])))
        if all("gold" in r for r in records):
            row.update(_stats("gold", summarize([r["gold"][j] for r in records])))
        rows.append(row)
    return rows


def summary_table(sft_json, checkpoint_jsons, dataset_json, runs: dict[str, dict],
                  val_prompts: int = 0, select_by: str = "reward", judge_jsons=(),
                  rm_metrics: dict | None = None):
    """The summary DataFrame (see the module docstring).

    ``*_json`` are the ``reward.json`` files (run, checkpoint, step); the numbers come from the
    ``rewards.jsonl`` beside each. ``runs`` maps each run name to ``{"configuration", "seed",
    "loss", "data", "num_contrastive"}`` and fixes the order of the runs; every checkpoint's run
    must be in it.
    """
    import pandas as pd

    def records(path):
        return read_records(Path(path).with_name("rewards.jsonl"))

    sft = read_json(sft_json)
    if sft["run"] != "sft" or int(sft["ckpt"]) != 0:
        raise RecordError(f"{sft_json}: expected the SFT model's reward.json (run sft, ckpt 0), "
                          f"got run {sft['run']!r} ckpt {sft['ckpt']}")
    sft_recs = records(sft_json)
    ckpts = [(p, read_json(p)) for p in checkpoint_jsons]
    order = {name: n for n, name in enumerate(runs)}
    for path, s in ckpts:
        if s["run"] not in order:
            raise RecordError(f"{path}: run {s['run']!r} is not one of {sorted(order)}")
    ckpts.sort(key=lambda ps: (order[ps[1]["run"]], int(ps[1]["ckpt"])))
    _, report = split(sft_recs, val_prompts, str(sft_json))
    rows = [dict(run="sft", ckpt=0, step=0, epoch=0.0, **slice_metrics(report))]
    best: dict = {}
    for path, s in ckpts:
        recs = records(path)
        if [r["prompt"] for r in recs] != [r["prompt"] for r in sft_recs]:
            raise RecordError(f"{path}: evaluated on other prompts than {sft_json}; delete "
                              "both and run snakemake again")
        val, report = split(recs, val_prompts, str(path))
        meta = runs[s["run"]]
        row = dict(run=s["run"], configuration=meta.get("configuration", s["run"]),
                   seed=meta.get("seed"), loss=meta.get("loss"), data=meta.get("data"),
                   num_contrastive=meta.get("num_contrastive"), **meta.get("params", {}),
                   ckpt=int(s["ckpt"]),
                   step=int(s["step"]), epoch=s.get("epoch"), step_lr=s.get("lr"),
                   **slice_metrics(report))
        if val_prompts:
            row["select_by"] = select_by
            row["val_score"] = val_score(val, select_by, str(path))
            if s["run"] not in best or row["val_score"] > best[s["run"]]["val_score"]:
                best[s["run"]] = row
        rows.append(row)
    for row in rows:
        if row.get("ckpt") and val_prompts:
            row["selected"] = best.get(row["run"]) is row
    _, ds_report = split(read_records(Path(dataset_json).with_name("rewards.jsonl")),
                         val_prompts, str(dataset_json))
    rows += dataset_rows(ds_report)
    judged, baselines = judge_columns(judge_jsons)
    for row in rows:
        if row["run"] == "sft" or "ckpt" in row and row.get("ckpt") is not None:
            row.update(judged.get((row["run"], int(row.get("ckpt") or 0)), {}))
    gold = any(r.get("gold_mean") is not None for r in rows)
    params = tuple(dict.fromkeys(k for m in runs.values() for k in m.get("params", {})))
    if rm_metrics is not None:
        check = rm_check(rm_metrics)
        for row in rows:
            row.update({k: check[k] for k in RM_COLUMNS})
    df = pd.DataFrame(rows).reindex(columns=columns(gold, baselines, params,
                                                    rm_metrics is not None))
    for c in INT_COLUMNS:
        df[c] = pd.array(df[c], dtype="Int64")
    for c in ("run", "configuration", "loss", "data", "select_by"):
        df[c] = df[c].astype("string")
    df["selected"] = df["selected"].astype("boolean")
    return df


# ---- figure ----------------------------------------------------------------------------

def _run_curves(df):
    """{run: rows sorted by step, the SFT row first} for every alignment run."""
    import pandas as pd

    sft = df[df["run"] == "sft"]
    curves = {}
    for run in dict.fromkeys(df["run"]):
        if run == "sft" or str(run).startswith("dataset-"):
            continue
        part = df[df["run"] == run].sort_values("step")
        curves[run] = pd.concat([sft, part], ignore_index=True)
    return curves


def _hlines(ax, df, column):
    styles = {"dataset-chosen": ("--", "dataset chosen"), "dataset-rejected": (":", "dataset rejected")}
    for run, (ls, label) in styles.items():
        vals = df.loc[df["run"] == run, column].dropna()
        if len(vals):
            ax.axhline(float(vals.iloc[0]), color="gray", ls=ls, lw=1, label=label)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
STYLES = ("-", "--", "-.", ":")


def plot_summary(df, out_png, title: str | None = None) -> None:
    """``summary.png`` from :func:`summary_table`'s DataFrame (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gold = "gold_mean" in df.columns and df["gold_mean"].notna().any()
    panels = [("kl_exact", "reward"), ("step", "reward"), ("step", "win_rate")]
    if gold:
        panels += [("kl_exact", "gold"), ("step", "gold")]
    panels += [("step", "length_tokens")]
    ncols = 3 if len(panels) > 4 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    curves = _run_curves(df)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = {"reward": "RM reward", "gold": "gold reward", "win_rate": "win rate vs SFT (RM)",
              "length_tokens": "mean response length (tokens)",
              "kl_exact": r"KL($\pi\,\|\,\pi_{\mathrm{SFT}}$) per sample (exact token sums, nats)",
              "step": "optimizer step"}
    for ax, (x, y) in zip(axes.flat, panels):
        col = f"{y}_mean" if y in ("reward", "gold") else y
        for n, (run, c) in enumerate(curves.items()):
            c = c.dropna(subset=[x, col])
            # colour, marker and line style all change with the run: coinciding curves stay
            # distinguishable
            kw = dict(color=colors[n % len(colors)], marker=MARKERS[n % len(MARKERS)], ms=4,
                      lw=1.5, ls=STYLES[n % len(STYLES)], label=run)
            if x == "step" and y in ("reward", "gold"):
                err = [c[col] - c[f"{y}_ci95_low"], c[f"{y}_ci95_high"] - c[col]]
                ax.errorbar(c[x].astype(float), c[col], yerr=err, capsize=2, **kw)
            else:
                ax.plot(c[x].astype(float), c[col], **kw)
            if x == "kl_exact" and "selected" in c.columns:
                sel = c[c["selected"].fillna(False).astype(bool)]
                ax.plot(sel[x].astype(float), sel[col], marker="o", ms=11, mfc="none",
                        mec=kw["color"], ls="none")
        sft = df[df["run"] == "sft"]
        if len(sft) and x == "kl_exact":
            ax.plot([0.0], [float(sft[col].iloc[0])], marker="*", ms=12, color="black",
                    ls="none", label="SFT", zorder=5)
        if x == "step" and y != "win_rate":
            _hlines(ax, df, col)
        if y == "win_rate":
            ax.axhline(0.5, color="gray", ls="--", lw=1)
        ax.set_xlabel(labels[x])
        ax.set_ylabel(labels[y])
        ax.set_title(f"{labels[y]} vs {'KL' if x == 'kl_exact' else 'step'}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    if any(ax.get_legend_handles_labels()[1] for ax in axes.flat[1:len(panels)]):
        axes.flat[1].legend(fontsize=8)
    save_figure(fig, out_png, title)


def save_figure(fig, out_png, title: str | None = None) -> None:
    """The end of every figure here: title, tight layout, PNG at 120 dpi (its folder made)."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def write_summary(sft_json, checkpoint_jsons, dataset_json, runs: dict[str, dict], out_csv,
                  out_png, title: str | None = None, val_prompts: int = 0,
                  select_by: str = "reward", judge_jsons=(), rm_metrics: dict | None = None):
    """Write ``summary.csv`` and ``summary.png``; returns the DataFrame. With ``rm_metrics``
    (the RM's metrics.json) the RM check goes into the table and the figure's title."""
    df = summary_table(sft_json, checkpoint_jsons, dataset_json, runs, val_prompts, select_by,
                       judge_jsons, rm_metrics)
    if rm_metrics is not None:
        c = rm_check(rm_metrics)
        verdict = "beats" if c["clears_baseline"] else "does NOT clear"
        line = (f"RM test accuracy {c['rm_test_accuracy']:.3f} [{c['rm_test_accuracy_ci95_low']:.3f}"
                f", {c['rm_test_accuracy_ci95_high']:.3f}] {verdict} shorter-wins "
                f"{c['rm_shorter_wins_accuracy']:.3f}")
        title = f"{title}\n{line}" if title else line
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False)
    plot_summary(df, out_png, title=title)
    return df
