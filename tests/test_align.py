"""Alignment: collation, K/N checks, checkpoints, resuming, every loss on a tiny model.

The "SFT model" here is the engine tests' random 2-layer, hidden-64 GPT-NeoX; the data are
their hand-written prompts with K = 2 ([chosen, rejected], rewards [1, 0], as p2r) or K = 4
candidates with real-valued rewards (as rm_labels).
"""

import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from exoflow.align import AlignParams, batch_loss, train_align
from exoflow.align_data import AlignCollator, check_num_candidates, encode_align
from exoflow.engine import PARAMS_FILE, ParamsError
from exoflow.io import read_json, write_records
from exoflow.modeling import load_causal_lm, load_tokenizer
from exoflow.refcache import precompute_ref
from tests.test_engine import make_base, make_records, tiny_engine

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
           "logps/policy", "logps/ref", "logratio/mean", "probs/chosen", "kl/reverse", "kl/forward"]


def p2r_records(n=16):
    return [{"prompt": r["prompt"], "completions": [r["chosen"], r["rejected"]], "rewards": [1.0, 0.0]}
            for r in make_records(n)]


def k4_records(n=16):
    out = []
    for i, r in enumerate(make_records(n)):
        out.append({"prompt": r["prompt"],
                    "completions": [r["chosen"], r["rejected"], r["chosen"] + " Thanks.", " Maybe."],
                    "rewards": [1.0 + 0.1 * i, -1.0, 0.5 - 0.2 * (i % 3), 0.1 * (i % 5)]})
    return out


def align_params(**kw) -> AlignParams:
    """16 prompts, 4 per step in 2 micro-batches of 2: 4 steps per epoch."""
    d = dict(loss="exo-rw", data="rm_labels", lr=1e-3, batch_size=4, micro_batch_size=2,
             max_steps=4, save_every=2, max_len=64, max_gen_len=24, temp=0.8)
    d.update(kw)
    return AlignParams.from_dict(d)


def make_tiny(root: Path) -> SimpleNamespace:
    """Data (p2r-like K=2, rm_labels-like K=4), an "SFT" model and the K=4 reference cache."""
    root.mkdir(parents=True, exist_ok=True)
    write_records(root / "p2r.jsonl", p2r_records())
    write_records(root / "k4.jsonl", k4_records())
    sft = make_base(root / "sft")
    p = align_params()
    cache = root / "ref_k4.jsonl"
    precompute_ref(sft, root / "k4.jsonl", cache, p.temp, p.max_len, p.max_gen_len,
                   batch_size=8, progress=False)
    return SimpleNamespace(root=root, sft=sft, p2r=root / "p2r.jsonl", k4=root / "k4.jsonl",
                           cache=cache)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("align"))


def run_align(tiny, name, params, **kw):
    d = tiny.root / name
    kw.setdefault("ref_cache", tiny.cache)
    m = train_align(tiny.sft, kw.pop("train", tiny.k4), d / "out", d / "work", d / "logs", params,
                    tiny_engine(**kw.pop("engine", {})), **kw)
    return m, d


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
    with pytest.raises(ParamsError, match="use one of"):
        align_params(loss="ipo")
    with pytest.raises(ParamsError, match="max_steps 4 is not a multiple of save_every 5"):
        align_params(save_every=5)
    with pytest.raises(ParamsError, match="max_steps 5 is not a multiple of save_every 4"):
        align_params(max_steps=5, save_every=4)
    with pytest.raises(ParamsError, match=r"unknown key\(s\) \['beta'\]"):
        AlignParams.from_dict({**align_params().to_dict(), "beta": 0.1})
    assert align_params(max_steps=180, save_every=9).checkpoint_steps()[-1] == 180


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


def test_encode_align_layout(tiny):
    tok = load_tokenizer(tiny.sft)
    rec = k4_records(1)[0]
    (f,) = encode_align(tok, [rec], max_len=64, max_gen_len=5)
    prompt = tok(rec["prompt"], add_special_tokens=False)["input_ids"]
    assert f["rewards"] == rec["rewards"] and len(f["input_ids"]) == 4
    for ids, n, y in zip(f["input_ids"], f["n_prompt"], rec["completions"]):  # order kept
        resp = tok(y, add_special_tokens=False)["input_ids"][:5]
        assert ids == prompt[-n:] + resp + [tok.eos_token_id] and len(ids) <= 64


def test_k_not_a_multiple_of_n_is_refused(tiny):
    msg = r"K=2 completions, which is not a multiple of num_contrastive N=4"
    with pytest.raises(ParamsError, match=msg):
        check_num_candidates(p2r_records(), 4)
    with pytest.raises(ParamsError, match=msg):  # before any model is loaded
        run_align(tiny, "k2n4", align_params(num_contrastive=4), train=tiny.p2r, ref_cache=None)
    uneven = p2r_records(2)
    uneven[1]["completions"].append("x")
    uneven[1]["rewards"].append(0.0)
    with pytest.raises(ParamsError, match="different numbers of completions"):
        check_num_candidates(uneven, 2)
    assert check_num_candidates(k4_records(), 4) == 4


