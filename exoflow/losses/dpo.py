"""DPO (Rafailov et al., NeurIPS 2023), generalised to N candidates as in the EXO paper (§4):
the cross-entropy of p̂ = softmax(β_π ℓ) against the normalised target (the forward KL)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Loss, shared


@dataclass(frozen=True)
class DpoRW(Loss):
    """``dpo-rw``: −Σ_i softmax(r / β_r)_i log p̂_i."""

    NAME, TARGET, FAMILY = "dpo-rw", "rw", "dpo"
    beta_pi: float = shared()
    beta_r: float = shared()

    def __call__(self, logratios, rewards):
        from .core import dpo_loss, target_log_q

        return dpo_loss(self.beta_pi * logratios, target_log_q(rewards, "rw", self.beta_r))


@dataclass(frozen=True)
class DpoPref(Loss):
    """``dpo-pref``: −log p̂_winner; for N = 2, DPO's −log σ(β(ℓ_w − ℓ_l))."""

    NAME, TARGET, FAMILY = "dpo-pref", "pref", "dpo"
    beta_pi: float = shared()

    def __call__(self, logratios, rewards):
        from .core import dpo_loss, target_log_q

        return dpo_loss(self.beta_pi * logratios,
                        target_log_q(rewards, "pref", 1.0, float("-inf")))
