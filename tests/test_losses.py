"""Tests for exoflow.losses: hand-computed values, gradients, and agreement with trl.

Expected values are computed here with plain ``math`` (helpers ``_logsumexp`` /
``_log_softmax`` below), never with the code under test; the numbers in the comments
were worked out by hand / with those helpers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from exoflow.losses import (
    LOSSES,
    alignment_loss,
    dpo_loss,
    exo_loss,
    group_candidates,
    target_log_q,
)

LOG_EPS = -10.0
PAPER = ("exo-pref", "exo-rw", "dpo-pref", "dpo-rw")  # the EXO paper's, for any N
PAIRWISE = ("ipo", "cdpo", "rdpo")


# ----------------------------------------------------------------- plain-math reference
def _logsumexp(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _log_softmax(xs):
    z = _logsumexp(xs)
    return [x - z for x in xs]


def _ref_group_losses(policy, ref, rewards, beta_pi, beta_r, log_eps=LOG_EPS):
    """The four losses of one group, from the spec, in plain Python."""
    s = [beta_pi * (a - b) for a, b in zip(policy, ref, strict=True)]
    lp = _log_softmax(s)
    p = [math.exp(x) for x in lp]
    lq_rw = _log_softmax([r / beta_r for r in rewards])
    w = max(range(len(rewards)), key=lambda i: (rewards[i], -i))  # first highest
    lq_pref = [0.0 if i == w else log_eps for i in range(len(rewards))]
    return {
        "exo-rw": sum(pi * (a - b) for pi, a, b in zip(p, lp, lq_rw, strict=True)),
        "dpo-rw": -sum(math.exp(b) * a for a, b in zip(lp, lq_rw, strict=True)),
        "exo-pref": sum(pi * (a - b) for pi, a, b in zip(p, lp, lq_pref, strict=True)),
        "dpo-pref": -lp[w],
    }


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


# ----------------------------------------------------------------- N = 2, by hand
# policy = [-1, -2], ref = [-1.5, -1]  ->  ℓ = [0.5, -1];  β_π = 2  ->  s = [1, -2]
# p̂ = softmax(s) = [1/(1+e^-3), e^-3/(1+e^-3)] = [0.9525741268, 0.0474258732]
# log p̂ = [-0.0485873516, -3.0485873516]
# rewards = [1, 0], β_r = 0.5 -> r/β_r = [2, 0] -> q = [1/(1+e^-2), ...] = [0.8807970780, 0.1192029220]
# exo-rw   = Σ p̂ (log p̂ − log q) = 0.9525741·(−0.0485874+0.1269280) + 0.0474259·(−3.0485874+2.1269280)
#          = 0.0309147863
# dpo-rw   = −Σ q log p̂ = 0.8807971·0.0485874 + 0.1192029·3.0485874 = 0.4061961176
# exo-pref = p̂_w log p̂_w + p̂_l (log p̂_l + 10) = 0.9525741·(−0.0485874) + 0.0474259·6.9514126
#          = 0.2833937607
# dpo-pref = −log p̂_w = log(1 + e^-3) = 0.0485873516
N2 = dict(policy=[-1.0, -2.0], ref=[-1.5, -1.0], rewards=[1.0, 0.0], beta_pi=2.0, beta_r=0.5)
N2_EXPECTED = {
    "exo-rw": 0.0309147863,
    "dpo-rw": 0.4061961176,
    "exo-pref": 0.2833937607,
    "dpo-pref": 0.0485873516,
}

# ----------------------------------------------------------------- N = 4, by hand, G = 2
# group A: ℓ = [0, 1, -1, 0], β_π = 1 -> s = ℓ; Z = 2 + e + 1/e = 5.0861612696
#   p̂ = [1/Z, e/Z, e^-1/Z, 1/Z] = [0.1966119, 0.5344466, 0.0723295, 0.1966119]
#   rewards = [0.5, 0, -1, 2] (winner = index 3), β_r = 1
#   q = softmax(r) = [0.1584447, 0.0961016, 0.0353538, 0.7100999]
#   exo-rw = 0.7587430196, dpo-rw = 1.5657755943
#   exo-pref = Σ p̂ log p̂ + 10·(1 − p̂_3) = −1.1766 + 8.0339 = 6.8694744498
#   dpo-pref = −log p̂_3 = log Z = 1.6265233750
# group B: ℓ = 0 -> p̂ = 1/4 each; rewards = [3, 1, 1, 1] (winner = index 0), β_r = 1
#   q = [e^2, 1, 1, 1]/(e^2 + 3) = [0.7112346, 0.0962551 ×3]
#   exo-rw = −log 4 − ¼ Σ log q = 0.4544585928
#   dpo-rw = −Σ q log ¼ = log 4 = 1.3862943611
#   exo-pref = −log 4 + ¾·10 = 6.1137056389
#   dpo-pref = log 4 = 1.3862943611
# batch loss = mean over the two groups.
N4_A = dict(
    policy=[-2.0, -1.0, -3.0, -2.0], ref=[-2.0, -2.0, -2.0, -2.0], rewards=[0.5, 0.0, -1.0, 2.0]
)
N4_B = dict(
    policy=[-1.0, -1.0, -1.0, -1.0], ref=[-1.0, -1.0, -1.0, -1.0], rewards=[3.0, 1.0, 1.0, 1.0]
)
N4_EXPECTED_A = {
    "exo-rw": 0.7587430196,
    "dpo-rw": 1.5657755943,
    "exo-pref": 6.8694744498,
    "dpo-pref": 1.6265233750,
}
N4_EXPECTED_B = {
    "exo-rw": 0.4544585928,
    "dpo-rw": math.log(4),
    "exo-pref": 7.5 - math.log(4),
    "dpo-pref": math.log(4),
}


def test_registry_names():
    assert set(LOSSES) == {"exo-pref", "exo-rw", "dpo-pref", "dpo-rw", "ipo", "cdpo", "rdpo"}


@pytest.mark.parametrize("loss_type", sorted(N2_EXPECTED))
def test_n2_hand_computed(loss_type):
    ref_val = _ref_group_losses(**N2)[loss_type]
    assert ref_val == pytest.approx(N2_EXPECTED[loss_type], abs=1e-9)  # comment arithmetic
    loss, _ = alignment_loss(
        loss_type,
        _t([N2["policy"]]),
        _t([N2["ref"]]),
        _t([N2["rewards"]]),
        beta_pi=N2["beta_pi"],
        beta_r=N2["beta_r"],
        pref_log_eps=LOG_EPS,
    )
    assert loss.shape == ()
    assert loss.item() == pytest.approx(N2_EXPECTED[loss_type], abs=1e-9)


@pytest.mark.parametrize("loss_type", sorted(N4_EXPECTED_A))
def test_n4_hand_computed_two_groups(loss_type):
    for grp, exp in ((N4_A, N4_EXPECTED_A), (N4_B, N4_EXPECTED_B)):
        assert _ref_group_losses(**grp, beta_pi=1.0, beta_r=1.0)[loss_type] == pytest.approx(
            exp[loss_type], abs=1e-9
        )
    # one prompt with K = 8 candidates, split into two groups of N = 4
    pol = group_candidates(_t([N4_A["policy"] + N4_B["policy"]]), 4)
    ref = group_candidates(_t([N4_A["ref"] + N4_B["ref"]]), 4)
    rew = group_candidates(_t([N4_A["rewards"] + N4_B["rewards"]]), 4)
    assert pol.shape == (2, 4)
    loss, _ = alignment_loss(loss_type, pol, ref, rew, beta_pi=1.0, beta_r=1.0)
    expected = 0.5 * (N4_EXPECTED_A[loss_type] + N4_EXPECTED_B[loss_type])
    assert loss.item() == pytest.approx(expected, abs=1e-9)


def test_random_groups_match_plain_python():
    g = torch.Generator().manual_seed(0)
    pol = -5 * torch.rand(3, 4, generator=g, dtype=torch.float64)
    ref = -5 * torch.rand(3, 4, generator=g, dtype=torch.float64)
    rew = torch.randn(3, 4, generator=g, dtype=torch.float64)
    for loss_type in PAPER:
        loss, _ = alignment_loss(
            loss_type, pol, ref, rew, beta_pi=0.7, beta_r=0.3, pref_log_eps=-8.0
        )
        exp = (
            sum(
                _ref_group_losses(
                    pol[i].tolist(), ref[i].tolist(), rew[i].tolist(), 0.7, 0.3, -8.0
                )[loss_type]
                for i in range(3)
            )
            / 3
        )
        assert loss.item() == pytest.approx(exp, abs=1e-9), loss_type


def test_pref_target_unnormalised_and_first_tie():
    lq = target_log_q(_t([[0.0, 2.0, 1.0], [1.0, 1.0, 0.0]]), "pref", beta_r=1.0, log_eps=-10.0)
    assert lq.tolist() == [[-10.0, 0.0, -10.0], [0.0, -10.0, -10.0]]
    one_hot = target_log_q(_t([[0.0, 2.0]]), "pref", 1.0, float("-inf")).exp()
    assert one_hot.tolist() == [[0.0, 1.0]]
    # integer 0/1 preference labels work too
    assert target_log_q(torch.tensor([[0, 1]]), "pref", 1.0, -10.0).tolist() == [[-10.0, 0.0]]
    with pytest.raises(ValueError, match="kind"):
        target_log_q(_t([[0.0, 1.0]]), "bogus", 1.0)


def test_exo_rw_zero_at_target_and_shift_invariant():
    rew = _t([[0.3, -1.0, 2.0, 0.0]])
    lq = target_log_q(rew, "rw", beta_r=0.5)
    # p̂ == q  ->  KL = 0, whatever constant is added to s
    assert exo_loss(lq + 3.0, lq).item() == pytest.approx(0.0, abs=1e-12)
    s = _t([[0.1, 0.2, -0.3, 0.4]])
    assert exo_loss(s + 5.0, lq).item() == pytest.approx(exo_loss(s, lq).item(), abs=1e-12)
    assert dpo_loss(s + 5.0, lq).item() == pytest.approx(dpo_loss(s, lq).item(), abs=1e-12)
    # DPO at p̂ == q is the target's entropy
    q = [math.exp(x) for x in _log_softmax([0.6, -2.0, 4.0, 0.0])]
    assert dpo_loss(lq, lq).item() == pytest.approx(-sum(x * math.log(x) for x in q), abs=1e-12)


@pytest.mark.parametrize("loss_type", PAPER)
def test_gradient_signs(loss_type):
    # From ℓ = 0 (p̂ uniform) raising the best candidate's ℓ must lower the loss,
    # raising the worst's must raise it; the reference's gradient is the opposite.
    pol = _t([[-3.0, -2.0, -4.0, -1.0], [-1.0, -1.0, -1.0, -1.0]]).requires_grad_()
    ref = pol.detach().clone().requires_grad_()
    rew = _t([[0.5, 2.0, -1.0, 0.0], [0.0, -1.0, 1.0, 0.5]])  # best: 1 and 2, worst: 2 and 1
    loss, _ = alignment_loss(loss_type, pol, ref, rew, beta_pi=0.5, beta_r=1.0)
    loss.backward()
    best, worst = rew.argmax(-1), rew.argmin(-1)
    assert (pol.grad[torch.arange(2), best] < 0).all()
    assert (pol.grad[torch.arange(2), worst] > 0).all()
    assert torch.allclose(ref.grad, -pol.grad)
    # finite step on the winner's ℓ lowers the loss
    with torch.no_grad():
        bumped = pol.detach().clone()
        bumped[torch.arange(2), best] += 0.1
        assert alignment_loss(loss_type, bumped, ref.detach(), rew, 0.5, 1.0)[0] < loss


@pytest.mark.parametrize("loss_type", ["exo-pref", "dpo-pref"])
def test_pref_gradient_sign_far_from_uniform(loss_type):
    # Even when the policy already prefers the winner, more ℓ on the winner still helps.
    pol = _t([[0.0, -1.0], [-1.0, 0.0]]).requires_grad_()
    ref = torch.zeros(2, 2, dtype=torch.float64)
    rew = _t([[1.0, 0.0], [0.0, 1.0]])
    alignment_loss(loss_type, pol, ref, rew, beta_pi=1.0, beta_r=1.0)[0].backward()
    assert pol.grad[0, 0] < 0 and pol.grad[1, 1] < 0
    assert pol.grad[0, 1] > 0 and pol.grad[1, 0] > 0


def test_metrics_named_and_detached():
    pol = _t([N2["policy"]]).requires_grad_()
    loss, m = alignment_loss("exo-pref", pol, _t([N2["ref"]]), _t([N2["rewards"]]), 2.0, 0.5)
    assert set(m) >= {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/policy",
        "logps/ref",
        "kl/reverse",
        "kl/forward",
    }
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())
    assert m["rewards/chosen"].item() == pytest.approx(1.0)  # s = [1, -2]
    assert m["rewards/rejected"].item() == pytest.approx(-2.0)
    assert m["rewards/margins"].item() == pytest.approx(3.0)
    assert m["rewards/accuracies"].item() == 1.0
    assert m["logps/policy"].item() == pytest.approx(-1.5)
    assert m["kl/reverse"].item() >= 0 and m["kl/forward"].item() >= 0
    # ties in s (ℓ = 0) do not count as accurate
    _, m0 = alignment_loss(
        "dpo-rw", _t([[-1.0, -1.0]]), _t([[-1.0, -1.0]]), _t([[1.0, 0.0]]), 1.0, 1.0
    )
    assert m0["rewards/accuracies"].item() == 0.0


def test_low_precision_inputs_computed_in_fp32():
    pol = torch.tensor([[-1.0, -2.0]], dtype=torch.bfloat16, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.bfloat16)
    loss, _ = alignment_loss("dpo-pref", pol, ref, torch.tensor([[1, 0]]), 2.0, 0.5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(N2_EXPECTED["dpo-pref"], abs=1e-6)
    loss.backward()
    assert pol.grad is not None and pol.grad.dtype == torch.bfloat16


def test_group_candidates():
    x = torch.arange(16).reshape(2, 8)
    g = group_candidates(x, 4)
    assert g.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert group_candidates(torch.arange(4), 2).tolist() == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match=r"K=6 .*not a multiple of num_contrastive N=4"):
        group_candidates(torch.zeros(3, 6), 4)
    with pytest.raises(ValueError, match="at least 2"):
        group_candidates(torch.zeros(3, 6), 1)


def test_bad_arguments():
    a = _t([[0.0, 1.0]])
    with pytest.raises(ValueError, match="unknown loss_type"):
        alignment_loss("ppo", a, a, a, 1.0, 1.0)
    with pytest.raises(ValueError, match="ref_logps has shape"):
        alignment_loss("exo-rw", a, _t([[0.0, 1.0, 2.0]]), a, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"\(G, N\)"):
        alignment_loss("exo-rw", a[0], a[0], a[0], 1.0, 1.0)
    with pytest.raises(ValueError, match="beta_pi"):
        alignment_loss("exo-rw", a, a, a, 0.0, 1.0)
    with pytest.raises(ValueError, match="beta_r"):
        alignment_loss("exo-rw", a, a, a, 1.0, 0.0)
    with pytest.raises(ValueError, match="pref_log_eps"):
        alignment_loss("exo-pref", a, a, a, 1.0, 1.0, pref_log_eps=float("-inf"))


# ----------------------------------------------------------------- trl's own loss code
# trl 1.x computes the DPO losses inline in DPOTrainer._compute_loss (no model-free
# `dpo_loss` method). We call that real method on a stand-in `self` and a stand-in model
# whose output `.log_probs` are our summed log-probs (one completion token per sequence),
# with precomputed reference log-probs, so trl's own `sigmoid` / `exo_pair` branches run.
trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")


@contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _trl_loss(loss_type, chosen, rejected, ref_chosen, ref_rejected, beta, label_smoothing=0.0):
    """trl's DPOTrainer._compute_loss on pairs; chosen/rejected are (G,) policy log-probs."""
    g = chosen.shape[0]

    def model(**kwargs):
        assert kwargs["labels"].shape == (2 * g, 2)
        zeros = torch.zeros(2 * g, 1)
        return SimpleNamespace(
            log_probs=torch.cat([chosen, rejected]).unsqueeze(1),  # batch is [chosen, rejected]
            entropy=zeros,
            mean_logits=zeros,
            is_top1=zeros.bool(),
        )

    ident = lambda x: x  # noqa: E731
    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=False),
        accelerator=SimpleNamespace(
            device=torch.device("cpu"), gather=ident, gather_for_metrics=ident
        ),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    mask = torch.ones(2 * g, 2, dtype=torch.long)
    mask[:, 0] = 0  # token 0 is "prompt", token 1 the completion
    inputs = {
        "input_ids": torch.zeros(2 * g, 2, dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return trl_dpo.DPOTrainer._compute_loss(fake_self, model, inputs, False)


def _pairs(seed=1, g=5):
    gen = torch.Generator().manual_seed(seed)
    pol = -20 * torch.rand(g, 2, generator=gen, dtype=torch.float64)
    ref = -20 * torch.rand(g, 2, generator=gen, dtype=torch.float64)
    winner = torch.tensor([0, 1, 0, 1, 1][:g])  # winner in either column
    rew = torch.nn.functional.one_hot(winner, 2).double()
    return pol, ref, rew, winner


def _ours_and_trl(loss_type, trl_type, beta, label_smoothing=0.0):
    pol, ref, rew, winner = _pairs()
    ar = torch.arange(pol.shape[0])
    ours_pol = pol.clone().requires_grad_()
    ours, _ = alignment_loss(
        loss_type, ours_pol, ref, rew, beta_pi=beta, beta_r=1.0, pref_log_eps=LOG_EPS
    )
    ours.backward()
    ch = pol[ar, winner].clone().requires_grad_()
    rj = pol[ar, 1 - winner].clone().requires_grad_()
    with _default_dtype(
        torch.float64
    ):  # trl builds torch.tensor(label_smoothing) in the default dtype
        theirs = _trl_loss(
            trl_type, ch, rj, ref[ar, winner], ref[ar, 1 - winner], beta, label_smoothing
        )
    theirs.backward()
    our_grad_ch, our_grad_rj = ours_pol.grad[ar, winner], ours_pol.grad[ar, 1 - winner]
    # trl averages over pairs like we average over groups
    p_w = torch.sigmoid(beta * ((pol - ref)[ar, winner] - (pol - ref)[ar, 1 - winner]))
    return ours, theirs, (our_grad_ch, our_grad_rj), (ch.grad, rj.grad), p_w


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_pref_equals_trl_sigmoid(beta):
    # dpo-pref, N = 2 (τ = 1: the log-probs are just numbers here) == −log σ(β(ℓ_w − ℓ_l)).
    ours, theirs, g_ours, g_trl, _ = _ours_and_trl("dpo-pref", "sigmoid", beta)
    assert abs(ours.item() - theirs.item()) < 1e-4
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-10)
    for a, b in zip(g_ours, g_trl, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_exo_pref_matches_trl_exo_pair(beta):
    """exo-pref vs trl ``exo_pair`` with label_smoothing ε = e^-10.

    trl's target is the *normalised* [1 − ε, ε]; ours (like the original EXO code) is the
    unnormalised log q = [0, log ε]. Per pair,
        trl − ours = −p̂_w · log(1 − ε) = p̂_w · 4.54e-5,
    so values agree to < 4.6e-5 and gradients to < 4.6e-5 · β/4 — within 1e-4, not exact.
    """
    eps = math.exp(LOG_EPS)
    ours, theirs, g_ours, g_trl, p_w = _ours_and_trl(
        "exo-pref", "exo_pair", beta, label_smoothing=eps
    )
    assert abs(ours.item() - theirs.item()) < 1e-4
    offset = (-p_w * math.log1p(-eps)).mean().item()  # the exact, documented difference
    assert theirs.item() - ours.item() == pytest.approx(offset, abs=1e-12)
    for a, b in zip(g_ours, g_trl, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_exo_pref_equals_trl_exo_pair_with_normalised_eps(beta):
    """With trl's label_smoothing = ε/(1+ε), trl's target [1/(1+ε), ε/(1+ε)] is exactly our
    q = [1, ε] normalised, so ours = trl − log(1 + ε) (a true constant, 4.54e-5) and the
    gradients are identical."""
    eps = math.exp(LOG_EPS)
    ours, theirs, g_ours, g_trl, _ = _ours_and_trl(
        "exo-pref", "exo_pair", beta, label_smoothing=eps / (1 + eps)
    )
    assert theirs.item() - ours.item() == pytest.approx(math.log1p(eps), abs=1e-12)
    for a, b in zip(g_ours, g_trl, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


# ----------------------------------------------------------------- the pairwise losses
def _log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def test_pairwise_losses_by_hand():
    """Two pairs, the winner in either column: h = ℓ_w − ℓ_l = 1.5 and −0.5."""
    pol = _t([[-3.0, -5.0], [-4.0, -2.0]])
    ref = _t([[-3.5, -4.0], [-3.0, -1.5]])  # ℓ = [0.5, -1.0], [-1.0, -0.5]
    rew = _t([[1.0, 0.0], [0.0, 1.0]])
    h = [0.5 - (-1.0), -0.5 - (-1.0)]
    assert h == [1.5, 0.5]
    tau, beta, eps = 0.25, 0.5, 0.1
    ipo = sum((x - 1 / (2 * tau)) ** 2 for x in h) / 2
    cdpo = sum(-(1 - eps) * _log_sigmoid(beta * x) - eps * _log_sigmoid(-beta * x) for x in h) / 2
    rdpo = sum((-(1 - eps) * _log_sigmoid(beta * x) + eps * _log_sigmoid(-beta * x))
               / (1 - 2 * eps) for x in h) / 2
    for loss, want in (({"name": "ipo", "tau": tau}, ipo),
                       ({"name": "cdpo", "label_smoothing": eps}, cdpo),
                       ({"name": "rdpo", "label_smoothing": eps}, rdpo)):
        got, metrics = alignment_loss(loss, pol, ref, rew, beta_pi=beta, beta_r=1.0)
        assert got.item() == pytest.approx(want, abs=1e-12), loss["name"]
        assert metrics["rewards/accuracies"].item() == 1.0
    # cdpo and rdpo at ε = 0 are DPO
    dpo = alignment_loss("dpo-pref", pol, ref, rew, beta_pi=beta, beta_r=1.0)[0].item()
    for name in ("cdpo", "rdpo"):
        got = alignment_loss({"name": name, "label_smoothing": 0.0}, pol, ref, rew, beta, 1.0)
        assert got[0].item() == pytest.approx(dpo, abs=1e-12)


@pytest.mark.parametrize("loss_type", PAIRWISE)
def test_pairwise_gradient_signs(loss_type):
    pol = _t([[-3.0, -2.0], [-1.0, -1.0]]).requires_grad_()
    ref = pol.detach().clone()
    rew = _t([[0.5, 2.0], [1.0, -1.0]])
    alignment_loss(loss_type, pol, ref, rew, beta_pi=0.5, beta_r=1.0)[0].backward()
    best, worst = rew.argmax(-1), rew.argmin(-1)
    assert (pol.grad[torch.arange(2), best] < 0).all()
    assert (pol.grad[torch.arange(2), worst] > 0).all()


def test_a_pairwise_loss_takes_pairs_only():
    four = _t([[-1.0, -2.0, -3.0, -4.0]])
    with pytest.raises(ValueError, match="groups of 2"):
        alignment_loss("ipo", four, four, four, beta_pi=0.5, beta_r=1.0)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_ipo_equals_trl_ipo(tau):
    """trl divides each ℓ by its completion's tokens before IPO's square; with one completion
    token per sequence (the harness) that is the summed form of the paper, ours."""
    # trl's beta is IPO's τ; the run's beta_pi (the same number here) is unused by IPO
    ours, theirs, g_ours, g_trl, _ = _ours_and_trl({"name": "ipo", "tau": tau}, "ipo", tau)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-10)
    for a, b in zip(g_ours, g_trl, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_robust_dpo_equals_trl_robust(eps):
    ours, theirs, g_ours, g_trl, _ = _ours_and_trl({"name": "rdpo", "label_smoothing": eps},
                                                   "robust", 0.5, label_smoothing=eps)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-10)
    for a, b in zip(g_ours, g_trl, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_conservative_dpo_equals_trls_label_smoothed_sigmoid(eps):
    """trl 1.16's ``sigmoid`` no longer applies label_smoothing; its ``aot`` computes the
    conservative-DPO expression −(1−ε) log σ(βh) − ε log σ(−βh) on margins sorted over the
    batch, which for a batch of one pair is that pair's: compared pair by pair."""
    pol, ref, rew, winner = _pairs()
    for i in range(pol.shape[0]):
        w, lo = int(winner[i]), 1 - int(winner[i])
        ours_pol = pol[i:i + 1].clone().requires_grad_()
        ours, _ = alignment_loss({"name": "cdpo", "label_smoothing": eps}, ours_pol,
                                 ref[i:i + 1], rew[i:i + 1], beta_pi=0.5, beta_r=1.0)
        ours.backward()
        ch = pol[i, w].reshape(1).clone().requires_grad_()
        rj = pol[i, lo].reshape(1).clone().requires_grad_()
        with _default_dtype(torch.float64):
            theirs = _trl_loss("aot", ch, rj, ref[i, w].reshape(1), ref[i, lo].reshape(1),
                               beta=0.5, label_smoothing=eps)
        theirs.backward()
        assert ours.item() == pytest.approx(theirs.item(), abs=1e-10)
        assert ours_pol.grad[0, w].item() == pytest.approx(ch.grad.item(), abs=1e-10)
        assert ours_pol.grad[0, lo].item() == pytest.approx(rj.grad.item(), abs=1e-10)
