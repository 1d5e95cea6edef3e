"""Exact environments: requirements.lock is what `make install` installs and what
envs/exoflow.yaml pins; it satisfies pyproject.toml; the GPU bundle's checks (scripts/
gpu_bundle.py) refuse a wheel the GPU machine's Python cannot install and a requirement that
neither the bundle nor the image meets. `make gpu-rehearsal` runs the bundle for real."""

import importlib.metadata as md
import importlib.util
import re
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

LOCK = ROOT / "requirements.lock"


def lock_pins() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[canonicalize_name(name)] = version
    return out


def test_the_conda_env_pins_exactly_the_lock():
    env = yaml.safe_load((ROOT / "envs" / "exoflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pip if "==" in p}
    assert pins == {k: v for k, v in lock_pins().items() if k != "pip"}
    assert "-e .." in pip
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    made_by = re.search(r"CPython (\d+\.\d+)\.", LOCK.read_text()).group(1)
    assert python == f"python={made_by}"


def test_the_lock_satisfies_pyproject_and_make_install_uses_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    for text in reqs:
        r = Requirement(text)
        name = canonicalize_name(r.name)
        assert name in pins, f"{r.name} is not in requirements.lock: run make lock"
        assert r.specifier.contains(pins[name], prereleases=True), (text, pins[name])
    make = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -r requirements.lock" in make
    assert "requirements.lock" in make.split("$(VENV)/.installed:")[1].splitlines()[0]


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="not the environment make install built")
def test_the_installed_environment_is_the_lock():
    pins = lock_pins()
    have = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    have.pop("exoflow", None)
    have = {k: v.split("+")[0] for k, v in have.items()}  # torch's +cpu
    assert have == pins


def _bundle():
    spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "scripts" / "gpu_bundle.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wheel(dest: Path, name: str, version: str, tag: str, requires=()) -> Path:
    path = dest / f"{name}-{version}-{tag}.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_the_bundle_check_refuses_what_the_gpu_machine_could_not_install(tmp_path):
    b = _bundle()
    env = b.marker_env("3.12")
    image = {"numpy": "2.5.2", "torch": "2.11.0", "packaging": None}
    carry = {"alpha": "1.0", "beta-core": "2.0"}
    _wheel(tmp_path, "alpha", "1.0", "py3-none-any",
           ["beta-core==2.0", "numpy>=2", "torch>=2.6", "colorama; sys_platform == 'win32'",
            "tomli; python_version < '3.11'"])
    _wheel(tmp_path, "beta_core", "2.0", "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64")
    rows = b.check(tmp_path, carry, image, "3.12", env)
    assert [(r[0], r[1]) for r in rows] == [("alpha", "1.0"), ("beta-core", "2.0")]
    # a wheel for another Python
    (tmp_path / "beta_core-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl").unlink()
    _wheel(tmp_path, "beta_core", "2.0", "cp311-cp311-manylinux_2_17_x86_64")
    with pytest.raises(SystemExit, match="cannot be installed by CPython 3.12"):
        b.check(tmp_path, carry, image, "3.12", env)
    assert b.check(tmp_path, carry, image, "3.11", b.marker_env("3.11"))
    # a requirement nobody meets, and one the image meets at the wrong version
    for f in tmp_path.glob("alpha-*"):
        f.unlink()
    _wheel(tmp_path, "alpha", "1.0", "py3-none-any", ["beta-core==2.0", "gamma>=1"])
    with pytest.raises(SystemExit, match="requires gamma>=1, which neither the bundle nor"):
        b.check(tmp_path, carry, image, "3.11", b.marker_env("3.11"))
    for f in tmp_path.glob("alpha-*"):
        f.unlink()
    _wheel(tmp_path, "alpha", "1.0", "py3-none-any", ["numpy<2"])
    with pytest.raises(SystemExit, match="requires numpy<2; the image has 2.5.2"):
        b.check(tmp_path, carry, image, "3.11", b.marker_env("3.11"))
    # a wheel of a version the lock does not hold, and a missing one
    for f in tmp_path.glob("alpha-*"):
        f.unlink()
    _wheel(tmp_path, "alpha", "1.1", "py3-none-any")
    with pytest.raises(SystemExit, match="is alpha 1.1; the lock says 1.0"):
        b.check(tmp_path, carry, image, "3.11", b.marker_env("3.11"))
    for f in tmp_path.glob("alpha-*"):
        f.unlink()
    with pytest.raises(SystemExit, match="no wheel in .* for alpha"):
        b.check(tmp_path, carry, image, "3.11", b.marker_env("3.11"))


def test_the_bundle_carries_what_the_image_lacks_at_the_locked_versions():
    """Read off this (locked) environment: Snakemake, jsonschema and DeepSpeed with their
    requirements, none of the image's packages, every version the lock's."""
    b = _bundle()
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not the environment make install built")
    image = b.read_pins(ROOT / "scripts" / "gpu_image.txt")
    assert image["transformers"] == "5.17.0" and image["torch"] == "2.11.0"
    carry, used = b.closure(b.NEEDED, image, lock_pins(), b.marker_env("3.12"))
    assert {"snakemake", "jsonschema", "deepspeed", "pydantic", "yte"} <= set(carry)
    assert not set(carry) & set(image)
    assert {"torch", "numpy", "pyyaml"} <= used
    assert all(lock_pins()[n] == v for n, v in carry.items())
