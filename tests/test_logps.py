"""Tests for exoflow.logps.response_logps against a slow explicit loop and hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch

from exoflow.logps import response_logps


def _slow(logits, input_ids, loss_mask, temperature):
    """One position at a time: Σ_t mask[t] · log softmax(logits[t-1] / τ)[input_ids[t]]."""
    b, t, _ = logits.shape
    out = []
    for i in range(b):
        total = logits.new_zeros((), dtype=torch.float64)
        for j in range(1, t):
            if loss_mask[i, j]:
                row = logits[i, j - 1].double() / temperature
                total = total + float(loss_mask[i, j]) * torch.log_softmax(row, -1)[input_ids[i, j]]
        out.append(total)
    return torch.stack(out)


def _batch(seed=0, v=13, dtype=torch.float64):
    """B = 4, T = 8. Row 0 right-padded, row 1 left-padded, row 2 no padding, row 3 all prompt."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(4, 8, v, generator=g, dtype=torch.float64)
    ids = torch.randint(0, v, (4, 8), generator=g)
    mask = torch.tensor(
        [
            [0, 0, 1, 1, 1, 0, 0, 0],  # prompt 2, response 3, right padding 3
            [0, 0, 0, 0, 1, 1, 1, 1],  # left padding 2, prompt 2, response 4
            [0, 1, 1, 1, 1, 1, 1, 1],  # prompt 1, response 7
            [0, 0, 0, 0, 0, 0, 0, 0],  # no response
        ]
    )
    ids[0, 5:] = -100  # padding ids that must never be read
    ids[1, :2] = -100
    return logits.to(dtype), ids, mask


@pytest.mark.parametrize("temperature", [1.0, 0.8, 2.5])
def test_matches_slow_loop(temperature):
    logits, ids, mask = _batch()
    got = response_logps(logits, ids, mask, temperature=temperature)
    assert got.shape == (4,) and got.dtype == torch.float64
    torch.testing.assert_close(got, _slow(logits, ids, mask, temperature), atol=1e-10, rtol=0)
    assert got[3].item() == 0.0


def test_gradient_matches_slow_loop():
    logits, ids, mask = _batch(seed=3)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    (response_logps(a, ids, mask, temperature=0.8) * w).sum().backward()
    (_slow(b, ids, mask, 0.8) * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0)
    # the last position's logits predict nothing; masked positions get no gradient
    assert a.grad[:, -1].abs().max() == 0
    assert a.grad[3].abs().max() == 0 and a.grad[0, 4:].abs().max() == 0


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_chunking_does_not_change_result(chunk_size):
    logits, ids, mask = _batch(seed=5)
    torch.testing.assert_close(
        response_logps(logits, ids, mask, 0.8, chunk_size=chunk_size),
        response_logps(logits, ids, mask, 0.8),
        atol=1e-12,
        rtol=0,
    )


def test_hand_built_exact():
    # V = 3, T = 4, one sequence: ids = [2, 0, 1, 2], mask = [0, 1, 0, 1] (token 2 is
    # "prompt" in the middle, to check the mask is applied per position, with the shift).
    # logits[0] = [2, 0, 0]  predicts ids[1] = 0; at τ = 2: z = [1, 0, 0] -> 1 − log(e + 2)
    # logits[1] = anything   predicts ids[2] = 1, masked out
    # logits[2] = [0, 4, 2]  predicts ids[3] = 2; at τ = 2: z = [0, 2, 1] -> 1 − log(1 + e² + e)
    # logits[3] = anything   predicts nothing
    logits = torch.tensor([[[2.0, 0.0, 0.0], [9.0, -9.0, 5.0], [0.0, 4.0, 2.0], [7.0, 7.0, 7.0]]])
    ids = torch.tensor([[2, 0, 1, 2]])
    expected = (1 - math.log(math.e + 2)) + (1 - math.log(1 + math.e**2 + math.e))  # = −1.9590507
    for mask in (
        torch.tensor([[0, 1, 0, 1]]),
        torch.tensor([[False, True, False, True]]),
        torch.tensor([[0.0, 1.0, 0.0, 1.0]]),
    ):
        got = response_logps(logits, ids, mask, temperature=2.0)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected, abs=1e-6)
    # τ = 1: log softmax([2,0,0])[0] + log softmax([0,4,2])[2]
    exp1 = (2 - math.log(math.e**2 + 2)) + (2 - math.log(1 + math.e**4 + math.e**2))
    assert response_logps(logits, ids, torch.tensor([[0, 1, 0, 1]])).item() == pytest.approx(
        exp1, abs=1e-6
    )
    # only the last token
    exp_last = 2 - math.log(1 + math.e**4 + math.e**2)
    assert response_logps(logits, ids, torch.tensor([[0, 0, 0, 1]])).item() == pytest.approx(
        exp_last, abs=1e-6
    )


