"""LoRA (model.lora) through peft: merged saves, adapters-disabled reference, parameter counts,
resuming, and the rules passing model.lora to every training stage."""

import copy

import pytest
import torch

from exoflow.config import LoraParams, RMParams, SFTParams
from exoflow.errors import ParamsError
from exoflow.io import read_json
from exoflow.lora import apply_lora, merged_state_dict
from exoflow.modeling import load_causal_lm, load_reward_model, load_tokenizer
from exoflow.plan import Plan
from exoflow.rm import train_rm
from exoflow.sft import train_sft
from tests.helpers import (
    ALIGN_METRICS,
    ROOT,
    Killed,
    align_params,
    make_align_data,
    make_data,
    run_align,
    step_callbacks,
    tiny_runtime,
    tiny_stage,
)

LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_align_data(tmp_path_factory.mktemp("lora"))


def perturbed(model, seed=0):
    """Adapters with B != 0 (peft starts B at 0, which would make every merge trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            if "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.mark.parametrize("task", ["CAUSAL_LM", "SEQ_CLS"])
def test_merged_save_is_a_plain_model_with_the_same_outputs(tiny, tmp_path, task):
    """merged_state_dict equals peft's own merge_and_unload (on a copy), leaves the live model
    untouched, and the folder it saves loads as the plain Auto class with the LoRA model's
    outputs."""
    tok = load_tokenizer(tiny.sft)
    if task == "CAUSAL_LM":
        base = load_causal_lm(tiny.sft)
    else:
        base = load_reward_model(str(tiny.sft), pad_token_id=tok.pad_token_id)
    model = perturbed(apply_lora(base, LORA, task)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = merged_state_dict(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    want = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(sd) == set(want)
    for k in want:
        assert torch.allclose(sd[k], want[k], atol=1e-6), k
    assert not any("lora" in k for k in sd)

    model.get_base_model().save_pretrained(str(tmp_path / "m"), state_dict=sd)
    plain = (load_causal_lm(tmp_path / "m") if task == "CAUSAL_LM" else
             load_reward_model(str(tmp_path / "m"), pad_token_id=tok.pad_token_id)).eval()
    assert type(plain).__name__.startswith("GPTNeoXFor")
    ids = torch.tensor([tok("\n\nHuman: tea?\n\nAssistant: Sure.", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, plain(input_ids=ids).logits
        c = base.__class__.from_pretrained(str(tiny.sft), **({} if task == "CAUSAL_LM" else
                                                              {"num_labels": 1}))(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    if task == "CAUSAL_LM":
        assert (a - c).abs().max() > 1e-3  # the adapters did change the model


def test_lora_params_are_checked(tiny):
    with pytest.raises(ParamsError, match="rank must be >= 1"):
        LoraParams.from_dict({"rank": 0})
    with pytest.raises(ParamsError, match=r"no such module; its linear layers are \["):
        apply_lora(load_causal_lm(tiny.sft), {"target_modules": ["q_proj"]}, "CAUSAL_LM")


def test_sft_and_rm_with_lora(tiny, tmp_path):
    """Only the adapters (and the RM's new head) train; the saved models are plain folders whose
    untargeted weights (the embeddings) are the base's, whose targeted ones moved."""
    train, test = make_data(tmp_path / "data")
    eng = tiny_runtime(lora=LORA, checkpoint_every=100)
    sft = train_sft(str(tiny.sft), train, test, tmp_path / "sft", tmp_path / "w1", tmp_path / "l1",
                    SFTParams.from_dict(tiny_stage(epochs=1)), eng)
    rm = train_rm(str(tiny.sft), train, test, tmp_path / "rm", tmp_path / "w2", tmp_path / "l2",
                  RMParams.from_dict(tiny_stage(epochs=1)), eng)
    base = load_causal_lm(tiny.sft)
    n_base = sum(p.numel() for p in base.parameters())
    # 2 layers x 4 target modules x rank 4 x (in + out) of hidden 64 / MLP 128
    adapters = 2 * 4 * ((64 + 192) + (64 + 64) + (64 + 128) + (128 + 64))
    assert sft["run"]["lora"] and sft["run"]["trainable_params"] == adapters
    assert sft["run"]["total_params"] == n_base + adapters
    assert rm["run"]["trainable_params"] == adapters + 64  # + the scalar head, trained in full
    for folder in ("sft", "rm"):
        assert not list((tmp_path / folder).glob("adapter_*"))
    trained = load_causal_lm(tmp_path / "sft")
    sd, b = trained.state_dict(), base.state_dict()
    assert torch.equal(sd["gpt_neox.embed_in.weight"], b["gpt_neox.embed_in.weight"])
    assert not torch.equal(sd["gpt_neox.layers.0.attention.query_key_value.weight"],
                           b["gpt_neox.layers.0.attention.query_key_value.weight"])
    assert sft["loss_curve"][-1]["loss"] < sft["loss_curve"][0]["loss"]


def test_lora_alignment_reference_is_the_policy_with_adapters_disabled(tiny):
    """Without a cache the reference is the LoRA policy with its adapters off: every step's
    loss and metrics equal those of the same run against the cache of the SFT model (a second
    model), and the checkpoints load as plain models."""
    p = align_params()
    cached, _ = run_align(tiny, "lora_cache", p, engine=dict(lora=LORA, checkpoint_every=100))
    off, d = run_align(tiny, "lora_off", p, ref_cache=None, engine=dict(lora=LORA, checkpoint_every=100))
    assert off["ref_logps"] == "adapters disabled" and cached["ref_logps"] == "cache"
    assert off["run"]["lora"] and off["run"]["trainable_params"] < off["run"]["total_params"] / 10
    for a, b in zip(off["loss_curve"], cached["loss_curve"]):
        for key in ["loss", *ALIGN_METRICS]:
            assert a[key] == pytest.approx(b[key], abs=1e-4), (a["step"], key)
    assert off["loss_curve"][0]["logratio/mean"] == pytest.approx(0, abs=1e-5)  # B starts at 0
    ckpt = load_causal_lm(d / "out" / "ckpt2")
    assert read_json(d / "out" / "ckpt2" / "config.json")["architectures"] == ["GPTNeoXForCausalLM"]
    assert not list((d / "out" / "ckpt2").glob("adapter_*")) and ckpt is not None


def test_killed_lora_run_resumes(tiny):
    """The Trainer checkpoint of a LoRA run holds the adapters; the resumed run ends where an
    uninterrupted one does."""
    eng = dict(lora=LORA, checkpoint_every=2)
    ref, _ = run_align(tiny, "lora_ref", align_params(), engine=eng)
    with pytest.raises(Killed):
        run_align(tiny, "lora_killed", align_params(), engine=eng, callbacks=step_callbacks(kill_at=3))
    res, _ = run_align(tiny, "lora_killed", align_params(), engine=eng)
    assert res["resumed_from"] is not None
    for a, b in zip(res["loss_curve"], ref["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]


def test_model_lora_reaches_every_training_rule():
    import yaml

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    plan = Plan(dict(cfg, model=dict(cfg["model"], lora={"rank": 16})))
    assert plan.runtime().lora == LoraParams(rank=16)
    assert plan.runtime("exo-rw_nc2").lora == LoraParams(rank=16)
    assert Plan(cfg).runtime().lora is None
