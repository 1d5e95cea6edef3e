"""Conservative DPO (Mitchell, "A note on DPO with noisy preferences & relationship to IPO",
2023): DPO against labels that are wrong with probability ε, −(1−ε) log σ(β h) − ε log σ(−β h)
with h = ℓ_w − ℓ_l and β = ``beta_pi`` (trl: ``loss_type: sigmoid`` with ``label_smoothing``)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Loss, hyper, shared


@dataclass(frozen=True)
class ConservativeDPO(Loss):
    """``cdpo``: DPO with label smoothing ε."""

    NAME, TARGET, PAIRWISE, FAMILY = "cdpo", "pref", True, "dpo"
    beta_pi: float = shared()
    label_smoothing: float = hyper(0.1, "ε: the probability that a preference label is "
                                   "flipped.", minimum=0, exclusive_maximum=0.5)

    def __call__(self, logratios, rewards):
        from .core import logsigmoid, pair_margin

        z = self.beta_pi * pair_margin(logratios, rewards)
        eps = self.label_smoothing
        return -(1 - eps) * logsigmoid(z) - eps * logsigmoid(-z)
