"""Which package code a workflow script runs, and a hash of what that code means.

A rule re-runs when the code its script runs changes, and only then:

* :func:`package_closure` follows a script's imports of ``exoflow`` modules transitively,
  including imports inside functions (``from .align import encode_align`` in a function body
  counts), by reading the source (nothing is imported);
* :func:`meaning_hash` hashes a module's syntax tree without its docstrings, so comments,
  docstrings and formatting change nothing, and any other edit changes the hash;
* :func:`code_hash` combines both for a script: the rules pass it as a ``params`` value, and
  Snakemake's params trigger re-runs exactly the rules whose scripts reach an edited module.

No torch or Snakemake import: the Snakefile calls this while it is parsed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

__all__ = ["code_hash", "meaning_hash", "module_imports", "package_closure"]

PACKAGE = "exoflow"


def _parse(path: Path) -> ast.Module:
    return ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))


def _module_name(path: Path, package_dir: Path) -> str | None:
    """``exoflow.x`` for ``<package_dir>/x.py`` (``exoflow`` for ``__init__.py``), else None."""
    try:
        rel = Path(path).resolve().relative_to(Path(package_dir).resolve())
    except ValueError:
        return None
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def module_imports(path, package_dir) -> set[str]:
    """The ``exoflow`` modules that the file at ``path`` imports anywhere in its code (module
    level or inside functions, absolute or relative), as dotted names."""
    path, package_dir = Path(path), Path(package_dir)
    me = _module_name(path, package_dir)
    here = me.split(".") if me else []
    if me and path.name != "__init__.py":
        here = here[:-1]  # the package a module's relative imports start from
    found = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not here:
                    continue
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from exoflow import cli`
    out = set()
    for name in found:
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            continue
        parts = name.split(".")
        while parts:  # the module itself, or its package for `pkg.symbol`
            f = package_dir.joinpath(*parts[1:])
            if f.with_suffix(".py").is_file() or (f / "__init__.py").is_file():
                out.add(".".join(parts))
                break
            parts.pop()
    out.discard(me)
    return out


def _module_file(name: str, package_dir: Path) -> Path:
    f = Path(package_dir).joinpath(*name.split(".")[1:])
    return f.with_suffix(".py") if f.with_suffix(".py").is_file() else f / "__init__.py"


def package_closure(script, package_dir) -> dict[str, Path]:
    """``{module name: file}`` of every ``exoflow`` module ``script`` reaches through imports
    (the ``__init__`` of the package and of every subpackage a reached module is in included:
    importing a module runs them)."""
    package_dir = Path(package_dir)
    todo, seen = list(module_imports(script, package_dir)), {}
    if todo:
        todo.append(PACKAGE)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        f = _module_file(name, package_dir)
        seen[name] = f
        todo.extend(module_imports(f, package_dir) - set(seen))
        parts = name.split(".")[:-1]  # importing a.b.c runs a/b/__init__.py first
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return dict(sorted(seen.items()))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=None)
def _meaning_of(source: bytes, filename: str) -> str:
    tree = _strip_docstrings(ast.parse(source, filename=filename))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def meaning_hash(path) -> str:
    """sha256 of the file's syntax tree without docstrings: comments, docstrings, blank lines
    and formatting do not change it; any change to what the code does does."""
    return _meaning_of(Path(path).read_bytes(), str(path))


def code_hash(script, package_dir) -> str:
    """One hash of ``script`` and every package module it reaches (16 hex digits)."""
    h = hashlib.sha256(meaning_hash(script).encode())
    for name, f in package_closure(script, package_dir).items():
        h.update(f"{name}:{meaning_hash(f)}".encode())
    return h.hexdigest()[:16]
