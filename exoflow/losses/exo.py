"""EXO (Ji et al., ICML 2024, arXiv:2402.00856, §3): the reverse KL from the policy's
distribution over a group of N candidates, p̂ = softmax(β_π ℓ), to the target's, q."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Loss, shared


@dataclass(frozen=True)
class ExoRW(Loss):
    """``exo-rw``: KL(p̂ ‖ softmax(r / β_r))."""

    NAME, TARGET, FAMILY = "exo-rw", "rw", "exo"
    beta_pi: float = shared()
    beta_r: float = shared()

    def __call__(self, logratios, rewards):
        from .core import exo_loss, target_log_q

        return exo_loss(self.beta_pi * logratios, target_log_q(rewards, "rw", self.beta_r))


@dataclass(frozen=True)
class ExoPref(Loss):
    """``exo-pref``: KL(p̂ ‖ q) with log q = 0 for the winner and log ε for the others
    (``pref_log_eps``, unnormalised, as the original code)."""

    NAME, TARGET, FAMILY = "exo-pref", "pref", "exo"
    beta_pi: float = shared()
    pref_log_eps: float = shared()

    def __call__(self, logratios, rewards):
        from .core import exo_loss, target_log_q

        return exo_loss(self.beta_pi * logratios,
                        target_log_q(rewards, "pref", 1.0, self.pref_log_eps))
