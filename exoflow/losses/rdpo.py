"""Robust DPO (Chowdhury et al., "Provably Robust DPO: Aligning Language Models with Noisy
Feedback", ICML 2024, arXiv:2403.00409, Eq. 7): an unbiased estimate of the clean DPO loss under
labels flipped with probability ε, [−(1−ε) log σ(β h) + ε log σ(−β h)] / (1 − 2ε), h = ℓ_w − ℓ_l,
β = ``beta_pi`` (trl: ``loss_type: robust`` with ``label_smoothing``)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Loss, hyper, shared


@dataclass(frozen=True)
class RobustDPO(Loss):
    """``rdpo``: DPO debiased for label noise ε."""

    NAME, TARGET, PAIRWISE, FAMILY = "rdpo", "pref", True, "dpo"
    beta_pi: float = shared()
    label_smoothing: float = hyper(0.1, "ε: the probability that a preference label is "
                                   "flipped.", minimum=0, exclusive_maximum=0.5)

    def __call__(self, logratios, rewards):
        from .core import logsigmoid, pair_margin

        z = self.beta_pi * pair_margin(logratios, rewards)
        eps = self.label_smoothing
        return (-(1 - eps) * logsigmoid(z) + eps * logsigmoid(-z)) / (1 - 2 * eps)
