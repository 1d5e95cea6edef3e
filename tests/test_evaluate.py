"""Evaluation: win rate, KL, reward aggregation by hand; tiny checkpoints end to end."""

import json
import random
from pathlib import Path

import pytest

from exoflow.config import EvalParams, GenerationParams, LayoutParams
from exoflow.evaluate import (
    eval_checkpoint,
    eval_dataset,
    kl_estimate,
    kl_terms,
    pair_wins,
    summarize_checkpoint,
    win_rate,
)
from exoflow.io import RecordError, read_json, read_records, write_json, write_records
from exoflow.modeling import build_scratch_model, load_reward_model, load_tokenizer, train_tokenizer
from exoflow.sampling import sample_file
from exoflow.synthetic import gold_reward, oracle_response, sample_prompt
from exoflow.workdir import PARAMS_FILE
from tests.helpers import script_module

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=256)
SAMPLE = dict(num_return=2, temperature=0.8, top_k=0, max_new_tokens=8, max_prompt_len=96,
              batch_size=4)
SCORING = EvalParams(max_prompt_len=96, score_batch_size=4)
# what a training job records in a checkpoint's exoflow_params.json (exoflow.align)
STAMP = {"stage": "align", "checkpoint": 3, "step": 60, "epoch": 0.625, "lr": 2.5e-5}
RM_LAYOUT = LayoutParams(max_len=128, max_gen_len=16)


# ---- by hand ---------------------------------------------------------------------------

def test_win_rate_by_hand():
    ckpt, sft = [[1, 2], [0, 0]], [[0, 3], [0, 1]]
    assert pair_wins(ckpt, sft) == [[1.0, 0.0], [0.5, 0.0]]
    assert win_rate(ckpt, sft) == 0.375


def test_identical_texts_tie_whatever_the_scores():
    texts = [["a", "b"], ["c", "d"]]
    sft_texts = [["a", "x"], ["c", "y"]]
    # a batching-level difference between the scores of identical texts is no win
    assert pair_wins([[1.0000001, 2], [0, 5]], [[1.0, 3], [1e-9, 1]], texts, sft_texts) == \
        [[0.5, 0.0], [0.5, 1.0]]


