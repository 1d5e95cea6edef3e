"""The tensor work of the alignment losses (:mod:`exoflow.losses`): groups, targets, the EXO
and DPO objectives, the pairwise margin, the batch mean and its metrics.

Reference: H. Ji et al., "Towards Efficient Exact Optimization of Language Model
Alignment", ICML 2024, arXiv:2402.00856 (§3 "Efficient exact optimization", §4 on DPO).
Original code: github.com/haozheji/exact-optimization, ``src/align_stage/loss.py``.

Everything here is a pure function of summed response log-probs and rewards; nothing
runs a model. The quantities, per prompt x and group of N candidates y_1..y_N:

* ℓ_i = log π_θ^τ(y_i|x) − log π_ref^τ(y_i|x): the summed log-ratio at temperature τ
  (see :func:`exoflow.logps.response_logps`; the caller passes both terms).
* s_i = β_π · ℓ_i and p̂ = softmax(s) — the paper's p_{f_θ}(i | y_{1:N}, x), the
  policy's implied distribution over the group.
* the target q, the paper's p_{r_{β_r}}(i | y_{1:N}, x): softmax(r / β_r) of the rewards
  for ``*-rw``; for ``*-pref``, log q = 0 for the highest-reward candidate and log ε for
  the others (unnormalised, as in the original code; log ε = ``align.pref_log_eps``).
* ``exo-*``  = KL(p̂ ‖ q) = Σ_i p̂_i (log p̂_i − log q_i)   (reverse KL, the EXO loss L_exo)
* ``dpo-*``  = −Σ_i q̄_i log p̂_i with q̄ the normalised target (one-hot winner for
  ``dpo-pref``): the DPO loss, a forward KL / cross-entropy (the paper's L_dpo; for
  N = 2 and a one-hot target it is DPO's −log σ(β_π(ℓ_w − ℓ_l))).

The batch loss is the mean over groups. Groups are rows of (G, N) tensors; turn a
record's K candidates into groups with :func:`group_candidates`.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor

__all__ = [
    "dpo_loss",
    "exo_loss",
    "group_candidates",
    "group_loss_mean",
    "logsigmoid",
    "pair_margin",
    "target_log_q",
]

TARGET_KINDS = ("rw", "pref")


# --------------------------------------------------------------------------- grouping
def group_candidates(x: Tensor, num_contrastive: int) -> Tensor:
    """Split each prompt's K candidates into contiguous groups of N = ``num_contrastive``.

    ``x`` is (B, K) (a 1-D (K,) tensor counts as B = 1); returns (B·K/N, N), the groups
    of prompt 0 first, candidates kept in their order. Raises :class:`ValueError` when
    K is not a multiple of N (or N < 2), naming both numbers.
    """
    if isinstance(num_contrastive, bool):
        raise ValueError(f"num_contrastive must be an integer, got {num_contrastive!r}")
    try:
        num_contrastive = operator.index(num_contrastive)
    except TypeError:
        raise ValueError(f"num_contrastive must be an integer, got {num_contrastive!r}") from None
    if num_contrastive < 2:
        raise ValueError(
            f"num_contrastive must be at least 2 (a group of one candidate "
            f"gives a constant loss), got {num_contrastive}"
        )
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"expected a (B, K) tensor of candidates, got shape {tuple(x.shape)}")
    b, k = x.shape
    if k == 0 or k % num_contrastive:
        raise ValueError(
            f"each prompt has K={k} candidates, which is not a multiple of "
            f"num_contrastive N={num_contrastive}: cannot split them into groups of N. "
            f"Use a num_contrastive that divides {k}, or generate a multiple of "
            f"{num_contrastive} candidates per prompt."
        )
    return x.reshape(b * (k // num_contrastive), num_contrastive)


# --------------------------------------------------------------------------- targets
def target_log_q(rewards: Tensor, kind: str, beta_r: float, log_eps: float | None = None) -> Tensor:
    """Log of the target distribution q over each group (the paper's p_{r_{β_r}}).

    ``rewards`` (G, N). ``kind="rw"``: log q = log_softmax(r / β_r) (normalised).
    ``kind="pref"``: log q_i = 0 for the candidate with the highest reward and ``log_eps``
    for the others — *unnormalised* (Σ q = 1 + (N−1)ε), exactly as the original
    ``exact_loss`` does; ``beta_r`` is unused. Ties go to the first highest
    (``torch.argmax``). ``log_eps=-inf`` gives the one-hot winner (used by ``dpo-pref``).
    Returns a detached (G, N) tensor: the target carries no gradient.
    """
    rewards = rewards.detach()
    if not rewards.is_floating_point():
        rewards = rewards.float()
    if kind == "rw":
        if not beta_r > 0:
            raise ValueError(f"beta_r must be > 0 for a reward target, got {beta_r}")
        return torch.log_softmax(rewards / beta_r, dim=-1)
    if kind == "pref":
        if log_eps is None or math.isnan(log_eps) or log_eps >= 0:
            raise ValueError(f"pref_log_eps must be negative (log of a small ε), got {log_eps}")
        winner = rewards.argmax(dim=-1, keepdim=True)
        log_q = torch.full_like(rewards, float(log_eps))
        return log_q.scatter(-1, winner, 0.0)
    raise ValueError(f"unknown target kind {kind!r}; expected one of {TARGET_KINDS}")


# --------------------------------------------------------------------------- losses
def exo_loss(logits_s: Tensor, log_q: Tensor) -> Tensor:
    """EXO: reverse KL from the policy's group distribution to the target, per group.

    ``logits_s`` (G, N) = β_π · ℓ; ``log_q`` (G, N) the target log-probabilities (may be
    unnormalised, as for ``exo-pref``). Returns (G,) Σ_i p̂_i (log p̂_i − log q_i) with
    p̂ = softmax(s): the paper's L_exo = E_x E_{y_{1:N}} KL(p_{f_θ} ‖ p_{r_{β_r}}).
    With an unnormalised q of total mass Z this is KL(p̂ ‖ q/Z) − log Z; the constant
    does not change gradients.
    """
    log_p = torch.log_softmax(logits_s, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def dpo_loss(logits_s: Tensor, log_q: Tensor) -> Tensor:
    """DPO (generalised to N candidates): cross-entropy of p̂ against the normalised target.

    Returns (G,) −Σ_i q̄_i log p̂_i with q̄ = softmax(log_q) and p̂ = softmax(logits_s):
    the paper's L_dpo, i.e. the forward KL KL(q̄ ‖ p̂) up to the target's entropy.
    For N = 2 and a one-hot winner (``log_q = [0, -inf]``) it is DPO's
    −log σ(β_π (ℓ_w − ℓ_l)) (Rafailov et al., 2023, Eq. 7).
    """
    q = torch.softmax(log_q, dim=-1)
    log_p = torch.log_softmax(logits_s, dim=-1)
    # q == 0 entries (one-hot target) contribute nothing, even where log p̂ = −inf.
    return -torch.where(q > 0, q * log_p, torch.zeros_like(log_p)).sum(dim=-1)


def pair_margin(logratios: Tensor, rewards: Tensor) -> Tensor:
    """h = ℓ_w − ℓ_l of each pair (G, 2): the winner has the higher reward (the first on a
    tie, as :func:`target_log_q`'s ``pref``). Returns (G,)."""
    if logratios.shape[-1] != 2:
        raise ValueError(f"a pairwise loss takes groups of 2 candidates, got {logratios.shape[-1]}")
    winner = rewards.argmax(dim=-1, keepdim=True)
    w = logratios.gather(-1, winner).squeeze(-1)
    return w - logratios.gather(-1, 1 - winner).squeeze(-1)


def logsigmoid(x: Tensor) -> Tensor:
    return torch.nn.functional.logsigmoid(x)


# --------------------------------------------------------------------------- entry point
def _check_inputs(policy_logps: Tensor, ref_logps: Tensor, rewards: Tensor) -> None:
    if policy_logps.dim() != 2:
        raise ValueError(
            f"policy_logps must be (G, N) — G groups of N candidates — got shape "
            f"{tuple(policy_logps.shape)}; use group_candidates() to split (B, K)"
        )
    for name, t in (("ref_logps", ref_logps), ("rewards", rewards)):
        if t.shape != policy_logps.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but policy_logps has "
                f"{tuple(policy_logps.shape)}; all three must be (G, N)"
            )
    if policy_logps.shape[1] < 2:
        raise ValueError(f"groups need at least 2 candidates, got N={policy_logps.shape[1]}")
    if policy_logps.shape[0] == 0:
        raise ValueError("no groups given (G=0)")


@torch.no_grad()
def _metrics(
    s: Tensor,
    policy_logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor,
    kind: str,
    beta_r: float,
    log_eps: float,
) -> dict[str, Tensor]:
    """Detached scalar metrics with stable names (trl-like for N = 2).

    "Chosen" is the highest-reward candidate of a group; "rejected" the others (averaged);
    accuracy counts groups where the chosen s is strictly above every other's.
    The KL metrics use the normalised ε-smoothed / reward target of ``kind`` so they are
    finite and comparable between EXO and DPO runs.
    """
    s = s.detach()
    n = s.shape[1]
    best = rewards.argmax(dim=-1, keepdim=True)
    is_best = torch.zeros_like(s, dtype=torch.bool).scatter(-1, best, True)
    chosen = s.gather(-1, best).squeeze(-1)
    rejected = s.masked_fill(is_best, 0.0).sum(-1) / (n - 1)
    others_max = s.masked_fill(is_best, float("-inf")).max(dim=-1).values
    log_p = torch.log_softmax(s, dim=-1)
    log_qn = torch.log_softmax(target_log_q(rewards, kind, beta_r, log_eps).to(s.dtype), dim=-1)
    p, qn = log_p.exp(), log_qn.exp()
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": (chosen - rejected).mean(),
        "rewards/accuracies": (chosen > others_max).to(s.dtype).mean(),
        "logps/policy": policy_logps.detach().to(s.dtype).mean(),
        "logps/ref": ref_logps.detach().to(s.dtype).mean(),
        "logratio/mean": (policy_logps.detach() - ref_logps.detach()).to(s.dtype).mean(),
        "probs/chosen": p.gather(-1, best).mean(),
        "kl/reverse": (p * (log_p - log_qn)).sum(-1).mean(),
        "kl/forward": (qn * (log_qn - log_p)).sum(-1).mean(),
    }


