#!/usr/bin/env bash
# The wheels the GPU check needs beyond the GPU machine's image, into .whl/ (git-ignored), for
# CPython 3.12 manylinux x86-64 at requirements.lock's versions; prints each and the total
# (at most 60 MiB). Run where a package registry is reachable, after `make install`:
#   bash scripts/gpu_bundle.sh            # then carry .whl/ with the tree: benchmarks/RESULTS.md
# Options go to scripts/gpu_bundle.py (--python 3.11 --dest .whl-cp311: the rehearsal's).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PY" scripts/gpu_bundle.py "$@"
