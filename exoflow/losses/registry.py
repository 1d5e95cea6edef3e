"""The alignment losses by name (torch-free): what ``params``, the schema, the docs and the
study read. Adding a loss is one file beside this one and one line here."""

from __future__ import annotations

from .base import Loss
from .cdpo import ConservativeDPO
from .dpo import DpoPref, DpoRW
from .exo import ExoPref, ExoRW
from .ipo import IPO
from .rdpo import RobustDPO

__all__ = ["LOSSES", "alignment_loss", "loss_family", "loss_name", "make_loss"]

LOSSES: dict[str, type[Loss]] = {cls.NAME: cls for cls in (
    ExoPref,
    ExoRW,
    DpoPref,
    DpoRW,
    IPO,
    ConservativeDPO,
    RobustDPO,
)}


def loss_name(value) -> str:
    """The name of a config's ``loss``: the string, or the mapping's ``name``."""
    return value["name"] if isinstance(value, dict) else value


def loss_family(label: str) -> str:
    """The ``FAMILY`` of a loss as tables show it (``ipo`` or ``ipo(tau=0.05)``); '' if none."""
    cls = LOSSES.get(label.split("(", 1)[0])
    return cls.FAMILY if cls else ""


def make_loss(value, run: dict, where: str = "loss") -> Loss:
    """The :class:`Loss` of a config's ``loss`` (a name, or ``{name: ..., <hyperparameter>:
    ...}``) for a run whose alignment keys are ``run``."""
    from difflib import get_close_matches

    from ..errors import ParamsError

    own = dict(value) if isinstance(value, dict) else {"name": value}
    name = own.pop("name", None)
    if name not in LOSSES:
        close = get_close_matches(str(name), list(LOSSES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(f"{where}: unknown loss {name!r}{hint}; the losses are "
                          f"{', '.join(LOSSES)}")
    return LOSSES[name].build(own, run, where)


def alignment_loss(loss, policy_logps, ref_logps, rewards, beta_pi: float, beta_r: float,
                   pref_log_eps: float | None = None):
    """``(mean loss, metrics)`` over (G, N) groups (:func:`exoflow.losses.core.group_loss_mean`);
    ``loss`` a :class:`Loss` or a config's ``loss`` (a name, or a mapping with its own
    hyperparameters), whose shared keys are ``beta_pi``, ``beta_r`` and ``pref_log_eps``
    (None: ``align.defaults``' default)."""
    from ..config import AlignParams
    from .core import group_loss_mean

    if pref_log_eps is None:  # the config's default
        pref_log_eps = AlignParams.default_of("pref_log_eps")
    if not isinstance(loss, Loss):
        if loss_name(loss) not in LOSSES:
            raise ValueError(f"unknown loss_type {loss_name(loss)!r}; expected one of "
                             f"{sorted(LOSSES)}")
        loss = make_loss(loss, {"beta_pi": beta_pi, "beta_r": beta_r,
                                "pref_log_eps": pref_log_eps})
    return group_loss_mean(loss, policy_logps, ref_logps, rewards, beta_pi, beta_r,
                           pref_log_eps)
