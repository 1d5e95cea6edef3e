"""Reward model: BT loss, last-token reading under padding, training, reloading alone."""

import shutil
from types import SimpleNamespace

import pytest
import torch

from exoflow.batching import Encoded, pad_batch
from exoflow.config import RMParams
from exoflow.io import read_json, read_records
from exoflow.rm import (
    RewardTrainer,
    RMCollator,
    bt_loss,
    encode_rm,
    rewards,
    shorter_wins_accuracy,
)
from exoflow.workdir import PARAMS_FILE
from tests.helpers import tiny_stage, train_stage


def test_bt_loss_by_hand():
    """-log sigmoid(d) = log(1 + exp(-d)):
    d = 0.8 -> log(1.449329) = 0.371101; d = 0 -> log 2 = 0.693147; d = -3 -> log(21.085537) = 3.048587.
    """
    loss = bt_loss(torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.2, 0.0, 1.0]))
    assert torch.allclose(loss, torch.tensor([0.371101, 0.693147, 3.048587]), atol=1e-6)


def test_collator_puts_chosen_then_rejected_right_padded():
    feats = [{"chosen": [5, 6, 7], "rejected": [5, 8]}, {"chosen": [2], "rejected": [2, 3, 4, 9]}]
    b = RMCollator(pad_id=1)(feats)
    assert torch.equal(b["input_ids"], torch.tensor([[5, 6, 7, 1], [2, 1, 1, 1],
                                                     [5, 8, 1, 1], [2, 3, 4, 9]]))
    assert torch.equal(b["attention_mask"], torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0],
                                                          [1, 1, 0, 0], [1, 1, 1, 1]]))


def test_shorter_wins_by_hand():
    recs = [{"chosen": "ab", "rejected": "abc"},    # shorter chosen: right
            {"chosen": "abcd", "rejected": "a"},    # longer chosen: wrong
            {"chosen": "xy", "rejected": "zw"}]     # tie: half
    assert shorter_wins_accuracy(recs) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def rm_model(tiny):
    from exoflow.modeling import load_reward_model, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(tiny.base)
    model = load_reward_model(tiny.base, pad_token_id=tok.pad_token_id).eval()
    return SimpleNamespace(tok=tok, model=model)


def test_reward_reads_last_token_whatever_the_padding(rm_model):
    """GPT-NeoX's head finds the last token from input_ids != pad_token_id, so left padding is
    read right too (position ids shift, but rotary attention only sees relative positions).
    Our collators right-pad anyway."""
    tok, model = rm_model.tok, rm_model.model
    texts = ["Human: hi there. Assistant: Sure, tea is nice.", "Human: no. Assistant: No.",
             "Human: Tell me about maps, please. Assistant: Here is a short helpful note."]
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len({len(s) for s in seqs}) == 3 and all(tok.pad_token_id not in s for s in seqs)
    with torch.no_grad():
        alone = torch.cat([rewards(model, pad_batch([Encoded(s, 0)], tok.pad_token_id)) for s in seqs])
        right = rewards(model, pad_batch([Encoded(s, 0) for s in seqs], tok.pad_token_id, "right"))
        left = rewards(model, pad_batch([Encoded(s, 0) for s in seqs], tok.pad_token_id, "left"))
        # by hand: the scalar head on the last token's final hidden state
        hidden = [model.gpt_neox(input_ids=torch.tensor([s])).last_hidden_state[0, -1] for s in seqs]
        by_hand = torch.stack([model.score(h)[0] for h in hidden])
    assert torch.allclose(alone, by_hand, atol=1e-6)
    assert torch.allclose(right, alone, atol=1e-5)
    assert torch.allclose(left, alone, atol=1e-5)
    assert alone.std() > 1e-4  # the three rewards differ, so the check can fail


def test_compute_loss_pairs_chosen_with_their_rejected(rm_model):
    tok, model = rm_model.tok, rm_model.model
    recs = [{"prompt": "Human: tea? Assistant:", "chosen": " Yes, tea is nice.", "rejected": " No."},
            {"prompt": "Human: maps? Assistant:", "chosen": " Maps", "rejected": " I will not say."}]
    feats = encode_rm(tok, recs, max_len=64, max_gen_len=16)
    with torch.no_grad():
        r = {k: torch.cat([rewards(model, pad_batch([Encoded(f[k], 0)], tok.pad_token_id))
                           for f in feats]) for k in ("chosen", "rejected")}
        loss = RewardTrainer.compute_loss(SimpleNamespace(_sums=[0.0, 0.0, 0]), model,
                                             RMCollator(tok.pad_token_id)(feats))
    assert float(loss) == pytest.approx(float(bt_loss(r["chosen"], r["rejected"]).mean()), abs=1e-6)


@pytest.fixture(scope="module")
def rm_run(tiny, tmp_path_factory):
    return train_stage("rm", tiny, tmp_path_factory.mktemp("rm"), checkpoint_every=4)


def test_train_rm_end_to_end(rm_run):
    metrics, d = rm_run.metrics, rm_run.dir
    curve = metrics["loss_curve"]
    assert [e["step"] for e in curve] == list(range(1, 17))
    assert curve[-1]["loss"] < 0.2 < curve[0]["loss"]  # from ~log 2 to well below
    assert metrics["test_accuracy"] >= 0.9 and metrics["test_mean_margin"] > 0
    assert metrics["test_shorter_wins_accuracy"] == pytest.approx(5 / 16)  # see make_records
    assert (metrics["num_train"], metrics["num_test"], metrics["global_step"]) == (64, 16, 16)
    assert read_json(d / "out" / "metrics.json") == metrics
    assert read_json(d / "out" / PARAMS_FILE)["stage"] == "rm"
    assert list((d / "logs").glob("events.out.tfevents.*"))
    assert not list((d / "work").glob("checkpoint-*"))


def test_saved_rm_reloads_alone(rm_run, tmp_path):
    """Copied away from everything else, the folder gives the test accuracy and margin the
    trained model had in memory (metrics.json), to 1e-6."""
    from exoflow.modeling import load_reward_model, load_tokenizer

    folder = shutil.copytree(rm_run.dir / "out", tmp_path / "moved")
    cfg = read_json(folder / "config.json")
    assert len(cfg["id2label"]) == 1  # one scalar output
    tok = load_tokenizer(folder)
    assert cfg["pad_token_id"] == tok.pad_token_id
    model = load_reward_model(folder).eval()  # pad_token_id and head from the folder alone
    p = RMParams.from_dict(tiny_stage())
    feats = encode_rm(tok, read_records(rm_run.test), p.max_len, p.max_gen_len)
    with torch.no_grad():
        r = rewards(model, RMCollator(tok.pad_token_id)(feats))
    margin = r[:len(feats)] - r[len(feats):]
    assert float(margin.mean()) == pytest.approx(rm_run.metrics["test_mean_margin"], abs=1e-6)
    assert float((margin > 0).float().mean()) == pytest.approx(rm_run.metrics["test_accuracy"])