def test_bf16_logits_give_fp32_close_to_exact():
    logits, ids, mask = _batch(seed=7, dtype=torch.bfloat16)
    got = response_logps(logits, ids, mask, temperature=0.8)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), _slow(logits.double(), ids, mask, 0.8), atol=1e-4, rtol=0
    )


def test_errors():
    logits, ids, mask = _batch()
    bad = mask.clone()
    bad[2, 0] = 1
    with pytest.raises(ValueError, match=r"loss_mask\[:, 0\]"):
        response_logps(logits, ids, bad)
    oov = ids.clone()
    oov[2, 3] = 99
    with pytest.raises(ValueError, match="outside the vocabulary"):
        response_logps(logits, oov, mask)
    with pytest.raises(ValueError, match="must both be"):
        response_logps(logits, ids[:, 1:], mask)
    with pytest.raises(ValueError, match="temperature"):
        response_logps(logits, ids, mask, temperature=0.0)


def test_no_response_tokens_keeps_graph():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    out = response_logps(logits, torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5))
    assert out.tolist() == [0.0, 0.0]
    out.sum().backward()
    assert logits.grad is not None and logits.grad.abs().max() == 0


# ---------------------------------------------------------------- model_response_logps


def _tiny_neox(seed=0, v=37):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=v, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return GPTNeoXForCausalLM(cfg).double().eval()


class _FullLogits(torch.nn.Module):
    """A causal LM whose forward ignores logits_to_keep (returns every position's logits)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, use_cache=False, logits_to_keep=0):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_model_response_logps_equals_full_logits_and_gradient(temperature):
    from exoflow.logps import model_response_logps

    model = _tiny_neox()
    _, ids, mask = _batch(seed=3, v=37)
    ids = ids.clamp(min=0)  # the model reads every id; padding is masked by attention_mask
    attn = torch.tensor([[1] * 5 + [0] * 3, [0, 0] + [1] * 6, [1] * 8, [1] * 8])
    full = model(input_ids=ids, attention_mask=attn).logits
    want = response_logps(full, ids, mask, temperature)
    assert full.shape == (4, 8, 37)
    got = model_response_logps(model, ids, attn, mask, temperature)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert got[3].item() == 0.0 and got[0].item() < 0

    # the same gradient for every parameter, LM head included
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    (want * w).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (model_response_logps(model, ids, attn, mask, temperature) * w).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-9, atol=1e-12, msg=n)
    assert ref["lm_head.weight"].abs().sum() > 0


def test_model_response_logps_fallback_and_empty_mask():
    from exoflow.logps import model_response_logps

    model = _tiny_neox(seed=1)
    _, ids, mask = _batch(seed=4, v=37)
    ids = ids.clamp(min=0)
    attn = torch.ones_like(ids)
    want = model_response_logps(model, ids, attn, mask, 0.8)
    torch.testing.assert_close(model_response_logps(_FullLogits(model), ids, attn, mask, 0.8),
                               want, rtol=0, atol=1e-10)
    zero = model_response_logps(model, ids, attn, torch.zeros_like(mask), 0.8)
    assert zero.tolist() == [0.0] * 4 and zero.requires_grad
    with pytest.raises(ValueError, match="first token"):
        model_response_logps(model, ids, attn, torch.ones_like(mask), 0.8)
