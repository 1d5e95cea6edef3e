"""The wheels the GPU check needs beyond the lent GPU machine's image, for a machine with no
package registry: run here (where the registry is reachable), carry the folder with the
working tree (scripts/gpu_check.sh installs it with `pip --no-index --no-deps --target`).

    python scripts/gpu_bundle.py                      # .whl/, for CPython 3.12 manylinux x86-64
    python scripts/gpu_bundle.py --python 3.11 --dest .whl-cp311   # the rehearsal's (make gpu-rehearsal)

What goes in: the packages the check imports that the image lacks (:data:`NEEDED`: Snakemake,
jsonschema for the config check, DeepSpeed for ZeRO-2) and everything they require for that
Python on Linux x86-64, down to what the image holds (scripts/gpu_image.txt), each at
requirements.lock's exact version (the versions the project is tested with). Binary wheels are
downloaded for the target's tags; packages published only as source (DeepSpeed, with its
CUDA ops left to its JIT, DS_BUILD_OPS=0) are built here with --no-deps into pure-Python wheels.
Then it checks the bundle: one wheel per package at its locked version, every wheel's tag
installable on the target, every requirement of every wheel met by the bundle or the image,
the total under --max-mib; writes MANIFEST.txt (name, version, file, sha256) and prints the
table. Nothing the check does not import travels (datasets, openai, gguf are imported lazily,
by the hub source, the judge and GGUF import; the image's transformers 5.17 is supported).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import os
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ["snakemake", "jsonschema", "deepspeed"]
# What the check imports from the image (pyproject's dependencies the image has), so that the
# rehearsal installs exactly these, at the image's versions where known.
USED_FROM_IMAGE = ["torch", "transformers", "tokenizers", "accelerate", "safetensors", "peft",
                   "pandas", "scipy", "matplotlib", "tensorboard", "tqdm", "pyyaml", "numpy",
                   "huggingface-hub"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64", "linux_x86_64"]


def read_pins(path: Path) -> dict[str, str | None]:
    """``{canonical name: version or None}`` of a ``name==version`` / ``name`` list file."""
    out: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        out[canonicalize_name(name)] = version.strip() or None
    return out


def marker_env(python: str) -> dict:
    full = {"3.12": "3.12.3"}.get(python, f"{python}.0")
    return {"python_version": python, "python_full_version": full, "sys_platform": "linux",
            "platform_machine": "x86_64", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "os_name": "posix",
            "platform_system": "Linux", "platform_release": "", "platform_version": "",
            "implementation_version": full, "extra": ""}


def requirements(requires: list[str] | None, env: dict) -> list[Requirement]:
    out = []
    for text in requires or []:
        r = Requirement(text)
        if r.marker is None or r.marker.evaluate(env):
            out.append(r)
    return out


def closure(roots, image: dict, lock: dict, env: dict) -> tuple[dict, set]:
    """``({name: version} to carry, {image packages they use})``, from the installed
    metadata of this environment, which must hold the lock's versions."""
    carry: dict[str, str] = {}
    used: set[str] = set()
    todo = [canonicalize_name(n) for n in roots]
    while todo:
        name = todo.pop()
        if name in carry:
            continue
        if name not in lock:
            raise SystemExit(f"gpu_bundle: {name} is needed but not in requirements.lock")
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"gpu_bundle: {name} is not installed here: run `make install` "
                             "first (the bundle is read off the locked environment)") from None
        if dist.version != lock[name]:
            raise SystemExit(f"gpu_bundle: {name} {dist.version} is installed here, "
                             f"requirements.lock says {lock[name]}: run `make install`")
        carry[name] = dist.version
        for r in requirements(dist.requires, env):
            dep = canonicalize_name(r.name)
            if dep in image:
                used.add(dep)
            else:
                todo.append(dep)
    return carry, used


