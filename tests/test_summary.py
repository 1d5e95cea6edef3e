"""The summary table and figure from hand-written reward.json files."""

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from exoflow.io import write_json
from exoflow.summary import columns, summary_table, write_summary

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"exo-rw_nc2": {"loss": "exo-rw", "data": "rm_labels", "num_contrastive": 2},
        "dpo-rw_nc2": {"loss": "dpo-rw", "data": "rm_labels", "num_contrastive": 2}}


def stats(mean, half=0.1):
    return {"mean": mean, "std": 1.0, "count": 8, "ci95_low": mean - half, "ci95_high": mean + half}


def ckpt(run, k, step, reward, kl, win, gold=None, length=10.0):
    s = {"kind": "checkpoint", "run": run, "ckpt": k, "step": step, "num_prompts": 4,
         "num_return": 2, "reward": stats(reward), "sft_reward": stats(0.0), "win_rate": win,
         "win": stats(win), "kl": kl, "kl_terms": stats(kl), "length_tokens": length,
         "length_chars": 4 * length}
    if gold is not None:
        s.update(gold=stats(gold), sft_gold=stats(0.0), gold_win_rate=win)
    return s


def dataset(gold):
    d = {"kind": "dataset", "num_prompts": 4, "accuracy": 0.75}
    for name, r, g, n in (("chosen", 1.5, 0.4, 12.0), ("rejected", -0.5, -0.2, 20.0)):
        d[name] = {"reward": stats(r), "length_tokens": n, "length_chars": 4 * n}
        if gold:
            d[name]["gold"] = stats(g)
    if gold:
        d["gold_accuracy"] = 0.7
    return d


def write_world(d: Path, gold: bool):
    g = (lambda v: v) if gold else (lambda v: None)
    files = {"sft": d / "eval/sft/ckpt0/reward.json", "dataset": d / "eval/dataset/reward.json"}
    write_json(files["sft"], ckpt("sft", 0, 0, 0.0, 0.0, 0.5, g(-0.1), 15.0))
    write_json(files["dataset"], dataset(gold))
    cks = []
    # written out of order: the table sorts runs by RUNS and checkpoints ascending
    for run, k, r, kl in (("dpo-rw_nc2", 2, 0.9, 4.0), ("exo-rw_nc2", 2, 1.2, 3.0),
                          ("dpo-rw_nc2", 1, 0.5, 1.5), ("exo-rw_nc2", 1, 0.6, 1.0)):
        p = d / f"eval/{run}/ckpt{k}/reward.json"
        write_json(p, ckpt(run, k, 20 * k, r, kl, 0.5 + 0.1 * k, g(r / 4), 10.0 - k))
        cks.append(p)
    return files["sft"], cks, files["dataset"]


@pytest.mark.parametrize("gold", [True, False])
def test_summary_rows_columns_and_png(tmp_path, gold):
    sft, cks, ds = write_world(tmp_path, gold)
    df = write_summary(sft, cks, ds, RUNS, tmp_path / "summary.csv", tmp_path / "summary.png",
                       title="tiny")
    csv = pd.read_csv(tmp_path / "summary.csv")
    want_cols = (["run", "loss", "data", "num_contrastive", "ckpt", "step", "reward_mean",
                  "reward_ci95_low", "reward_ci95_high", "win_rate", "kl"]
                 + (["gold_mean", "gold_ci95_low", "gold_ci95_high"] if gold else [])
                 + ["length_tokens", "length_chars"])
    assert list(csv.columns) == want_cols == columns(gold)
    assert list(df.columns) == want_cols
    assert list(csv["run"]) == ["sft", "exo-rw_nc2", "exo-rw_nc2", "dpo-rw_nc2", "dpo-rw_nc2",
                                "dataset-chosen", "dataset-rejected"]
    assert list(csv["ckpt"].iloc[:5]) == [0, 1, 2, 1, 2]
    assert list(csv["step"].iloc[:5]) == [0, 20, 40, 20, 40]
    assert csv["ckpt"].iloc[5:].isna().all() and csv["kl"].iloc[5:].isna().all()

    sft_row = csv.iloc[0]
    assert sft_row["step"] == 0 and sft_row["kl"] == 0.0 and sft_row["win_rate"] == 0.5
    assert pd.isna(sft_row["loss"]) and pd.isna(sft_row["num_contrastive"])
    exo2 = csv.iloc[2]
    assert (exo2["loss"], exo2["data"], exo2["num_contrastive"]) == ("exo-rw", "rm_labels", 2)
    assert exo2["reward_mean"] == 1.2 and exo2["kl"] == 3.0
    assert exo2["reward_ci95_low"] == pytest.approx(1.1)
    assert exo2["reward_ci95_high"] == pytest.approx(1.3)
    assert exo2["win_rate"] == pytest.approx(0.7) and exo2["length_tokens"] == 8.0
    assert csv.iloc[5]["reward_mean"] == 1.5 and csv.iloc[6]["length_tokens"] == 20.0
    if gold:
        assert exo2["gold_mean"] == 0.3
        assert csv.iloc[5]["gold_mean"] == 0.4 and csv.iloc[0]["gold_mean"] == -0.1
    # integer columns are written as integers, not 1.0
    line = (tmp_path / "summary.csv").read_text().splitlines()[3]
    assert line.startswith("exo-rw_nc2,exo-rw,rm_labels,2,2,40,")

    png = (tmp_path / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_unknown_run_and_wrong_sft_file_are_refused(tmp_path):
    sft, cks, ds = write_world(tmp_path, gold=False)
    with pytest.raises(ValueError, match="run 'dpo-rw_nc2' is not one of"):
        summary_table(sft, cks, ds, {"exo-rw_nc2": RUNS["exo-rw_nc2"]})
    with pytest.raises(ValueError, match="SFT model's reward.json"):
        summary_table(cks[0], cks, ds, RUNS)


def test_summary_with_no_checkpoints(tmp_path):
    sft, _, ds = write_world(tmp_path, gold=True)
    df = summary_table(sft, [], ds, RUNS)
    assert list(df["run"]) == ["sft", "dataset-chosen", "dataset-rejected"]
    assert not math.isnan(df["gold_mean"].iloc[0])


def test_summarize_cli(tmp_path, capsys):
    sft, cks, ds = write_world(tmp_path, gold=True)
    spec = importlib.util.spec_from_file_location("summarize",
                                                  ROOT / "workflow_scripts" / "summarize.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.main(["--sft", str(sft), "--dataset", str(ds), "--checkpoints", *map(str, cks),
              "--runs", json.dumps(RUNS), "--csv", str(tmp_path / "s.csv"),
              "--png", str(tmp_path / "s.png")])
    assert len(pd.read_csv(tmp_path / "s.csv")) == 7
    assert (tmp_path / "s.png").stat().st_size > 0
    assert "dataset-chosen" in capsys.readouterr().out
