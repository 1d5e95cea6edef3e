"""The validator every config section is built on: :func:`param` (a field with its help and
bounds), :class:`Section` (a dataclass that checks its keys, types and bounds when built, and
its own cross-key rules in :meth:`Section.check`) and :func:`partial_section` (the same keys,
each optional: what a config sets over defaults, e.g. ``align.defaults`` and an
``align.runs`` entry). A field may be a section, a list, or a mapping of names to sections
(``dict[str, AlignRun]``). No torch, no Snakemake.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import functools
import json
import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ParamsError

__all__ = ["RUN_NAME", "UNSET", "Section", "check_run_name", "is_section", "mapping_of",
           "param", "partial_section", "split_optional", "type_hints"]

RUN_NAME = r"^[A-Za-z0-9._-]+$"


# The config path of the section being built by Section.from_dict (for its messages).
_WHERE: contextvars.ContextVar[str | None] = contextvars.ContextVar("where", default=None)


def param(default: Any = MISSING, help: str = "", *, factory=None, minimum=None, maximum=None,
          exclusive_minimum=None, exclusive_maximum=None, choices=None, pattern=None,
          schema: dict | None = None):
    """A dataclass field with its documentation and bounds (``schema``: a JSON-schema fragment
    for what the annotation cannot say, e.g. the items of a list)."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "choices": choices,
            "exclusive_minimum": exclusive_minimum, "exclusive_maximum": exclusive_maximum,
            "pattern": pattern, "schema": schema or {}}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_run_name(name: str, where: str) -> None:
    """A name that becomes a folder (``run_name``, a run's): letters, digits, '.', '_' and
    '-', and not '.' or '..' (the rule of every field with ``pattern=RUN_NAME``)."""
    if name in (".", ".."):
        raise ParamsError(f"{where}: {name!r} names a folder of the path itself (its outputs "
                          "would land outside their own folder); give a name")
    if not re.match(RUN_NAME, name):
        raise ParamsError(f"{where}: {name!r} may hold letters, digits, '.', '_' and '-' only")