def group_loss_mean(
    loss,
    policy_logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor,
    beta_pi: float,
    beta_r: float,
    pref_log_eps: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean of ``loss`` (an :class:`exoflow.losses.base.Loss`) over G groups of N candidates.

    ``policy_logps``, ``ref_logps``, ``rewards``: (G, N). The log-probs are summed
    response log-probs at temperature τ, already computed (the reference's detached or
    precomputed). Computes ℓ = policy − ref and averages the loss's per-group values over
    groups, in at least float32. Returns ``(loss, metrics)``: ``loss`` a scalar tensor with
    gradient w.r.t. ``policy_logps`` (and ``ref_logps`` if it requires grad); ``metrics``
    detached scalars named ``rewards/{chosen,rejected,margins,accuracies}``,
    ``logps/{policy,ref}``, ``logratio/mean``, ``probs/chosen``, ``kl/{reverse,forward}``
    (where "rewards" are the implicit rewards s = β_π ℓ, as in trl; the KL against the
    loss's kind of target, ``beta_r`` or ``pref_log_eps`` as the run sets them).
    """
    if not beta_pi > 0:
        raise ValueError(f"beta_pi must be > 0, got {beta_pi}")
    if not (math.isfinite(pref_log_eps) and pref_log_eps < 0):
        raise ValueError(f"pref_log_eps must be a finite negative number, got {pref_log_eps}")
    _check_inputs(policy_logps, ref_logps, rewards)
    dtype = torch.promote_types(policy_logps.dtype, torch.float32)
    logratios = policy_logps.to(dtype) - ref_logps.to(dtype)
    rewards = rewards.detach().to(dtype=dtype, device=logratios.device)
    value = loss(logratios, rewards).mean()
    s = beta_pi * logratios
    metrics = _metrics(s, policy_logps, ref_logps, rewards, loss.TARGET, beta_r, pref_log_eps)
    return value, metrics
