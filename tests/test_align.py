"""Alignment: collation, K/N checks, checkpoints, resuming, every loss on a tiny model.

The "SFT model" here is the engine tests' random 2-layer, hidden-64 GPT-NeoX; the data are
their hand-written prompts with K = 2 ([chosen, rejected], rewards [1, 0], as p2r) or K = 4
candidates with real-valued rewards (as rm_labels).
"""

import math
import random

import pytest
import torch
import yaml

from exoflow.align import batch_loss
from exoflow.align_data import AlignCollator, check_num_candidates, encode_align
from exoflow.config import AlignParams
from exoflow.errors import ParamsError
from exoflow.io import read_json
from exoflow.losses import make_loss
from exoflow.modeling import load_causal_lm, load_tokenizer
from exoflow.workdir import PARAMS_FILE
from tests.helpers import (
    ALIGN_METRICS,
    ROOT,
    Killed,
    align_params,
    k4_records,
    p2r_records,
    run_align,
    step_callbacks,
)

# --- params and data --------------------------------------------------------------------------


def test_shipped_runs_resolve_to_valid_params():
    """Every run of config.yaml and configs/tiny.yaml (merged over it, as Snakemake does)."""
    base = yaml.safe_load((ROOT / "config.yaml").read_text())["align"]
    tiny_cfg = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())["align"]
    merged = {"defaults": {**base["defaults"], **tiny_cfg.get("defaults", {})},
              "runs": tiny_cfg.get("runs", base["runs"])}
    for cfg in (base, merged):
        for run, entry in cfg["runs"].items():
            p = AlignParams.from_dict({**cfg["defaults"], **entry})
            assert p.num_checkpoints >= 1, run


def test_bad_params_are_refused():
    with pytest.raises(ParamsError, match="must be a loss's name or a mapping"):
        align_params(loss=3)
    # the name itself is checked where the losses are known (the plan, the training job)
    p = align_params(loss="ipoo")
    with pytest.raises(ParamsError, match=r"unknown loss 'ipoo' \(did you mean 'ipo'\?\)"):
        make_loss(p.loss, p.to_dict())
    with pytest.raises(ParamsError, match="max_steps 4 is not a multiple of save_every 5"):
        align_params(save_every=5)
    with pytest.raises(ParamsError, match="max_steps 5 is not a multiple of save_every 4"):
        align_params(max_steps=5, save_every=4)
    with pytest.raises(ParamsError, match=r"align.defaults.beta: unknown key"):
        AlignParams.from_dict({**align_params().to_dict(), "beta": 0.1})
    assert align_params(max_steps=180, save_every=9).num_checkpoints == 20


def test_collator_exact_tensors():
    features = [
        {"input_ids": [[5, 6, 7, 0], [5, 6, 8]], "n_prompt": [2, 2], "rewards": [1.0, 0.0],
         "ref_logps": [-3.5, -2.25]},
        {"input_ids": [[9, 10], [9, 11, 12, 13, 0]], "n_prompt": [1, 1], "rewards": [0.2, 0.7],
         "ref_logps": [-1.0, -4.0]},
    ]
    b = AlignCollator(pad_id=1)(features)
    assert torch.equal(b["input_ids"], torch.tensor([[5, 6, 7, 0, 1],
                                                     [5, 6, 8, 1, 1],
                                                     [9, 10, 1, 1, 1],
                                                     [9, 11, 12, 13, 0]]))
    assert torch.equal(b["attention_mask"], torch.tensor([[1, 1, 1, 1, 0],
                                                          [1, 1, 1, 0, 0],
                                                          [1, 1, 0, 0, 0],
                                                          [1, 1, 1, 1, 1]]))
    assert torch.equal(b["loss_mask"], torch.tensor([[0, 0, 1, 1, 0],
                                                     [0, 0, 1, 0, 0],
                                                     [0, 1, 0, 0, 0],
                                                     [0, 1, 1, 1, 1]]))
    assert torch.equal(b["rewards"], torch.tensor([[1.0, 0.0], [0.2, 0.7]]))
    assert torch.equal(b["ref_logps"], torch.tensor([[-3.5, -2.25], [-1.0, -4.0]]))
    assert b["rewards"].dtype == b["ref_logps"].dtype == torch.float32

    del features[1]["ref_logps"]  # only when every prompt has them
    assert "ref_logps" not in AlignCollator(pad_id=1)(features)
    # an empty prompt: position 0 has no logits predicting it, so it is never scored
    b = AlignCollator(pad_id=1)([{"input_ids": [[4, 0], [4, 5]], "n_prompt": [0, 0],
                                  "rewards": [0.0, 1.0]}])
    assert torch.equal(b["loss_mask"], torch.tensor([[0, 1], [0, 1]]))


