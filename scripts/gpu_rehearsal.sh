#!/usr/bin/env bash
# make gpu-rehearsal: the GPU check as the GPU machine would run it, on this CPU.
# 1. A fresh venv holding only the GPU image's packages that the check uses, at the image's
#    versions (scripts/gpu_image.txt) or the closest the registry has, else requirements.lock's;
#    torch 2.13 CPU stands in for the image's 2.11 CUDA. No snakemake, deepspeed, jsonschema.
# 2. The bundle for this Python: .whl/MANIFEST.txt's packages at its versions (binary wheels
#    built for this CPython: gpu_bundle.py --python X.Y --dest .whl-cpXY), compared with
#    .whl/MANIFEST.txt name by name; .whl/ itself when this Python is the GPU's 3.12.
# 3. scripts/gpu_check.sh --cpu with that venv's Python, in a network namespace without any
#    network (unshare -n, where it works; else pip's --no-index and HF_HUB_OFFLINE alone): the
#    check installs the bundle itself and every import resolves from it.
#   bash scripts/gpu_bundle.sh && make gpu-rehearsal          # OUT: gpu_rehearsal_out/
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_rehearsal_out}
PY=${PYTHON:-python3}
DEV=${DEV_PYTHON:-.venv/bin/python}
[ -f .whl/MANIFEST.txt ] || { echo "gpu_rehearsal: no .whl/MANIFEST.txt: run bash scripts/gpu_bundle.sh first" >&2; exit 1; }
ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
tag=cp${ver/./}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)

# ---- 2. the bundle for this Python ---------------------------------------------------------
if [ "$ver" = 3.12 ]; then
    wheels=.whl
    "$DEV" scripts/gpu_bundle.py --python "$ver" --dest "$wheels" --image-requirements "$work/image.txt" > /dev/null
else
    wheels=.whl-$tag
    "$DEV" scripts/gpu_bundle.py --python "$ver" --dest "$wheels" --image-requirements "$work/image.txt" > /dev/null
    diff <(grep -v '^#' .whl/MANIFEST.txt | awk '{print $1, $2}') \
         <(grep -v '^#' "$wheels/MANIFEST.txt" | awk '{print $1, $2}') \
        || { echo "gpu_rehearsal: $wheels holds other packages than .whl (above); run bash scripts/gpu_bundle.sh again" >&2; exit 1; }
fi
echo "== bundle for CPython $ver: $wheels ($(grep -vc '^#' "$wheels/MANIFEST.txt") wheels, the packages and versions of .whl/MANIFEST.txt)"

# ---- 1. the image's packages -----------------------------------------------------------------
"$PY" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$DEV" - "$work/image.txt" "$work/venv/bin/python" > "$work/image-here.txt" <<'PYEOF'
import json, re, subprocess, sys
from packaging.version import Version
src, py = sys.argv[1], sys.argv[2]
for line in open(src).read().split():
    name, want = line.split("==")
    if name == "torch":  # the CPU build of this machine stands in for the image's CUDA one
        print("torch==2.13.0"); continue
    out = subprocess.run([py, "-m", "pip", "index", "versions", name], capture_output=True,
                         text=True).stdout
    m = re.search(r"Available versions: (.*)", out)
    have = [Version(v.strip()) for v in m.group(1).split(",")] if m else []
    w = Version(want)
    if not have or w in have:
        print(f"{name}=={want}"); continue
    below = [v for v in have if v <= w]
    pick = max(below) if below else min(have)  # the closest the registry has
    print(f"{name}=={pick}  # the image has {want}", file=sys.stderr)
    print(f"{name}=={pick}")
PYEOF
"$work/venv/bin/python" -m pip install --quiet -r "$work/image-here.txt"
for m in snakemake deepspeed jsonschema datasets; do
    if "$work/venv/bin/python" -c "import $m" 2>/dev/null; then
        echo "gpu_rehearsal: $m is importable in the image's stand-in; it must come from the bundle" >&2; exit 1
    fi
done
echo "== the image's stand-in: $(wc -l < "$work/image-here.txt") packages ($(tr '\n' ' ' < "$work/image-here.txt"))"

# ---- 3. the check, offline ---------------------------------------------------------------------
net=()  # a network namespace: loopback only (torchrun's processes meet on 127.0.0.1)
if unshare -n sh -c 'ip link set lo up' 2>/dev/null; then
    net=(unshare -n sh -c 'ip link set lo up && exec "$@"' sh)
    echo "== scripts/gpu_check.sh --cpu $OUT, in a network namespace with loopback only"
else
    echo "== scripts/gpu_check.sh --cpu $OUT (no network namespace here: pip --no-index and HF_HUB_OFFLINE only)"
fi
rc=0
env -u VIRTUAL_ENV PYTHON="$work/venv/bin/python" GPU_CHECK_WHEELS="$wheels" \
    GPU_CHECK_SITE="$work/site" GPU_CHECK_LIMIT="${GPU_CHECK_LIMIT:-1500}" \
    "${net[@]}" bash scripts/gpu_check.sh --cpu "$OUT" || rc=$?
grep -q "from the bundle" "$OUT/env.txt" || { echo "gpu_rehearsal: nothing was imported from the bundle" >&2; rc=1; }
if grep -E "^(snakemake|jsonschema|deepspeed|pydantic|yte) " "$OUT/env.txt" | grep -v "from the bundle"; then
    echo "gpu_rehearsal: the package(s) above did not come from the bundle" >&2; rc=1
fi
echo "== gpu_rehearsal: exit $rc after $(( $(date +%s) - t0 )) s; report in $OUT/"
exit $rc
