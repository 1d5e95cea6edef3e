"""Alignment losses: each in its own file (``exo.py``, ``dpo.py``, ``ipo.py``, ``cdpo.py``,
``rdpo.py``), a small class holding its hyperparameters (:mod:`.base`), registered by name in
:mod:`.registry`; the shared tensor work (groups, targets, metrics, the batch loss) in
:mod:`.core`. Importing this package does not import torch: :mod:`.core`'s names are loaded
when first used."""

from .base import Loss
from .registry import LOSSES, alignment_loss, loss_name, make_loss

__all__ = ["LOSSES", "Loss", "alignment_loss", "dpo_loss", "exo_loss", "group_candidates",
           "loss_name", "make_loss", "target_log_q"]

_CORE = ("dpo_loss", "exo_loss", "group_candidates", "target_log_q")


def __getattr__(name):
    if name in _CORE:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
