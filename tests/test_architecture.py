"""The package's shape: no import cycle between exoflow's modules, no private name used across
modules, no class defined inside a function, and the closures of the reference cache kept
small (an edit to the trainer, LoRA or the sampler re-runs no reference cache)."""

import ast
from pathlib import Path

from exoflow.codehash import module_imports, package_closure
from tests.helpers import ROOT

PACKAGE = ROOT / "exoflow"
MODULES = {"exoflow." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts): p
           for p in sorted(PACKAGE.rglob("*.py")) if p.stem != "__init__"}


def graph() -> dict[str, set[str]]:
    return {name: module_imports(path, PACKAGE) - {"exoflow"} for name, path in MODULES.items()}


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in g:
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_the_cycle_check_can_fail(tmp_path):
    pkg = tmp_path / "exoflow"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from .a import f\n")
    assert module_imports(pkg / "a.py", pkg) == {"exoflow.b"}
    assert module_imports(pkg / "b.py", pkg) == {"exoflow.a"}


def test_no_private_name_is_used_across_modules():
    """``from .x import _y`` and ``x._y`` across modules of the package (and from the workflow
    scripts): a name another module needs is public."""
    found = []
    files = [*MODULES.values(), *sorted((ROOT / "workflow_scripts").glob("*.py"))]
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                    "exoflow")):
                found += [f"{path.name}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


def test_classes_are_defined_at_module_level():
    found = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"{path.name}:{c.lineno} {c.name} in {node.name}()" for c in
                          ast.walk(node) if isinstance(c, ast.ClassDef)]
    assert not found, found


def test_the_reference_cache_reaches_only_what_it_uses():
    """The reference cache's script reaches neither the Trainer, LoRA, the training recipe
    nor sampling: editing them re-runs no reference cache (tests/test_e2e.py checks the
    re-runs themselves for every module)."""
    closure = set(package_closure(ROOT / "workflow_scripts" / "precompute_ref.py", PACKAGE))
    assert not closure & {"exoflow.trainer", "exoflow.lora", "exoflow.recipe", "exoflow.sampling",
                          "exoflow.workdir", "exoflow.align", "exoflow.sft", "exoflow.rm"}, closure
    assert {"exoflow.refcache", "exoflow.logps", "exoflow.align_data"} <= closure


def test_every_module_says_what_it_is():
    for name, path in MODULES.items():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc) > 40, name
    assert Path(ROOT / "docs" / "ARCHITECTURE.md").exists()
    arch = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for path in MODULES.values():
        rel = path.relative_to(PACKAGE).as_posix()
        assert f"`{rel}`" in arch, f"docs/ARCHITECTURE.md does not list {rel}"
    for rule_file in sorted((ROOT / "rules").glob("*.smk")):
        assert f"`{rule_file.name}`" in arch, f"docs/ARCHITECTURE.md does not list {rule_file.name}"


def test_a_loss_is_reached_by_the_alignment_jobs_only():
    """The losses are read by the plan and the alignment job, not by the parameters every
    script imports: adding or editing a loss re-runs alignment (and the study's figure), never
    the data, SFT, RM, sampling or evaluation jobs."""
    scripts = ROOT / "workflow_scripts"
    assert "exoflow.losses.ipo" in package_closure(scripts / "train_align.py", PACKAGE)
    for name in ("preprocess", "train_stage", "sample", "label_rewards", "precompute_ref",
                 "eval_checkpoint", "summarize"):
        closure = package_closure(scripts / f"{name}.py", PACKAGE)
        assert not [m for m in closure if m.startswith("exoflow.losses")], name


def test_the_scripts_reach_the_config_sections_and_not_the_dry_runs_checks():
    """Every workflow script reads its parameters from the config's sections; none reaches the
    schema (which reads the losses), the constraints table or the dry run's checks (which read
    the plan): exoflow/config/__init__.py imports the sections only, so an edit to a check
    re-runs no job."""
    checks = {"exoflow.config.schema", "exoflow.config.constraints", "exoflow.config.check",
              "exoflow.plan"}
    for script in sorted((ROOT / "workflow_scripts").glob("*.py")):
        closure = set(package_closure(script, PACKAGE))
        assert "exoflow.config.fields" in closure, script.name
        assert not checks & closure, (script.name, checks & closure)
