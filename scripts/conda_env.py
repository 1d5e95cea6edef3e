"""envs/exoflow.yaml from requirements.lock: the conda environment of every rule
(`snakemake --sdm conda`) with the lock's exact pins (scripts/lock.sh runs this).

    python scripts/conda_env.py requirements.lock envs/exoflow.yaml
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADER = """\
# One environment for every rule (usable with `snakemake --sdm conda`), generated from
# requirements.lock by scripts/conda_env.py (make lock): the same exact versions as `make install`.
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python={python}
  - pip
  - pip:
"""


def pins(lock_text: str) -> list[str]:
    """The ``name==version`` lines of a lock file, in its order."""
    return [ln.strip() for ln in lock_text.splitlines()
            if ln.strip() and not ln.startswith("#")]


def python_version(lock_text: str) -> str:
    """``3.11`` from the lock's header line ``# Linux x86_64 CPython 3.11.7.``."""
    m = re.search(r"CPython (\d+\.\d+)", lock_text)
    if not m:
        raise SystemExit("requirements.lock: no 'CPython X.Y' in its header")
    return m.group(1)


def conda_env(lock_text: str) -> str:
    body = "".join(f"      - {p}\n" for p in pins(lock_text) if not p.startswith("pip=="))
    return HEADER.format(python=python_version(lock_text)) + body + "      - -e ..\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    Path(argv[1]).write_text(conda_env(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
