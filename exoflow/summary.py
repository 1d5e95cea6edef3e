"""One table and one figure from every evaluated checkpoint.

``summary.csv`` has one row per run and checkpoint, one for the SFT model (run ``sft``,
checkpoint 0, step 0, KL 0, win rate 0.5: every run's starting point) and one each for
the dataset's own chosen and rejected responses on the same prompts (runs
``dataset-chosen`` and ``dataset-rejected``: reference levels, no checkpoint, step or KL).
Columns (``columns(gold)``)::

    run, loss, data, num_contrastive, ckpt, step,
    reward_mean, reward_ci95_low, reward_ci95_high, win_rate, kl,
    [gold_mean, gold_ci95_low, gold_ci95_high,]     # only when the gold reward is known
    length_tokens, length_chars

Rows: SFT, then the runs in the given order (checkpoints ascending), then the dataset rows.

``summary.png``: RM reward against KL(pi || pi_SFT) for every run's checkpoints (the
paper's reward/KL frontier; each curve starts at the SFT point, KL 0), RM reward against
step (95% intervals; the dataset's chosen and rejected rewards as horizontal lines), the
win rate against SFT and the mean response length against step; with a gold reward, also
gold reward against KL and against step.
"""

from __future__ import annotations

import math
from pathlib import Path

from .io import RecordError, read_json

BASE_COLUMNS = ["run", "loss", "data", "num_contrastive", "ckpt", "step",
                "reward_mean", "reward_ci95_low", "reward_ci95_high", "win_rate", "kl"]
GOLD_COLUMNS = ["gold_mean", "gold_ci95_low", "gold_ci95_high"]
LENGTH_COLUMNS = ["length_tokens", "length_chars"]
INT_COLUMNS = ["num_contrastive", "ckpt", "step"]


def columns(gold: bool) -> list[str]:
    return BASE_COLUMNS + (GOLD_COLUMNS if gold else []) + LENGTH_COLUMNS


def _stats(prefix: str, s: dict | None) -> dict:
    if not s:
        return {}
    return {f"{prefix}_mean": s["mean"], f"{prefix}_ci95_low": s["ci95_low"],
            f"{prefix}_ci95_high": s["ci95_high"]}


def checkpoint_row(summary: dict, meta: dict | None = None) -> dict:
    """A CSV row from a checkpoint's (or the SFT model's) ``reward.json``."""
    meta = meta or {}
    row = {"run": summary["run"], "loss": meta.get("loss"), "data": meta.get("data"),
           "num_contrastive": meta.get("num_contrastive"), "ckpt": summary["ckpt"],
           "step": summary["step"], "win_rate": summary["win_rate"], "kl": summary["kl"],
           "length_tokens": summary["length_tokens"], "length_chars": summary["length_chars"]}
    row.update(_stats("reward", summary["reward"]))
    row.update(_stats("gold", summary.get("gold")))
    return row


def dataset_rows(summary: dict) -> list[dict]:
    """The ``dataset-chosen`` and ``dataset-rejected`` rows of ``eval/dataset/reward.json``."""
    rows = []
    for name in ("chosen", "rejected"):
        part = summary[name]
        row = {"run": f"dataset-{name}", "length_tokens": part["length_tokens"],
               "length_chars": part["length_chars"]}
        row.update(_stats("reward", part["reward"]))
        row.update(_stats("gold", part.get("gold")))
        rows.append(row)
    return rows


def summary_table(sft_json, checkpoint_jsons, dataset_json, runs: dict[str, dict]):
    """The summary DataFrame (see the module docstring).

    ``runs`` maps each run name to ``{"loss", "data", "num_contrastive"}`` and fixes the
    order of the runs; every checkpoint's run must be in it.
    """
    import pandas as pd

    sft = read_json(sft_json)
    if sft["run"] != "sft" or int(sft["ckpt"]) != 0:
        raise RecordError(f"{sft_json}: expected the SFT model's reward.json (run sft, ckpt 0), "
                         f"got run {sft['run']!r} ckpt {sft['ckpt']}")
    sft = dict(sft, step=0)
    ckpts = [read_json(p) for p in checkpoint_jsons]
    order = {name: n for n, name in enumerate(runs)}
    for path, s in zip(checkpoint_jsons, ckpts):
        if s["run"] not in order:
            raise RecordError(f"{path}: run {s['run']!r} is not one of {sorted(order)}")
    ckpts.sort(key=lambda s: (order[s["run"]], int(s["ckpt"])))
    rows = [checkpoint_row(sft)] + [checkpoint_row(s, runs[s["run"]]) for s in ckpts]
    rows += dataset_rows(read_json(dataset_json))
    gold = any(r.get("gold_mean") is not None for r in rows)
    df = pd.DataFrame(rows).reindex(columns=columns(gold))
    for c in INT_COLUMNS:
        df[c] = pd.array(df[c], dtype="Int64")
    for c in ("loss", "data"):
        df[c] = df[c].astype("string")
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


def plot_summary(df, out_png, title: str | None = None) -> None:
    """``summary.png`` from :func:`summary_table`'s DataFrame (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gold = "gold_mean" in df.columns and df["gold_mean"].notna().any()
    panels = [("kl", "reward"), ("step", "reward"), ("step", "win_rate")]
    if gold:
        panels += [("kl", "gold"), ("step", "gold")]
    panels += [("step", "length_tokens")]
    ncols = 3 if len(panels) > 4 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False)
    curves = _run_curves(df)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = {"reward": "RM reward", "gold": "gold reward", "win_rate": "win rate vs SFT (RM)",
              "length_tokens": "mean response length (tokens)", "kl": r"KL($\pi\,\|\,\pi_{\mathrm{SFT}}$)",
              "step": "optimizer step"}
    for ax, (x, y) in zip(axes.flat, panels):
        col = f"{y}_mean" if y in ("reward", "gold") else y
        for n, (run, c) in enumerate(curves.items()):
            c = c.dropna(subset=[x, col])
            kw = dict(color=colors[n % len(colors)], marker="o", ms=4, lw=1.5, label=run)
            if x == "step" and y in ("reward", "gold"):
                err = [c[col] - c[f"{y}_ci95_low"], c[f"{y}_ci95_high"] - c[col]]
                ax.errorbar(c[x].astype(float), c[col], yerr=err, capsize=2, **kw)
            else:
                ax.plot(c[x].astype(float), c[col], **kw)
        sft = df[df["run"] == "sft"]
        if len(sft) and x == "kl":
            ax.plot([0.0], [float(sft[col].iloc[0])], marker="*", ms=12, color="black",
                    ls="none", label="SFT", zorder=5)
        if x == "step" and y != "win_rate":
            _hlines(ax, df, col)
        if y == "win_rate":
            ax.axhline(0.5, color="gray", ls="--", lw=1)
        ax.set_xlabel(labels[x])
        ax.set_ylabel(labels[y])
        ax.set_title(f"{labels[y]} vs {'KL' if x == 'kl' else 'step'}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    if any(ax.get_legend_handles_labels()[1] for ax in axes.flat[1:len(panels)]):
        axes.flat[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def write_summary(sft_json, checkpoint_jsons, dataset_json, runs: dict[str, dict], out_csv,
                  out_png, title: str | None = None):
    """Write ``summary.csv`` and ``summary.png``; returns the DataFrame."""
    df = summary_table(sft_json, checkpoint_jsons, dataset_json, runs)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False)
    plot_summary(df, out_png, title=title)
    return df