def test_encode_align_layout(align_data):
    tok = load_tokenizer(align_data.sft)
    rec = k4_records(1)[0]
    (f,) = encode_align(tok, [rec], max_len=64, max_gen_len=5)
    prompt = tok(rec["prompt"], add_special_tokens=False)["input_ids"]
    assert f["rewards"] == rec["rewards"] and len(f["input_ids"]) == 4
    for ids, n, y in zip(f["input_ids"], f["n_prompt"], rec["completions"]):  # order kept
        resp = tok(y, add_special_tokens=False)["input_ids"][:5]
        assert ids == prompt[-n:] + resp + [tok.eos_token_id] and len(ids) <= 64


def test_k_not_a_multiple_of_n_is_refused(align_data):
    msg = r"K=2 completions, which is not a multiple of num_contrastive N=4"
    with pytest.raises(ParamsError, match=msg):
        check_num_candidates(p2r_records(), 4)
    with pytest.raises(ParamsError, match=msg):  # before any model is loaded
        run_align(align_data, "k2n4", align_params(num_contrastive=4), train=align_data.p2r, ref_cache=None)
    uneven = p2r_records(2)
    uneven[1]["completions"].append("x")
    uneven[1]["rewards"].append(0.0)
    with pytest.raises(ParamsError, match="different numbers of completions"):
        check_num_candidates(uneven, 2)
    assert check_num_candidates(k4_records(), 4) == 4


@pytest.mark.parametrize("n", [2, 4])
def test_k4_in_groups_of_n(align_data, n):
    tok = load_tokenizer(align_data.sft)
    model = load_causal_lm(align_data.sft)
    feats = encode_align(tok, k4_records(3), 64, 24)
    batch = AlignCollator(tok.pad_token_id)(feats)
    assert batch["input_ids"].shape[0] == 12  # 3 prompts x 4 candidates
    loss, metrics = batch_loss(model, batch, align_params(num_contrastive=n), ref_model=model)
    assert math.isfinite(loss.item()) and set(metrics) == set(ALIGN_METRICS)
    loss.backward()
    assert model.gpt_neox.embed_in.weight.grad is not None


# --- a short run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(align_data):
    return run_align(align_data, "short", align_params(), engine=dict(checkpoint_every=2))


def _params(folder):
    return dict(load_causal_lm(folder).named_parameters())


def test_short_run_writes_loadable_checkpoints(align_data, short_run):
    metrics, d = short_run
    out = d / "out"
    assert sorted(p.name for p in out.iterdir()) == ["ckpt1", "ckpt2", "metrics.json"]
    assert read_json(out / "metrics.json") == metrics
    assert metrics["global_step"] == 4 and metrics["checkpoint_steps"] == [2, 4]
    assert metrics["ref_logps"] == "cache" and metrics["num_candidates"] == 4
    curve = metrics["loss_curve"]
    assert [e["step"] for e in curve] == [1, 2, 3, 4]
    assert all(math.isfinite(e["loss"]) for e in curve) and set(ALIGN_METRICS) <= set(curve[0])
    sft = _params(align_data.sft)
    ckpts = [_params(out / f"ckpt{k}") for k in (1, 2)]
    for name, p in sft.items():
        assert not torch.equal(p, ckpts[0][name]), f"{name} unchanged at ckpt1"
        assert not torch.equal(ckpts[0][name], ckpts[1][name]), f"{name} unchanged at ckpt2"
    for k in (1, 2):
        stamp = read_json(out / f"ckpt{k}" / PARAMS_FILE)
        assert (stamp["checkpoint"], stamp["step"], stamp["stage"]) == (k, 2 * k, "align")
        assert stamp["params"] == align_params().to_dict()
        assert load_tokenizer(out / f"ckpt{k}").eos_token_id == load_tokenizer(align_data.sft).eos_token_id
    work = d / "work"
    assert not list(work.glob("checkpoint-*")) and not list(work.glob("ckpt*"))


