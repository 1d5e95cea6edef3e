"""Reward scoring: batch invariance, order, label/eval files, summaries, CLI."""

import math
import random
from pathlib import Path

import pytest
import torch

from exoflow.config import LayoutParams
from exoflow.io import read_records, write_records
from exoflow.modeling import build_scratch_model, load_reward_model, train_tokenizer
from exoflow.rewards import label_file, load_scorer, score_texts
from exoflow.stats import summarize
from tests.helpers import script_module

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = "the cat dog sat on mat why how what is are you I can help with that sure no yes".split()
ROOT = Path(__file__).resolve().parents[1]
LAYOUT = LayoutParams(max_len=16, max_gen_len=8)


def words(rng, n):
    return " " + " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    """A saved 2-layer GPT-NeoX reward model (random body and head, saved so loads agree)."""
    rng = random.Random(0)
    d = tmp_path_factory.mktemp("rm")
    tok = train_tokenizer(["\n\nHuman:" + words(rng, 20) + "\n\nAssistant:" + words(rng, 8)
                           for _ in range(200)], 300, d, model_max_length=2048)
    build_scratch_model(dict(hidden_size=64, num_layers=2, num_heads=4,
                             max_position_embeddings=256), tok, seed=0).save_pretrained(d)
    torch.manual_seed(0)
    rm = load_reward_model(str(d), pad_token_id=tok.pad_token_id)
    with torch.no_grad():  # a head large enough that rewards are O(1), not O(0.01)
        rm.score.weight.normal_(0, 1.0)
    rm.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def scorer(rm_dir):
    return load_scorer(rm_dir, device="cpu")


@pytest.fixture(scope="module")
def pairs():
    rng = random.Random(2)
    lens = [(3, 1), (40, 20), (1, 2), (15, 60), (8, 8), (30, 3), (2, 30)]
    return [("\n\nHuman:" + words(rng, a) + "\n\nAssistant:", words(rng, b)) for a, b in lens]


def test_reward_alone_equals_reward_in_mixed_batch(scorer, pairs):
    model, tok = scorer
    ps, rs = [p for p, _ in pairs], [r for _, r in pairs]
    batched = score_texts(model, tok, ps, rs, batch_size=4, max_len=128, max_gen_len=64,
                          progress=False)
    alone = [score_texts(model, tok, [p], [r], 1, 128, 64, progress=False)[0] for p, r in pairs]
    assert batched == pytest.approx(alone, abs=1e-5)  # also: input order restored
    assert len(set(round(v, 4) for v in alone)) == len(alone)  # distinct, so order is tested
    assert max(abs(v) for v in alone) > 0.1


def test_reward_reads_last_response_token_without_eos(scorer):
    model, tok = scorer
    p, r = "\n\nHuman: hi\n\nAssistant:", " sure that is"
    ids = tok(p + r, add_special_tokens=False)["input_ids"]
    assert tok(p, add_special_tokens=False)["input_ids"] + tok(r, add_special_tokens=False)[
        "input_ids"] == ids
    with torch.no_grad():
        hidden = model.gpt_neox(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        hand = model.score(hidden).item()
    assert score_texts(model, tok, [p], [r], 1, 128, 64, progress=False)[0] == \
        pytest.approx(hand, abs=1e-5)


def test_mismatched_pad_id_is_refused(scorer):
    model, tok = scorer
    model.config.pad_token_id, keep = None, model.config.pad_token_id
    try:
        with pytest.raises(ValueError, match="pad_token_id"):
            score_texts(model, tok, ["a"], ["b"], 1, 16, 8, progress=False)
    finally:
        model.config.pad_token_id = keep


def test_label_file_adds_one_reward_per_completion(rm_dir, scorer, pairs, tmp_path):
    model, tok = scorer
    recs = [{"prompt": p, "completions": [r, r + " yes", " no"][: 1 + k % 3], "extra": k}
            for k, (p, r) in enumerate(pairs)]
    write_records(tmp_path / "s.jsonl", recs)
    assert label_file(rm_dir, tmp_path / "s.jsonl", tmp_path / "l.jsonl", batch_size=3,
                      layout=LayoutParams(max_len=128, max_gen_len=64)) == len(recs)
    out = read_records(tmp_path / "l.jsonl")
    for rec, o in zip(recs, out):
        assert {k: o[k] for k in rec} == rec
        assert len(o["rewards"]) == len(rec["completions"])
        alone = score_texts(model, tok, [rec["prompt"]] * len(rec["completions"]),
                            rec["completions"], 1, 128, 64, progress=False)
        assert o["rewards"] == pytest.approx(alone, abs=1e-5)


def test_mixed_or_unknown_records_are_refused(rm_dir, tmp_path):
    write_records(tmp_path / "m.jsonl", [{"prompt": "a", "completions": ["b"]},
                                         {"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(ValueError, match="mixes"):
        label_file(rm_dir, tmp_path / "m.jsonl", tmp_path / "o", 2, LAYOUT)
    write_records(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(ValueError, match="label mode needs sample records"):
        label_file(rm_dir, tmp_path / "p.jsonl", tmp_path / "o", 2, LAYOUT)


def test_summarize_by_hand():
    s = summarize([1, 2, 3, 4])
    std = math.sqrt(((1.5 ** 2) * 2 + (0.5 ** 2) * 2) / 3)  # ddof=1: 1.290994...
    assert s["mean"] == 2.5 and s["count"] == 4
    assert s["std"] == pytest.approx(1.2909944, abs=1e-6) == std
    assert s["ci95_low"] == pytest.approx(2.5 - 1.96 * std / 2)   # 1.234825
    assert s["ci95_high"] == pytest.approx(2.5 + 1.96 * std / 2)  # 3.765175
    assert summarize([0.7]) == {"mean": 0.7, "std": 0.0, "count": 1,
                                        "ci95_low": 0.7, "ci95_high": 0.7}
    with pytest.raises(ValueError):
        summarize([])


def test_label_rewards_cli(rm_dir, pairs, tmp_path):
    cli = script_module("label_rewards")
    write_records(tmp_path / "s.jsonl", [{"prompt": p, "completions": [r]} for p, r in pairs])
    common = ["--rm", str(rm_dir), "--samples", str(tmp_path / "s.jsonl"), "--batch-size", "4",
              "--rm-layout", '{"max_len": 128, "max_gen_len": 64}']
    cli.main(common + ["--labels", str(tmp_path / "l.jsonl")])
    assert [len(r["rewards"]) for r in read_records(tmp_path / "l.jsonl")] == [1] * len(pairs)
