"""What an alignment loss is, torch-free: a small frozen dataclass that holds its own
hyperparameters, says which targets it needs, and maps a batch of groups to one loss per group.

A loss class sets ``NAME`` (the config's ``loss``), ``TARGET`` (``rw``: the rewards as they are;
``pref``: the highest reward of a group is the winner), ``PAIRWISE`` (it compares one winner
with one loser: ``num_contrastive`` must be 2) and ``FAMILY`` (a line style in the figures).
Its fields are its hyperparameters: a field made with :func:`shared` takes the run's key of the
same name (``beta_pi``, ``beta_r``, ``pref_log_eps``: keys of ``align.defaults`` every loss can
read), a field made with :func:`hyper` is the loss's own, set in the config as
``loss: {name: <NAME>, <field>: <value>}``. ``__call__(logratios, rewards)`` takes (G, N)
tensors (ℓ = log π_θ^τ(y|x) − log π_ref^τ(y|x), summed over the response; the rewards) and
returns the (G,) per-group loss; it does its tensor work through :mod:`exoflow.losses.core`
(imported when called), so that this module and the loss files load without torch.
"""

from __future__ import annotations

import math
import operator
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar

from ..errors import ParamsError

__all__ = ["Loss", "hyper", "shared"]


def shared(key: str | None = None):
    """A field filled from the run's alignment key of the same name (e.g. ``beta_pi``)."""
    return field(metadata={"shared": True})


def hyper(default: float, help: str, *, minimum=None, exclusive_minimum=None, maximum=None,
          exclusive_maximum=None):
    """One of the loss's own hyperparameters, with its default, documentation and bounds."""
    return field(default=default, metadata={
        "help": help, "minimum": minimum, "exclusive_minimum": exclusive_minimum,
        "maximum": maximum, "exclusive_maximum": exclusive_maximum})


@dataclass(frozen=True)
class Loss:
    NAME: ClassVar[str] = ""
    TARGET: ClassVar[str] = "pref"
    PAIRWISE: ClassVar[bool] = False
    FAMILY: ClassVar[str] = ""

    @classmethod
    def own(cls) -> list:
        """The loss's own hyperparameters (fields made with :func:`hyper`)."""
        return [f for f in fields(cls) if not f.metadata.get("shared")]

    @classmethod
    def shared_keys(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.metadata.get("shared")]

    @classmethod
    def build(cls, own: dict, run: dict, where: str) -> Loss:
        """The loss of a run: ``own`` its hyperparameters as the config gives them (checked:
        known keys, numbers within bounds), ``run`` the run's alignment keys."""
        known = [f.name for f in cls.own()]
        if cls.PAIRWISE and run.get("num_contrastive", 2) != 2:
            raise ParamsError(f"{where}: {cls.NAME} compares one winner with one loser: "
                              f"num_contrastive must be 2, got {run['num_contrastive']}")
        for k, v in own.items():
            if k not in known:
                keys = ", ".join(known) or "none"
                raise ParamsError(f"{where}.{k}: not a hyperparameter of loss {cls.NAME} (its "
                                  f"own: {keys}; beta_pi and the other alignment keys are set "
                                  "beside loss)")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ParamsError(f"{where}.{k} must be a finite number, got {v!r}")
        for f in cls.own():
            v = own.get(f.name, f.default)
            m = f.metadata
            checks = (("minimum", operator.lt, ">="), ("exclusive_minimum", operator.le, ">"),
                      ("maximum", operator.gt, "<="), ("exclusive_maximum", operator.ge, "<"))
            for bound, bad, word in checks:
                if m.get(bound) is not None and bad(v, m[bound]):
                    raise ParamsError(f"{where}.{f.name} must be {word} {m[bound]}, got {v}")
        values = {k: run[k] for k in cls.shared_keys()}
        values.update({f.name: own.get(f.name, f.default) for f in cls.own()
                       if f.default is not MISSING})
        return cls(**values)

    def __call__(self, logratios, rewards):
        raise NotImplementedError
