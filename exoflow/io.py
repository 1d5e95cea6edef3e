"""Reading and writing record files.

Records are JSON objects, one per line (JSON Lines, UTF-8). Readers also accept
``.jsonl.gz`` and the original EXO scripts' ``.json`` files holding one JSON array of
the same records, so existing data can be brought in. Writers are atomic: a crash
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class RecordError(ValueError):
    """A record file is malformed; the message names the file and line."""


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_records(path: str | os.PathLike, on_error: str = "error") -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)`` from a ``.jsonl[.gz]`` or ``.json`` file.

    ``on_error="error"`` raises :class:`RecordError` naming ``path:line`` for a line that is
    not JSON; ``on_error="skip"`` yields ``(line_number, RecordError)`` for it instead, so the
    caller can count it. For a ``.json`` array the "line" is the 1-based index in the array.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    with _open_text(path) as f:
        if name.endswith(".json"):
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(data, list):
                raise RecordError(f"{path}: expected a JSON array of records")
            yield from enumerate(data, start=1)
            return
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                err = RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})")
                if on_error == "skip":
                    yield lineno, err
                else:
                    raise err from None


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of a file (see :func:`iter_records`); any bad line is an error."""
    return [rec for _, rec in iter_records(path)]


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


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records as JSON Lines, atomically; returns how many were written."""
    n = 0

    def write(f):
        nonlocal n
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False))
            f.write("\n")
            n += 1

    _atomic_write(Path(path), write)
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document (indented, sorted keys), atomically."""
    _atomic_write(Path(path), lambda f: (json.dump(obj, f, indent=2, sort_keys=True), f.write("\n")))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