def _closest(name: str, known) -> str:
    """`` (did you mean 'lr'?)`` for the known key closest to ``name`` (also a key spelled by
    its words' initials: learning_rate -> lr), or ''."""
    known = [str(k) for k in known]
    initials = "".join(w[0] for w in str(name).split("_") if w)
    close = [k for k in known if len(k) > 1 and k == initials] or \
        difflib.get_close_matches(str(name), known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@functools.cache
def type_hints(cls) -> dict:
    """The resolved annotations of a section class (its own module's names)."""
    return typing.get_type_hints(cls)


def split_optional(tp):
    """``(inner type, nullable)`` of an annotation ``X | None``."""
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def is_section(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


def mapping_of(tp):
    """The section class ``S`` of an annotation ``dict[str, S]`` (named entries, e.g.
    ``align.runs``), else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is dict and len(args) == 2 and is_section(args[1]):
        return args[1]
    return None


def _type_error(where: str, tp) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             list: "a list", dict: "a mapping"}
    return names.get(typing.get_origin(tp) or tp, getattr(tp, "__name__", str(tp)))


def _check_type(value, tp, where: str):
    """``value`` if it is of annotation ``tp`` (JSON's view: an int is a number, a bool is not
    an int); ParamsError naming ``where`` otherwise."""
    inner, nullable = split_optional(tp)
    if value is None:
        if nullable:
            return None
        raise ParamsError(f"{where} must be {_type_error(where, inner)}, got null")
    if is_section(inner) and not isinstance(value, (dict, inner)):
        raise ParamsError(f"{where} must be a mapping of its keys ({where}.<key>: <value>), "
                          f"got {value!r}")
    origin = typing.get_origin(inner) or inner
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, list), dict: lambda v: isinstance(v, dict)}.get(origin)
    if ok is not None and not ok(value):
        raise ParamsError(f"{where} must be {_type_error(where, inner)}, got {value!r}")
    if origin is float and not math.isfinite(value):
        raise ParamsError(f"{where} must be a finite number, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(inner) or (Any,)
        for i, v in enumerate(value):
            if item is not Any:
                _check_type(v, item, f"{where}[{i}]")
    return value


@dataclass
class Section:
    """The base of every parameter class: :meth:`from_dict` refuses unknown keys (saying which
    known key is closest) and names missing ones; construction checks each field's type and
    bounds, then :meth:`check` (cross-key constraints). ``SECTION`` is the config path used in
    messages."""

    SECTION: ClassVar[str] = ""
    ROOT: ClassVar[bool] = False  # the whole config (its keys are top-level paths)

    def __post_init__(self):
        self._where = _WHERE.get() or self.SECTION or type(self).__name__
        token = _WHERE.set(None)  # a section nested in this one is named by where() below
        try:
            self._check_fields()
            self.check()
        finally:
            _WHERE.reset(token)

    def _check_fields(self) -> None:
        hints = type_hints(type(self))
        for f in fields(self):
            where = self.where(f.name)
            value = getattr(self, f.name)
            if value is UNSET:  # a key a partial section leaves to its defaults
                continue
            inner, _ = split_optional(hints[f.name])
            entry = mapping_of(inner)
            if is_section(inner):
                value = _section_value(hints[f.name], value, where)
            else:
                _check_type(value, hints[f.name], where)
            if entry is not None and isinstance(value, dict):
                value = {name: _entry(entry, name, v, f.metadata, where)
                         for name, v in value.items()}
            setattr(self, f.name, value)
            _check_bounds(value, f.metadata, where)

    def where(self, key: str | None = None) -> str:
        """The config path of this section (or of its ``key``) for messages."""
        base = getattr(self, "_where", None) or self.SECTION or type(self).__name__
        if self.ROOT:  # the whole config: its keys are top-level paths
            return key or "config"
        return f"{base}.{key}" if key else base

    def check(self) -> None:
        """Constraints between keys (ParamsError saying what to set); none by default."""

    @classmethod
    def from_dict(cls, d: dict | None, where: str | None = None):
        """An instance from a config mapping; ``where`` (default: ``SECTION``) names the section
        in messages."""
        d = dict(d or {})
        known = [f.name for f in fields(cls)]
        prefix = where or cls.SECTION or cls.__name__
        unknown = [k for k in d if k not in known]
        if unknown:
            k = unknown[0]
            raise ParamsError(f"{prefix}.{k}: unknown key{_closest(k, known)}; the keys of "
                              f"{prefix} are {', '.join(known)}")
        missing = [f.name for f in fields(cls) if f.name not in d and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise ParamsError(f"{prefix}: missing key(s) {', '.join(missing)}")
        token = _WHERE.set(where)
        try:
            return cls(**d)
        finally:
            _WHERE.reset(token)

    @classmethod
    def from_json(cls, text: str, where: str | None = None):
        """From a JSON object, or the path of a file holding one (a script's argument)."""
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text(encoding="utf-8")
        try:
            return cls.from_dict(json.loads(text), where)
        except json.JSONDecodeError as e:
            raise ParamsError(f"{where or cls.SECTION}: not a JSON object ({e})") from None

    def to_dict(self) -> dict:
        """The section as plain data (nested sections as mappings), as a config writes it."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        """One JSON word (sorted keys, no spaces): a command-line argument or params value."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def project(self, cls):
        """This section's values of the fields of ``cls`` (a base class of it), as a ``cls``:
        what a job that reads only those keys is given, so that the others re-run nothing."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})

    @classmethod
    def default_of(cls, key: str):
        """The default of the field ``key``."""
        f = next(f for f in fields(cls) if f.name == key)
        return f.default_factory() if f.default is MISSING else f.default


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _section_value(tp, value, where: str):
    """``value`` of a section-typed annotation ``tp`` (``S`` or ``S | None``): a mapping
    built into the section; an instance, or None where allowed, as it is."""
    _check_type(value, tp, where)
    inner, _ = split_optional(tp)
    return inner.from_dict(value, where) if isinstance(value, dict) else value


def _entry(cls, name: str, value, meta, mapping_where: str):
    """The entry ``name`` of a ``dict[str, cls]`` field (at ``mapping_where``): its name
    checked against the field's ``pattern``, its value a ``cls``."""
    if meta.get("pattern") == RUN_NAME:
        check_run_name(name, mapping_where)
    return _section_value(cls, value, f"{mapping_where}.{name}")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # a key of a partial section that the config does not set


@dataclass(kw_only=True)
class Partial(Section):
    """Some keys of the section ``FULL`` (each given one checked for its type and bounds, the
    others :data:`UNSET`) and the keys it must give (``REQUIRED``): what a config sets over
    defaults. The full section, with its own cross-key rules, is built from the merged keys
    (:meth:`given`). Made by :func:`partial_section`."""

    FULL: ClassVar[type[Section]]
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        missing = [k for k in self.REQUIRED if getattr(self, k) is UNSET]
        if missing:
            raise ParamsError(f"{self.where()}: missing key(s) {', '.join(missing)}")

    def given(self) -> dict:
        """``{key: value}`` of the keys this section sets, in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not UNSET}

    def to_dict(self) -> dict:
        return {k: _plain(v) for k, v in self.given().items()}


def partial_section(full: type[Section], name: str, *, section: str = "",
                    required: tuple[str, ...] = (), doc: str = "") -> type[Partial]:
    """A :class:`Partial` of ``full``: every field of ``full`` with its type, help and bounds,
    unset by default (its schema is ``full``'s, ``required`` its required keys)."""
    hints = type_hints(full)
    spec = [(f.name, hints[f.name], field(default=UNSET, metadata=f.metadata))
            for f in fields(full)]
    return dataclasses.make_dataclass(
        name, spec, bases=(Partial,), kw_only=True,
        namespace={"FULL": full, "REQUIRED": tuple(required), "SECTION": section,
                   "__doc__": doc or f"Some keys of {full.__name__}.",
                   "__module__": full.__module__})


def _check_bounds(value, meta, where: str) -> None:
    if value is None or isinstance(value, (bool, Section, list, dict)):
        if meta.get("choices") and value is not None and value not in meta["choices"]:
            raise ParamsError(f"{where} must be one of {list(meta['choices'])}, got {value!r}")
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise ParamsError(f"{where} must be one of {list(meta['choices'])}, got {value!r}"
                          f"{_closest(str(value), meta['choices'])}")
    if meta.get("pattern") == RUN_NAME and isinstance(value, str):
        check_run_name(value, where)
    elif meta.get("pattern") and isinstance(value, str) and not re.match(meta["pattern"], value):
        raise ParamsError(f"{where}: {value!r} does not match {meta['pattern']}")
    if not isinstance(value, (int, float)):
        return
    tests = [("minimum", lambda b: value >= b, ">="), ("maximum", lambda b: value <= b, "<="),
             ("exclusive_minimum", lambda b: value > b, ">"),
             ("exclusive_maximum", lambda b: value < b, "<")]
    for key, ok, op in tests:
        b = meta.get(key)
        if b is not None and not ok(b):
            raise ParamsError(f"{where} must be {op} {b}, got {value}")


