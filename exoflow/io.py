"""Reading and writing record files.

Records are JSON objects, one per line (JSON Lines, UTF-8). Readers also accept
``.jsonl.gz`` and the original EXO scripts' ``.json`` files holding one JSON array of
the same records, so existing data can be brought in. Writers are atomic: a crash
never leaves a half-written file under the final name, and the file gets the permissions the
umask gives (``mkstemp`` alone would make it private).

Numbers must be finite: ``NaN`` and ``Infinity`` (which Python's ``json`` reads and writes by
default, though they are not JSON) are refused when read, naming ``file:line``, and refused when
written, naming the file and the record.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import ExoflowError, NonFiniteError

# What to do about a broken file the workflow made (the hint of a reader's error).
REMAKE = "delete it and run snakemake again to re-make it"


class RecordError(ExoflowError, ValueError):
    """A record file is malformed; the message names the file and line."""


class _NotFinite(ValueError):
    def __init__(self, token: str):
        super().__init__(f"{token} is not a finite number")
        self.token = token


PARAMS_FILE = "exoflow_params.json"  # the resolved parameters, next to a model or in a work dir

def _finite_float(text: str) -> float:
    x = float(text)
    if x != x or x in (float("inf"), float("-inf")):
        raise _NotFinite(text)
    return x


def _no_constant(name: str):
    raise _NotFinite(name)


def _line_of(text: str, e: ValueError) -> int:
    """The 1-based line of the token a :class:`_NotFinite` names (1 when not found)."""
    at = text.find(e.token) if isinstance(e, _NotFinite) else -1
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


def loads(text: str) -> Any:
    """``json.loads`` refusing NaN, Infinity and numbers too large for a float (ValueError)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps`` refusing NaN and infinities (ValueError), so that no file holds them."""
    return json.dumps(obj, allow_nan=False, **kwargs)


def _decode_error(path, lineno: int, e: ValueError, hint: str) -> RecordError:
    if isinstance(e, json.JSONDecodeError) or isinstance(e, _NotFinite):
        what = f"not valid JSON ({e.msg if isinstance(e, json.JSONDecodeError) else e})"
    else:
        what = str(e)
    return RecordError(f"{path}:{lineno}: {what}; {hint}")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _gzip_guard(path: Path, lines, after=lambda: 0):
    """``lines`` (or a read) with a gzip file that ends early or is not gzip turned into one
    RecordError naming the file and the last whole line (``after()``)."""
    import zlib

    try:
        yield from lines
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        if isinstance(e, EOFError):
            raise RecordError(f"{path} is cut short after line {after()} (an interrupted "
                              "download or copy?); fetch or copy it again") from None
        raise RecordError(f"{path} is not valid gzip ({e}); give the file uncompressed "
                          "(.jsonl) or fetch it again") from None


# A \\uD800-\\uDFFF escape: JSON lets a line spell half of a UTF-16 pair, which no text holds.
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _parse_line(raw: bytes) -> Any:
    """One JSON Lines record: ValueError for invalid UTF-8, invalid JSON, a non-finite number
    or an unpaired surrogate escape (each with its own message)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") \
            from None
    rec = loads(line)
    if _SURROGATE.search(line):
        try:
            json.dumps(rec, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"holds {_SURROGATE.search(line).group(0)}, half of a UTF-16 "
                             "surrogate pair that no Unicode text holds") from None
    return rec


def iter_records(path: str | os.PathLike, on_error: str = "error",
                 hint: str = REMAKE) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)`` from a ``.jsonl[.gz]`` or ``.json`` file (1-based).

    ``on_error="error"`` raises :class:`RecordError` naming ``path:line`` for a line that is
    not JSON (or holds NaN / Infinity); ``on_error="skip"`` yields ``(line_number,
    RecordError)`` for it instead, so the caller can count it. For a ``.json`` array the
    "line" is the 1-based index in the array. ``hint`` (what to do) ends the message.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    with _open_binary(path) as f:
        if name.endswith(".json"):
            try:
                text = b"".join(_gzip_guard(path, iter(lambda: f.read(1 << 20), b""))) \
                    .decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"{path}: not valid UTF-8 at byte {e.start}; {hint}") from None
            try:
                data = loads(text)
            except json.JSONDecodeError as e:
                raise _decode_error(path, e.lineno, e, hint) from None
            except ValueError as e:
                raise _decode_error(path, _line_of(text, e), e, hint) from None
            if not isinstance(data, list):
                raise RecordError(f"{path}: expected a JSON array of records")
            yield from enumerate(data, start=1)
            return
        last = [0]
        for lineno, line in enumerate(_gzip_guard(path, f, lambda: last[0]), start=1):
            last[0] = lineno
            if not line.strip():
                continue
            try:
                rec = _parse_line(line)
            except ValueError as e:
                err = _decode_error(path, lineno, e, hint)
                if on_error == "skip":
                    yield lineno, err
                else:
                    raise err from None
            else:
                yield lineno, rec


def read_records(path: str | os.PathLike, hint: str = REMAKE) -> list[dict]:
    """All records of a file (see :func:`iter_records`); any bad line is an error."""
    return [rec for _, rec in iter_records(path, hint=hint)]


