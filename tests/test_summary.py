"""The summary table and figure from hand-written reward.json files."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from exoflow.io import write_json, write_records
from exoflow.summary import columns, rm_check, rm_check_line, summary_table, write_summary
from tests.helpers import script_module

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"exo-rw_nc2": {"loss": "exo-rw", "data": "rm_labels", "num_contrastive": 2},
        "dpo-rw_nc2": {"loss": "dpo-rw", "data": "rm_labels", "num_contrastive": 2}}


PROMPTS = 4
HALF = 1.96 * 0.1 * math.sqrt(8 / 7) / math.sqrt(8)  # the interval of [m - 0.1, m + 0.1] x 4


def ckpt(d: Path, run, k, step, reward, kl, win, gold=None, length=10):
    """eval/<run>/ckpt<k>/: reward.json, and rewards.jsonl with 4 prompts x 2 samples whose
    means are the given numbers."""
    folder = d / f"eval/{run}/ckpt{k}"
    recs = []
    for i in range(PROMPTS):
        r = {"prompt": f"p{i}", "completions": ["x" * (4 * length)] * 2,
             "sft_completions": ["y"] * 2, "rewards": [reward - 0.1, reward + 0.1],
             "sft_rewards": [0.0, 0.0], "wins": [win, win], "logps": [-1.0, -1.0],
             "sft_logps": [-1.0 - kl, -1.0 - kl], "kl_exact": [kl / 10, kl / 10],
             "lengths": [length, length]}
        if gold is not None:
            r.update(gold=[gold, gold], sft_gold=[0.0, 0.0])
        recs.append(r)
    write_records(folder / "rewards.jsonl", recs)
    write_json(folder / "reward.json", {"kind": "checkpoint", "run": run, "ckpt": k,
                                        "step": step})
    return folder / "reward.json"


def write_world(d: Path, gold: bool):
    g = (lambda v: v) if gold else (lambda v: None)
    sft = ckpt(d, "sft", 0, 0, 0.0, 0.0, 0.5, g(-0.1), 15)
    ds = d / "eval/dataset"
    recs = []
    for i in range(PROMPTS):
        r = {"prompt": f"p{i}", "completions": ["c" * 48, "r" * 80], "rewards": [1.5, -0.5],
             "lengths": [12, 20]}
        if gold:
            r["gold"] = [0.4, -0.2]
        recs.append(r)
    write_records(ds / "rewards.jsonl", recs)
    write_json(ds / "reward.json", {"kind": "dataset"})
    cks = []
    # written out of order: the table sorts runs by RUNS and checkpoints ascending
    for run, k, r, kl in (("dpo-rw_nc2", 2, 0.9, 4.0), ("exo-rw_nc2", 2, 1.2, 3.0),
                          ("dpo-rw_nc2", 1, 0.5, 1.5), ("exo-rw_nc2", 1, 0.6, 1.0)):
        cks.append(ckpt(d, run, k, 20 * k, r, kl, 0.5 + 0.1 * k, g(r / 4), 10 - k))
    return sft, cks, ds / "reward.json"


@pytest.mark.parametrize("gold", [True, False])
def test_summary_rows_columns_and_png(tmp_path, gold):
    sft, cks, ds = write_world(tmp_path, gold)
    df = write_summary(sft, cks, ds, RUNS, tmp_path / "summary.csv", tmp_path / "summary.png",
                       title="tiny")
    csv = pd.read_csv(tmp_path / "summary.csv")
    want_cols = (["run", "configuration", "seed", "loss", "data", "num_contrastive", "ckpt",
                  "step", "epoch", "step_lr", "reward_mean", "reward_ci95_low", "reward_ci95_high", "win_rate",
                  "kl_exact", "kl"]
                 + (["gold_mean", "gold_ci95_low", "gold_ci95_high", "gold_vs_sft_mean",
                     "gold_vs_sft_ci95_low", "gold_vs_sft_ci95_high"] if gold else [])
                 + ["length_tokens", "length_chars", "report_prompts", "selected",
                    "select_by", "val_score"])
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
    assert exo2["reward_mean"] == pytest.approx(1.2) and exo2["kl"] == pytest.approx(3.0)
    assert exo2["kl_exact"] == pytest.approx(0.3) and exo2["report_prompts"] == 4
    assert exo2["reward_ci95_low"] == pytest.approx(1.2 - HALF)
    assert exo2["reward_ci95_high"] == pytest.approx(1.2 + HALF)
    assert exo2["win_rate"] == pytest.approx(0.7) and exo2["length_tokens"] == 8.0
    assert exo2["length_chars"] == 32.0 and pd.isna(exo2["selected"])
    assert csv.iloc[5]["reward_mean"] == 1.5 and csv.iloc[6]["length_tokens"] == 20.0
    if gold:
        assert exo2["gold_mean"] == 0.3
        # sft_gold is 0 in every record: the paired difference is the gold itself, no spread
        assert exo2["gold_vs_sft_mean"] == 0.3 and exo2["gold_vs_sft_ci95_low"] == 0.3
        assert csv.iloc[5]["gold_mean"] == 0.4 and csv.iloc[0]["gold_mean"] == -0.1
    # integer columns are written as integers, not 1.0
    line = (tmp_path / "summary.csv").read_text().splitlines()[3]
    assert line.startswith("exo-rw_nc2,exo-rw_nc2,,exo-rw,rm_labels,2,2,40,")

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
    cli = script_module("summarize")
    cli.main(["--sft", str(sft), "--dataset", str(ds), "--checkpoints", *map(str, cks),
              "--runs", json.dumps(RUNS), "--val-prompts", "0", "--select-by", "reward",
              "--csv", str(tmp_path / "s.csv"), "--png", str(tmp_path / "s.png")])
    assert len(pd.read_csv(tmp_path / "s.csv")) == 7
    assert (tmp_path / "s.png").stat().st_size > 0
    assert "dataset-chosen" in capsys.readouterr().out


def test_run_parameters_and_the_rm_check_are_columns(tmp_path):
    """The run parameters that differ between runs (the plan's varying keys, lr always) after
    num_contrastive; the RM's test accuracy, its Wilson interval (by hand) and the shorter-wins
    baseline on every row; the figure's title says whether the RM beats that baseline."""
    sft, cks, ds = write_world(tmp_path, gold=False)
    runs = {r: dict(m, params={"lr": lr, "beta_r": 0.5}) for (r, m), lr in
            zip(RUNS.items(), (1e-4, 2e-5))}
    metrics = {"test_accuracy": 0.5625, "num_test": 64, "test_shorter_wins_accuracy": 0.609}
    df = write_summary(sft, cks, ds, runs, tmp_path / "s.csv", tmp_path / "s.png", title="t",
                       rm_metrics=metrics)
    cols = list(df.columns)
    assert cols[cols.index("num_contrastive") + 1:cols.index("ckpt")] == ["lr", "beta_r"]
    assert list(df["lr"].iloc[1:5]) == [1e-4, 1e-4, 2e-5, 2e-5] and pd.isna(df["lr"].iloc[0])
    z, n, p = 1.96, 64, 0.5625  # Wilson, written out
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    row = df.iloc[3]
    assert row["rm_test_accuracy"] == p and row["rm_test_pairs"] == 64
    assert row["rm_test_accuracy_ci95_low"] == pytest.approx(centre - half, abs=1e-12)
    assert row["rm_test_accuracy_ci95_high"] == pytest.approx(centre + half, abs=1e-12)
    assert row["rm_shorter_wins_accuracy"] == 0.609
    check = rm_check(metrics)
    assert not check["clears_baseline"]  # 0.5625 [0.441, 0.677] does not clear 0.609
    assert rm_check_line(check).endswith(
        "does not clear that baseline, so the RM reward and win-rate columns do not measure "
        "preference (the gold or judge columns may)")
    good = rm_check({"test_accuracy": 0.91, "num_test": 300, "test_shorter_wins_accuracy": 0.5})
    assert good["clears_baseline"] and rm_check_line(good).endswith("the RM beats that baseline")