def image_closure(roots, image: dict, env: dict) -> set:
    """The image packages ``roots`` reach through image packages (what the rehearsal's stand-in
    for the image must hold)."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in roots]
    while todo:
        name = todo.pop()
        if name in seen or name not in image:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        todo += [canonicalize_name(r.name) for r in requirements(dist.requires, env)]
    return seen


def target_tags(python: str) -> set[str]:
    major, minor = (int(x) for x in python.split("."))
    abis = [f"cp{major}{minor}", "abi3", "none"]
    tags = list(cpython_tags((major, minor), abis=abis, platforms=PLATFORMS))
    tags += list(compatible_tags((major, minor), interpreter=f"cp{major}{minor}",
                                 platforms=PLATFORMS))
    return {str(t) for t in tags}


def fetch(name: str, version: str, dest: Path, python: str) -> None:
    """``name==version`` as a wheel for the target into ``dest``: downloaded, else (a source
    only release) built here."""
    abi = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
           "--abi", "none", *[a for p in PLATFORMS for a in ("--platform", p)],
           "--dest", str(dest), f"{name}=={version}"]
    if subprocess.run(cmd, capture_output=True, text=True).returncode == 0:
        return
    env = dict(os.environ, DS_BUILD_OPS="0")  # DeepSpeed: no CUDA ops at build time (JIT)
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--no-build-isolation", "--wheel-dir", str(dest), f"{name}=={version}"]
    proc = subprocess.run(build, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"gpu_bundle: {name}=={version}: no wheel for CPython {python} and "
                         f"the source would not build here:\n{proc.stderr[-2000:]}")


def wheel_metadata(path: Path):
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(meta).decode("utf-8"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check(dest: Path, carry: dict, image: dict, python: str, env: dict) -> list[tuple]:
    """``[(name, version, file, bytes, sha256)]`` of the bundle; SystemExit naming what is
    wrong (a missing or extra wheel, a tag the target cannot install, an unmet requirement)."""
    tags = target_tags(python)
    wheels = {}
    for w in sorted(dest.glob("*.whl")):
        name, version, _, wtags = parse_wheel_filename(w.name)
        name = canonicalize_name(name)
        if name not in carry:
            raise SystemExit(f"gpu_bundle: {w} is not part of the bundle: remove it")
        if str(version) != carry[name]:
            raise SystemExit(f"gpu_bundle: {w} is {name} {version}; the lock says {carry[name]}")
        if name in wheels:
            raise SystemExit(f"gpu_bundle: two wheels of {name} in {dest}")
        if not {str(t) for t in wtags} & tags:
            raise SystemExit(f"gpu_bundle: {w.name} cannot be installed by CPython {python} "
                             "on Linux x86-64")
        wheels[name] = w
    missing = sorted(set(carry) - set(wheels))
    if missing:
        raise SystemExit(f"gpu_bundle: no wheel in {dest} for {', '.join(missing)}")
    for name, w in wheels.items():
        for r in requirements(wheel_metadata(w).get_all("Requires-Dist"), env):
            dep = canonicalize_name(r.name)
            have = carry.get(dep) or image.get(dep)
            if dep not in carry and dep not in image:
                raise SystemExit(f"gpu_bundle: {name} requires {r}, which neither the bundle "
                                 "nor the image holds")
            if have and r.specifier and not r.specifier.contains(have, prereleases=True):
                raise SystemExit(f"gpu_bundle: {name} requires {r}; "
                                 f"{'the bundle' if dep in carry else 'the image'} has {have}")
    return [(n, carry[n], w.name, w.stat().st_size, sha256(w)) for n, w in sorted(wheels.items())]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=str(ROOT / ".whl"))
    ap.add_argument("--python", default="3.12", help="the target's CPython X.Y")
    ap.add_argument("--lock", default=str(ROOT / "requirements.lock"))
    ap.add_argument("--image", default=str(ROOT / "scripts" / "gpu_image.txt"))
    ap.add_argument("--max-mib", type=float, default=60.0)
    ap.add_argument("--image-requirements", default=None,
                    help="also write the image packages the check uses, pinned (the image's "
                         "version where gpu_image.txt gives one, else the lock's), to this file")
    a = ap.parse_args(argv)
    lock, image = read_pins(Path(a.lock)), read_pins(Path(a.image))
    env = marker_env(a.python)
    carry, used = closure(NEEDED, image, lock, env)
    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    have = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in dest.glob("*.whl")}
    for w in have.values():  # an older bundle's wheel of another version goes
        name, version = parse_wheel_filename(w.name)[:2]
        if carry.get(canonicalize_name(name)) != str(version):
            w.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in sorted(carry.items()):
            w = have.get(name)
            if w is not None and w.exists():
                continue
            fetch(name, version, Path(tmp), a.python)
            for built in Path(tmp).glob("*.whl"):
                built.rename(dest / built.name)
    rows = check(dest, carry, image, a.python, env)
    total = sum(r[3] for r in rows)
    with open(dest / "MANIFEST.txt", "w") as f:
        f.write(f"# scripts/gpu_bundle.py --python {a.python}: {len(rows)} wheels, "
                f"{total / 2**20:.1f} MiB; name version file sha256\n")
        for name, version, file, _, digest in rows:
            f.write(f"{name} {version} {file} {digest}\n")
    print("| package | version | MiB |\n| --- | --- | --- |")
    for name, version, _, size, _ in rows:
        print(f"| {name} | {version} | {size / 2**20:.2f} |")
    print(f"{dest}: {len(rows)} wheels, {total / 2**20:.1f} MiB for CPython {a.python} "
          f"(limit {a.max_mib:g} MiB); the image provides {', '.join(sorted(used))}")
    if a.image_requirements:
        need = image_closure(USED_FROM_IMAGE + sorted(used), image, env)
        lines = [f"{n}=={image[n] or lock[n]}" for n in sorted(need) if image[n] or n in lock]
        Path(a.image_requirements).write_text("\n".join(lines) + "\n")
    if total > a.max_mib * 2**20:
        print(f"gpu_bundle: {total / 2**20:.1f} MiB is over the limit of {a.max_mib:g} MiB",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