@pytest.mark.parametrize("n", [2, 4])
def test_k4_in_groups_of_n(tiny, n):
    tok = load_tokenizer(tiny.sft)
    model = load_causal_lm(tiny.sft)
    feats = encode_align(tok, k4_records(3), 64, 24)
    batch = AlignCollator(tok.pad_token_id)(feats)
    assert batch["input_ids"].shape[0] == 12  # 3 prompts x 4 candidates
    loss, metrics = batch_loss(model, batch, align_params(num_contrastive=n), ref_model=model)
    assert math.isfinite(loss.item()) and set(metrics) == set(METRICS)
    loss.backward()
    assert model.gpt_neox.embed_in.weight.grad is not None


# --- a short run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(tiny):
    return run_align(tiny, "short", align_params(), engine=dict(checkpoint_every=2))


def _params(folder):
    return dict(load_causal_lm(folder).named_parameters())


def test_short_run_writes_loadable_checkpoints(tiny, short_run):
    metrics, d = short_run
    out = d / "out"
    assert sorted(p.name for p in out.iterdir()) == ["ckpt1", "ckpt2", "train_metrics.json"]
    assert read_json(out / "train_metrics.json") == metrics
    assert metrics["global_step"] == 4 and metrics["checkpoint_steps"] == [2, 4]
    assert metrics["ref_logps"] == "cache" and metrics["num_candidates"] == 4
    curve = metrics["loss_curve"]
    assert [e["step"] for e in curve] == [1, 2, 3, 4]
    assert all(math.isfinite(e["loss"]) for e in curve) and set(METRICS) <= set(curve[0])
    sft = _params(tiny.sft)
    ckpts = [_params(out / f"ckpt{k}") for k in (1, 2)]
    for name, p in sft.items():
        assert not torch.equal(p, ckpts[0][name]), f"{name} unchanged at ckpt1"
        assert not torch.equal(ckpts[0][name], ckpts[1][name]), f"{name} unchanged at ckpt2"
    for k in (1, 2):
        stamp = read_json(out / f"ckpt{k}" / PARAMS_FILE)
        assert (stamp["checkpoint"], stamp["step"], stamp["stage"]) == (k, 2 * k, "align")
        assert stamp["align"] == align_params().to_dict()
        assert load_tokenizer(out / f"ckpt{k}").eos_token_id == load_tokenizer(tiny.sft).eos_token_id
    work = d / "work"
    assert not list(work.glob("checkpoint-*")) and not list(work.glob("ckpt*"))


def test_metrics_reach_tensorboard(short_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, d = short_run
    acc = EventAccumulator(str(d / "logs"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/rewards/margins", "train/kl/reverse"} <= tags
    assert [e.step for e in acc.Scalars("train/rewards/accuracies")] == [1, 2, 3, 4]


class Killed(RuntimeError):
    pass


def _callbacks(kill_at=None, seen=None):
    from transformers import TrainerCallback

    class Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if seen is not None:
                seen.append(state.global_step)
            if state.global_step == kill_at:
                raise Killed(f"killed at step {kill_at}")

    return [Cb()]


def test_killed_run_resumes(tiny, short_run):
    ref, ref_dir = short_run
    with pytest.raises(Killed):
        run_align(tiny, "killed", align_params(), engine=dict(checkpoint_every=2),
                  callbacks=_callbacks(kill_at=3))
    work = tiny.root / "killed" / "work"
    assert sorted(p.name for p in work.iterdir() if p.is_dir()) == ["checkpoint-2", "ckpt1"]
    assert not (tiny.root / "killed" / "out").exists()

    seen = []
    res, d = run_align(tiny, "killed", align_params(), engine=dict(checkpoint_every=2),
                       callbacks=_callbacks(seen=seen))
    assert res["resumed_from"] == str(work / "checkpoint-2") and seen == [3, 4]
    assert [e["step"] for e in res["loss_curve"]] == [1, 2, 3, 4]
    for a, b in zip(res["loss_curve"], ref["loss_curve"]):
        assert set(a) == set(b) and set(METRICS) <= set(a)
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert res["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)
    for k in (1, 2):
        a, b = _params(ref_dir / "out" / f"ckpt{k}"), _params(d / "out" / f"ckpt{k}")
        for name in a:
            assert (a[name] - b[name]).abs().max().item() < 1e-5, (k, name)


# --- every loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["exo-rw", "dpo-rw", "exo-pref", "dpo-pref"])
def test_every_loss_trains(tiny, loss):
    """One step with the reference model run on the fly: finite loss, every parameter moved."""
    train = tiny.p2r if loss.endswith("pref") else tiny.k4
    params = align_params(loss=loss, max_steps=1, save_every=1)
    m, d = run_align(tiny, f"loss_{loss}", params, train=train, ref_cache=None)
    assert m["ref_logps"] == "model" and math.isfinite(m["loss_curve"][0]["loss"])
    assert m["loss_curve"][0]["logratio/mean"] == pytest.approx(0.0, abs=1e-5)  # policy = ref
    sft, new = _params(tiny.sft), _params(d / "out" / "ckpt1")
    for name, p in sft.items():
        assert not torch.equal(p, new[name]), f"{loss}: {name} unchanged"


# --- length-grouped batches ---------------------------------------------------------------------


def test_length_grouped_sampler_is_seeded_and_pads_less():
    from exoflow.engine import length_grouped_sampler as _length_grouped_sampler

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