def read_numbered(path: str | os.PathLike, hint: str = REMAKE) -> list[tuple[int, dict]]:
    """``[(line, record)]`` of a file, so that a later check can name the line."""
    return list(iter_records(path, hint=hint))


def find_split_file(folder: str | os.PathLike, split: str) -> Path:
    """``<folder>/<split>.jsonl``, ``.jsonl.gz`` or ``.json``, whichever exists."""
    folder = Path(folder)
    for suffix in (".jsonl", ".jsonl.gz", ".json", ".json.gz"):
        p = folder / f"{split}{suffix}"
        if p.exists():
            return p
    raise FileNotFoundError(
        f"{folder}: no {split}.jsonl, {split}.jsonl.gz or {split}.json found"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write, mode: str = "w") -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``: a
    crash leaves the old file or none, never half of one. The file gets ``0o666 & ~umask``
    (``mkstemp`` makes it ``0o600``, unreadable by colleagues on a shared cluster)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        kwargs = {"encoding": "utf-8"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(out_dir: str | os.PathLike, last: tuple[str, ...] = ("config.json",)):
    """Write a folder's files into a temporary sibling (yielded), then move them into
    ``out_dir`` (which may exist), the names in ``last`` at the end: a rule's declared output
    (a model's ``config.json``) never exists without the weights and tokenizer beside it, and a
    crash or a full disk leaves no half folder (the sibling is removed). Every file gets
    ``0o666 & ~umask`` (safetensors writes its weights ``0o600``, unreadable by colleagues)."""
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        mode = 0o666 & ~_umask()
        for p in sorted(tmp.iterdir(), key=lambda p: (p.name in last, p.name)):
            if p.is_file():
                os.chmod(p, mode)
            os.replace(p, out / p.name)
    except OSError:
        raise
    except Exception as e:  # a writer that wraps the OS error (safetensors' SafetensorError)
        if "No space left on device" in str(e) or "StorageFull" in str(e):
            raise OSError(errno.ENOSPC, "No space left on device", str(out)) from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def disk_error(e: BaseException, where) -> OSError | None:
    """``e`` as an OSError naming ``where`` when it is a full disk (or quota, or file size
    limit) however the library raised it (safetensors' SafetensorError, torch's RuntimeError
    carry the OS error in their text); None for anything else."""
    codes = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
             errno.EFBIG: "File too large"}
    if isinstance(e, OSError) and e.errno in codes:
        if not e.filename:
            e.filename = str(where)
        return e
    text = str(e)
    for code, msg in codes.items():
        if msg in text or f"code: {code}," in text or f"[Errno {code}]" in text:
            return OSError(code, msg, str(where))
    return None


def os_error_line(e: OSError) -> str:
    """One line for an OS error on a file: its path, what happened, and for a full disk how
    much room is left there."""
    path = e.filename or ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = Path(path).absolute() if path else Path.cwd()
        while not where.exists() and where != where.parent:
            where = where.parent
        free = shutil.disk_usage(where).free
        what = {errno.ENOSPC: "no space left on the device",
                errno.EDQUOT: "the disk quota is exceeded",
                errno.EFBIG: "the file is larger than this process may write"}[e.errno]
        return (f"{path}: {what} ({free / 2**20:.1f} MiB free on {where}); make room there (or "
                "point the results elsewhere) and run the job again: nothing half-written was "
                "kept")
    return f"{path}: {e.strerror or e}" if path else str(e)


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records as JSON Lines, atomically; returns how many were written."""
    n = 0

    def write(f):
        nonlocal n
        for rec in records:
            try:
                f.write(dumps(rec, ensure_ascii=False))
            except UnicodeEncodeError as e:
                raise RecordError(f"{path}: record {n + 1} holds text that is not valid Unicode "
                                  f"({e.object[e.start:e.end]!r}, half of a UTF-16 surrogate "
                                  "pair); nothing was written") from None
            except ValueError as e:
                raise NonFiniteError(f"{path}: record {n + 1} holds a NaN or infinite number "
                                     f"({e}); nothing was written") from None
            f.write("\n")
            n += 1

    atomic_write(path, write)
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document (indented, sorted keys), atomically; NaN and infinities are
    refused (:class:`~exoflow.errors.NonFiniteError` naming the file)."""
    try:
        text = dumps(obj, indent=2, sort_keys=True) + "\n"
    except ValueError as e:
        raise NonFiniteError(f"{path}: holds a NaN or infinite number ({e}); not written") from None
    atomic_write(path, lambda f: f.write(text))


def read_json(path: str | os.PathLike, hint: str = REMAKE) -> Any:
    """One JSON document; a parse error (or NaN / Infinity) is a :class:`RecordError` naming
    ``file:line``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return loads(text)
    except json.JSONDecodeError as e:
        raise _decode_error(path, e.lineno, e, hint) from None
    except ValueError as e:
        raise _decode_error(path, _line_of(text, e), e, hint) from None


def model_config(folder: str | os.PathLike) -> dict:
    """A model folder's config.json as one mapping: a key the top level lacks (or sets to
    null) taken from ``text_config``, where multimodal models (Gemma 3, Llava) nest their text
    model's settings; ``{}`` when the file is missing or not a JSON object."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(cfg, dict):
        return {}
    nested = cfg.get("text_config")
    nested = nested if isinstance(nested, dict) else {}
    return {**nested, **{k: v for k, v in cfg.items() if v is not None}}