def test_original_schedule_records_each_checkpoints_step_and_lr(align_data):
    """The original's schedule on 16 prompts, 1 process, micro-batches of 1 prompt, 2 per
    optimizer step: 16 micro-batches per epoch, saves_per_epoch 5 saves every 16 // 5 = 3
    micro-batches, i.e. after optimizer steps floor(3k / 2) = 1, 3, 4; the cosine decays over
    one epoch (8 steps) while the run stops at 5. Random batch order, EOS before the cut and the
    reference run in every step (the K=4 cache was made with EOS after the cut: refused)."""
    from exoflow.refcache import RefCacheError

    p = align_params(batch_size=2, micro_batch_size=1, max_steps=5, save_every=None,
                     saves_per_epoch=5, checkpoints=3, lr_horizon="epoch", group_by_length=False,
                     eos_after_cut=False)
    with pytest.raises(RefCacheError, match="eos_after_cut: cache True, run False"):
        run_align(align_data, "orig_cached", p)
    metrics, d = run_align(align_data, "orig", p, ref_cache=None)
    assert metrics["global_step"] == 5 and metrics["lr_horizon_steps"] == 8
    hand = {1: 1e-3, 3: 1e-3 * 0.5 * (1 + math.cos(math.pi * 2 / 8)),
            4: 1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 8))}
    assert metrics["checkpoint_steps"] == [1, 3, 4]
    for k, step in enumerate((1, 3, 4), start=1):
        stamp = read_json(d / "out" / f"ckpt{k}" / PARAMS_FILE)
        assert (stamp["checkpoint"], stamp["step"], stamp["micro_step"]) == (k, step, 3 * k)
        assert stamp["lr"] == pytest.approx(hand[step], rel=1e-9)  # read from the optimizer
        assert stamp["epoch"] == pytest.approx(step * 2 / 16)
        assert metrics["checkpoints"][k - 1]["lr"] == pytest.approx(hand[step], rel=1e-12)
    a, b = _params(d / "out" / "ckpt2"), _params(d / "out" / "ckpt3")
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_metrics_reach_tensorboard(short_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, d = short_run
    acc = EventAccumulator(str(d / "logs"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/rewards/margins", "train/kl/reverse"} <= tags
    assert [e.step for e in acc.Scalars("train/rewards/accuracies")] == [1, 2, 3, 4]


def test_killed_run_resumes(align_data, short_run):
    ref, ref_dir = short_run
    with pytest.raises(Killed):
        run_align(align_data, "killed", align_params(), engine=dict(checkpoint_every=2),
                  callbacks=step_callbacks(kill_at=3))
    work = align_data.root / "killed" / "work"
    assert sorted(p.name for p in work.iterdir() if p.is_dir()) == ["checkpoint-2", "ckpt1"]
    assert not (align_data.root / "killed" / "out").exists()

    seen = []
    res, d = run_align(align_data, "killed", align_params(), engine=dict(checkpoint_every=2),
                       callbacks=step_callbacks(seen=seen))
    assert res["resumed_from"] == str(work / "checkpoint-2") and seen == [3, 4]
    assert [e["step"] for e in res["loss_curve"]] == [1, 2, 3, 4]
    for a, b in zip(res["loss_curve"], ref["loss_curve"]):
        assert set(a) == set(b) and set(ALIGN_METRICS) <= set(a)
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert res["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)
    for k in (1, 2):
        a, b = _params(ref_dir / "out" / f"ckpt{k}"), _params(d / "out" / f"ckpt{k}")
        for name in a:
            assert (a[name] - b[name]).abs().max().item() < 1e-5, (k, name)


# --- every loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["exo-rw", "dpo-rw", "exo-pref", "dpo-pref"])
def test_every_loss_trains(align_data, loss):
    """One step with the reference model run on the fly: finite loss, every parameter moved."""
    train = align_data.p2r if loss.endswith("pref") else align_data.k4
    params = align_params(loss=loss, max_steps=1, save_every=1)
    m, d = run_align(align_data, f"loss_{loss}", params, train=train, ref_cache=None)
    assert m["ref_logps"] == "model" and math.isfinite(m["loss_curve"][0]["loss"])
    assert m["loss_curve"][0]["logratio/mean"] == pytest.approx(0.0, abs=1e-5)  # policy = ref
    sft, new = _params(align_data.sft), _params(d / "out" / "ckpt1")
    for name, p in sft.items():
        assert not torch.equal(p, new[name]), f"{loss}: {name} unchanged"


# --- length-grouped batches ---------------------------------------------------------------------


def test_length_grouped_sampler_is_seeded_and_pads_less():
    from exoflow.trainer import SeededLengthGroupedSampler as _length_grouped_sampler

    rng = random.Random(0)
    lengths = [rng.randint(20, 500) for _ in range(400)]
    s = _length_grouped_sampler(8, lengths, seed=7)
    order = list(s)
    assert sorted(order) == list(range(400))                       # a permutation
    assert list(_length_grouped_sampler(8, lengths, seed=7)) == order  # same seed, same order
    s.set_epoch(1)
    assert list(s) != order                                          # a new order each epoch
    s.set_epoch(0)
    assert list(s) == order                                          # and epoch 0 again on resume
    assert list(_length_grouped_sampler(8, lengths, seed=8)) != order

    def padded(idx):  # tokens of right-padded batches of 8
        return sum(8 * max(lengths[i] for i in idx[j:j + 8]) for j in range(0, len(idx), 8))

    random_order = rng.sample(range(400), 400)
    assert padded(order) < 0.8 * padded(random_order)
    assert padded(order) >= sum(lengths)
