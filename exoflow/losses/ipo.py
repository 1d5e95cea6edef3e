"""IPO (Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
Preferences", AISTATS 2024, arXiv:2310.12036, Eq. 17): the squared distance of the log-ratio
margin h = ℓ_w − ℓ_l from 1/(2τ), which keeps the policy near the reference however certain the
preferences are. On summed log-probs, as the paper writes it (trl divides ℓ by the completion's
length first; tests/test_losses.py compares the two on one-token completions, where they agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Loss, hyper


@dataclass(frozen=True)
class IPO(Loss):
    """``ipo``: (h − 1/(2τ))² per pair."""

    NAME, TARGET, PAIRWISE, FAMILY = "ipo", "pref", True, "ipo"
    tau: float = hyper(0.1, "IPO's regularisation τ: the margin h = ℓ_w − ℓ_l is pulled to "
                       "1/(2τ).", exclusive_minimum=0)

    def __call__(self, logratios, rewards):
        from .core import pair_margin

        return (pair_margin(logratios, rewards) - 1 / (2 * self.tau)) ** 2
