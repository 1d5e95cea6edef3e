"""Code dependencies derived from imports, and a hash of what code does."""

import modulefinder
import shutil
from pathlib import Path

import pytest

from exoflow.codehash import code_hash, meaning_hash, module_imports, package_closure

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "workflow_scripts").glob("*.py"))


def finder_closure(script: Path) -> set[str]:
    """An independent reading of the import graph: modulefinder scans the bytecode of every
    code object (function bodies included) and follows what it finds in the repository."""
    mf = modulefinder.ModuleFinder(path=[str(ROOT)])
    mf.run_script(str(script))
    return {m for m in mf.modules if m == "exoflow" or m.startswith("exoflow.")}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_closure_equals_modulefinders(script):
    assert set(package_closure(script, ROOT / "exoflow")) == finder_closure(script)


def test_imports_inside_functions_and_relative_ones_count(tmp_path):
    pkg = tmp_path / "exoflow"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("a", "b", "c", "d", "e"):
        (pkg / f"{name}.py").write_text("X = 1\n")
    (pkg / "m.py").write_text(
        "from . import a as alias\n"
        "def f():\n"
        "    from .b import X\n"
        "    import exoflow.c\n"
        "    return X\n"
        "class K:\n"
        "    def g(self):\n"
        "        from exoflow import d\n")
    assert module_imports(pkg / "m.py", pkg) == {"exoflow", "exoflow.a", "exoflow.b",
                                                 "exoflow.c", "exoflow.d"}
    script = tmp_path / "s.py"
    script.write_text("def main():\n    from exoflow.m import f\n")
    assert set(package_closure(script, pkg)) == {"exoflow", "exoflow.m", "exoflow.a",
                                                 "exoflow.b", "exoflow.c", "exoflow.d"}


def test_comments_docstrings_and_formatting_do_not_change_the_hash(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Doc."""\nimport os\n\n\ndef f(x):\n    """What f does."""\n    return x + 1\n')
    h = meaning_hash(f)
    f.write_text('"""Another doc."""\n# a comment\nimport os  # why\n\ndef f( x ):\n'
                 '    """Other words."""\n\n    return (x +\n            1)\n')
    assert meaning_hash(f) == h
    f.write_text('"""Doc."""\nimport os\n\n\ndef f(x):\n    """What f does."""\n    return x + 2\n')
    assert meaning_hash(f) != h
    f.write_text('"""Doc."""\nimport os\n\n\ndef f(x):\n    return x + 1\n\nY = "a string"\n')
    assert meaning_hash(f) != h  # a new statement, even a string constant, is code


def test_code_hash_follows_the_closure_only(tmp_path):
    pkg = shutil.copytree(ROOT / "exoflow", tmp_path / "exoflow",
                          ignore=shutil.ignore_patterns("__pycache__"))
    sft = ROOT / "workflow_scripts" / "train_stage.py"
    stats = ROOT / "workflow_scripts" / "data_stats.py"
    h_sft, h_stats = code_hash(sft, pkg), code_hash(stats, pkg)
    with open(pkg / "sft.py", "a") as f:
        f.write("\n# a comment\n")
    assert (code_hash(sft, pkg), code_hash(stats, pkg)) == (h_sft, h_stats)
    with open(pkg / "sft.py", "a") as f:
        f.write("\nIGNORE_INDEX = -100\n")
    assert code_hash(sft, pkg) != h_sft and code_hash(stats, pkg) == h_stats
