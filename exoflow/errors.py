"""The package's error types: one base class whose message is the whole story.

Every error the package raises on bad input, a corrupt file or a diverged run is an
:class:`ExoflowError` with a one-line message that names the file and line (1-based, as an
editor shows it) or the tensor, and says what to do. The CLIs (``workflow_scripts/``, through
:func:`exoflow.cli.run`) print that line and exit non-zero, without a traceback (``--debug`` or
``EXOFLOW_DEBUG=1`` shows it).
"""

from __future__ import annotations

import math

__all__ = ["ExoflowError", "NonFiniteError", "ParamsError", "check_finite"]


class ExoflowError(Exception):
    """Bad input, a corrupt file or a failed run; the message says where and what to do."""


class ParamsError(ExoflowError, ValueError):
    """A parameter section is malformed; the message says which key and what to set."""


class NonFiniteError(ExoflowError, ValueError):
    """A value that must be a finite number is NaN or infinite."""


def check_finite(values, what: str) -> None:
    """Refuse any NaN or infinite number in ``values`` (numbers or nested lists of them);
    ``what`` names where they come from (a file and line, a statistic)."""
    for i, v in enumerate(values):
        if isinstance(v, (list, tuple)):
            check_finite(v, f"{what}[{i}]")
        elif not math.isfinite(v):
            raise NonFiniteError(f"{what}: value {i} is {v}, not a finite number")