def test_shapes_must_match():
    with pytest.raises(ValueError, match="prompt 1 has 1 samples vs 2"):
        win_rate([[1, 2], [3]], [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="2 prompts vs 1"):
        kl_estimate([[1.0], [2.0]], [[1.0]])


def test_kl_by_hand():
    logps = [[-1.0, -2.0], [-3.0, -1.0]]
    sft = [[-2.0, -2.0], [-2.0, -4.0]]
    assert kl_terms(logps, sft) == [[1.0, 0.0], [-1.0, 3.0]]
    assert kl_estimate(logps, sft) == 0.75
    assert kl_estimate(logps, logps) == 0.0


def test_summarize_checkpoint_by_hand():
    recs = [
        {"prompt": "p0", "completions": ["a", "bb"], "sft_completions": ["x", "c"],
         "rewards": [1.0, 2.0], "sft_rewards": [0.0, 3.0], "wins": [1.0, 0.0],
         "logps": [-1.0, -2.0], "sft_logps": [-2.0, -2.0], "kl_exact": [0.25, 0.5],
         "lengths": [1, 2], "gold": [0.5, -0.5], "sft_gold": [0.0, -0.5]},
        {"prompt": "p1", "completions": ["dddd", "e"], "sft_completions": ["f", "g"],
         "rewards": [0.0, 0.0], "sft_rewards": [0.0, 1.0], "wins": [0.5, 0.0],
         "logps": [-3.0, -1.0], "sft_logps": [-2.0, -4.0], "kl_exact": [0.0, 1.25],
         "lengths": [3, 1], "gold": [0.0, 0.0], "sft_gold": [0.1, 0.0]},
    ]
    s = summarize_checkpoint(recs, run="exo", ckpt=2, step=40, epoch=0.5, lr=1e-6)
    assert (s["run"], s["ckpt"], s["step"], s["num_prompts"], s["num_return"]) == ("exo", 2, 40, 2, 2)
    assert (s["epoch"], s["lr"]) == (0.5, 1e-6)
    assert s["win_rate"] == 0.375
    assert s["kl"] == 0.75 and s["kl_exact"] == 0.5
    assert s["reward"]["mean"] == 0.75 and s["reward"]["count"] == 4
    assert s["reward"]["ci95_low"] < 0.75 < s["reward"]["ci95_high"]
    assert s["sft_reward"]["mean"] == 1.0
    assert s["length_tokens"] == 1.75
    assert s["length_chars"] == 2.0
    assert s["gold"]["mean"] == 0.0
    assert s["gold_win_rate"] == (1 + 0.5 + 0 + 0.5) / 4  # p0: win, tie; p1: loss, tie
    no_gold = summarize_checkpoint([{k: v for k, v in r.items() if "gold" not in k} for r in recs],
                                   run="exo", ckpt=2, step=40)
    assert "gold" not in no_gold and "gold_win_rate" not in no_gold


def test_eval_params_refuse_unknown_keys():
    with pytest.raises(ValueError, match="eval.score_batchsize: unknown key .did you mean "
                                         "'score_batch_size'"):
        EvalParams.from_dict({"score_batchsize": 3})
    p = EvalParams.from_dict({"num_prompts": 4, "num_return": 2, "temperature": 0.8, "top_k": 0,
                              "checkpoints": 3, "batch_size": 8, "max_prompt_len": 100,
                              "max_new_tokens": 20, "score_batch_size": 5})
    assert (p.max_prompt_len, p.score_batch_size) == (100, 5)


# ---- tiny models -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic test prompts, a tokenizer, an SFT model, a copy, a different model, an RM."""
    d = tmp_path_factory.mktemp("eval")
    rng = random.Random(0)
    prompts = [sample_prompt(rng)[1] for _ in range(6)]
    pairs = [{"prompt": p, "chosen": oracle_response(p), "rejected": " The weather is nice."}
             for p in prompts]
    write_records(d / "pref.jsonl", pairs)
    texts = [p + r["chosen"] + r["rejected"] for p, r in zip(prompts, pairs)] * 5
    texts += [sample_prompt(rng)[1] + oracle_response(sample_prompt(rng)[1]) for _ in range(100)]
    train_tokenizer(texts, 320, d / "tok", model_max_length=2048)
    tok = load_tokenizer(str(d / "tok"))
    for name, seed in (("sft", 0), ("copy", 0), ("other", 1), ("rm_body", 2)):
        model = build_scratch_model(TINY, tok, seed=seed)
        model.save_pretrained(d / name)
        tok.save_pretrained(d / name)
        if name in ("copy", "other"):
            write_json(d / name / PARAMS_FILE, STAMP)
    rm = load_reward_model(str(d / "rm_body"), pad_token_id=tok.pad_token_id)
    rm.save_pretrained(d / "rm")  # the random head is fixed from here on
    tok.save_pretrained(d / "rm")
    params = GenerationParams.from_dict(SAMPLE)
    for name in ("sft", "copy", "other"):
        sample_file(d / name, d / "pref.jsonl", d / f"{name}.jsonl", params, seed=42, num_prompts=4)
    return d


def _eval(d, name, policy, tmp_path, gold=True, samples=None):
    return eval_checkpoint(d / (samples or f"{name}.jsonl"), d / "sft.jsonl", d / "rm", d / "sft",
                           d / policy, tmp_path / name / "reward.json",
                           tmp_path / name / "rewards.jsonl", run="run", ckpt=1,
                           scoring=SCORING, rm_layout=RM_LAYOUT, gold=gold, device="cpu")


def test_checkpoint_equal_to_sft_has_zero_kl_and_half_win_rate(world, tmp_path):
    assert read_records(world / "copy.jsonl") == read_records(world / "sft.jsonl")
    s = _eval(world, "copy", "copy", tmp_path)
    assert abs(s["kl"]) < 1e-6
    assert s["win_rate"] == 0.5
    assert s["gold_win_rate"] == 0.5
    assert s["reward"] == s["sft_reward"]
    assert s["num_prompts"] == 4 and s["num_return"] == 2 and s["reward"]["count"] == 8
    assert read_json(tmp_path / "copy" / "reward.json") == s
    recs = read_records(tmp_path / "copy" / "rewards.jsonl")
    assert len(recs) == 4
    assert all(len(r["rewards"]) == len(r["logps"]) == len(r["gold"]) == 2 for r in recs)
    assert all(r["wins"] == [0.5, 0.5] for r in recs)
    assert all(all(lp < 0 for lp in r["logps"]) for r in recs)
    want_gold = [gold_reward(r["prompt"], c) for r in recs for c in r["completions"]]
    assert [g for r in recs for g in r["gold"]] == want_gold


def test_sft_against_itself_is_exact(world, tmp_path):
    s = _eval(world, "sft", "sft", tmp_path, gold=False)
    assert s["kl"] == 0.0 and s["win_rate"] == 0.5
    assert "gold" not in s


def test_different_model_has_nonzero_kl(world, tmp_path):
    assert read_records(world / "other.jsonl") != read_records(world / "sft.jsonl")
    s = _eval(world, "other", "other", tmp_path)
    assert abs(s["kl"]) > 1e-3
    assert 0.0 <= s["win_rate"] <= 1.0
    recs = read_records(tmp_path / "other" / "rewards.jsonl")
    same = read_records(world / "sft.jsonl")
    assert [r["sft_completions"] for r in recs] == [r["completions"] for r in same]
    assert s["kl"] == pytest.approx(kl_estimate([r["logps"] for r in recs],
                                                [r["sft_logps"] for r in recs]))


def test_a_checkpoint_says_where_it_is(world, tmp_path):
    """step, epoch and lr come from the checkpoint's own record; the SFT model is step 0; a
    folder without a record is refused naming the file."""
    from exoflow.evaluate import checkpoint_position

    assert checkpoint_position(world / "other", world / "sft") == {
        "step": 60, "epoch": 0.625, "lr": 2.5e-5}
    assert checkpoint_position(world / "sft", world / "sft")["step"] == 0
    with pytest.raises(RecordError, match=r"rm_body/exoflow_params.json: no checkpoint step"):
        checkpoint_position(world / "rm_body", world / "sft")


def test_mismatched_prompts_are_refused(world, tmp_path):
    recs = read_records(world / "other.jsonl")
    write_records(tmp_path / "short.jsonl", recs[:3])
    with pytest.raises(ValueError, match="same prompts"):
        eval_checkpoint(tmp_path / "short.jsonl", world / "sft.jsonl", world / "rm", world / "sft",
                        world / "other", tmp_path / "r.json", tmp_path / "r.jsonl", run="x",
                        ckpt=1, scoring=SCORING, rm_layout=RM_LAYOUT, gold=False,
                        device="cpu")


def test_eval_dataset(world, tmp_path):
    s = eval_dataset(world / "pref.jsonl", world / "rm", tmp_path / "reward.json",
                     tmp_path / "rewards.jsonl", num_prompts=4, score_batch_size=4,
                     rm_layout=RM_LAYOUT, gold=True, device="cpu")
    assert s["num_prompts"] == 4
    assert s["chosen"]["reward"]["count"] == 4 and s["rejected"]["reward"]["count"] == 4
    assert 0.0 <= s["accuracy"] <= 1.0
    assert s["gold_accuracy"] == 1.0  # the oracle answer beats an off-topic remark
    assert s["chosen"]["gold"]["mean"] > s["rejected"]["gold"]["mean"]
    assert s["rejected"]["length_chars"] == len(" The weather is nice.")
    recs = read_records(tmp_path / "rewards.jsonl")
    assert len(recs) == 4 and all(len(r["rewards"]) == 2 for r in recs)


# ---- CLI -------------------------------------------------------------------------------

def test_eval_clis(world, tmp_path, capsys):
    scoring = json.dumps(dict(SAMPLE, num_prompts=4, checkpoints=3, score_batch_size=4))
    layout = json.dumps(RM_LAYOUT.to_dict())
    script_module("eval_checkpoint").main([
        "--samples", str(world / "other.jsonl"), "--sft-samples", str(world / "sft.jsonl"),
        "--rm", str(world / "rm"), "--sft", str(world / "sft"), "--policy", str(world / "other"),
        "--summary", str(tmp_path / "c" / "reward.json"),
        "--rewards", str(tmp_path / "c" / "r.jsonl"), "--run", "exo", "--ckpt", "3",
        "--gold", "true", "--scoring", scoring, "--rm-layout", layout,
        "--threads", "1"])
    s = read_json(tmp_path / "c" / "reward.json")
    # the step, epoch and lr the checkpoint itself records (the plan cannot know them)
    assert (s["run"], s["ckpt"], s["step"], s["epoch"], s["lr"]) == ("exo", 3, 60, 0.625, 2.5e-5)
    assert "gold" in s
    assert s["kl_exact"] > 0  # another model than SFT: a positive exact KL
    script_module("eval_dataset").main([
        "--rm", str(world / "rm"), "--pairs", str(world / "pref.jsonl"), "--num-prompts", "3",
        "--summary", str(tmp_path / "d" / "reward.json"),
        "--rewards", str(tmp_path / "d" / "r.jsonl"), "--score-batch-size", "4",
        "--rm-layout", layout, "--gold", "false", "--threads", "1"])
    s = read_json(tmp_path / "d" / "reward.json")
    assert s["num_prompts"] == 3 and "gold" not in s["chosen"]
    from exoflow.cli import run

    with pytest.raises(SystemExit):
        run(script_module("eval_dataset").main, [
            "--rm", str(world / "rm"), "--pairs", str(world / "pref.jsonl"),
            "--summary", str(tmp_path / "x.json"), "--rewards", str(tmp_path / "x.jsonl"),
            "--score-batch-size", "4", "--rm-layout", '{"max_lenn": 3}', "--gold", "false"])
    assert "error: --rm-layout.max_lenn: unknown key (did you mean 'max_len'?)" in \
        capsys.readouterr().err
