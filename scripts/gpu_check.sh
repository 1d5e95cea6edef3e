#!/usr/bin/env bash
# The GPU check: the whole DAG on one GPU, then one alignment step and one sampling batch at
# Pythia-2.8B's shape. Needs nothing but this working tree with .whl/ (scripts/gpu_bundle.sh)
# and a Python with torch: no network, no install step.
#
#   bash scripts/gpu_check.sh [OUT]          # on the GPU machine; OUT defaults to gpu_check_out/
#   bash scripts/gpu_check.sh --cpu [OUT]    # the same steps on the CPU at a tiny size
#                                            # (make gpu-rehearsal)
#
# 1. If `snakemake` is not importable, installs .whl/*.whl (or $GPU_CHECK_WHEELS/*.whl) with
#    `pip --no-index --no-deps --target /tmp/site` (checked against .whl/MANIFEST.txt) and puts
#    /tmp/site and this tree on PYTHONPATH, which the jobs Snakemake starts inherit; every hub
#    and dataset access is switched off (HF_HUB_OFFLINE=1 ...).
# 2. snakemake eval_all with configs/gpu_check.yaml (a scratch GPT-NeoX of Pythia-410M's layers,
#    synthetic data, bf16, DeepSpeed ZeRO-2, one GPU per job via profiles/local), at most
#    $GPU_CHECK_LIMIT seconds (420); then per-stage wall time, throughput and peak GPU memory
#    (scripts/gpu_report.py). --cpu: configs/tiny.yaml + configs/gpu_rehearsal.yaml (2 CPU
#    processes with ZeRO-2 on gloo, fp32).
# 3. benchmarks/bench_gpu_shapes.py --shape pythia-2.8b (random weights): one EXO step on 16
#    prompts x 2 x 512 tokens, one sampling batch of 32 prompts x 2 x 200 new tokens (--cpu: the
#    tiny shape).
# It starts from nothing (results/gpu_check or results/gpu_rehearsal is removed first).
# Everything it writes goes into OUT (at most 8 files, flat, as the device tool brings back):
# env.txt, snakemake.log, report.md, summary.csv, shapes.txt, logs.tar.gz, SUMMARY.txt; the
# short summary is printed last. Exit status: 0 only when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=gpu
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; shift; fi
OUT=${1:-gpu_check_out}
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/site}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
LIMIT=${GPU_CHECK_LIMIT:-420}
status=()
note() { echo "$*" | tee -a "$OUT/SUMMARY.txt"; }

if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing run" >&2
    exit 1
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/{env.txt,snakemake.log,report.md,summary.csv,shapes.txt,logs.tar.gz,SUMMARY.txt}

# ---- 1. the bundle ---------------------------------------------------------------------------
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1
if ! "$PY" -c "import snakemake" 2>/dev/null; then
    if [ ! -f "$WHEELS/MANIFEST.txt" ]; then
        echo "gpu_check: snakemake is not importable and $WHEELS/MANIFEST.txt is missing: run bash scripts/gpu_bundle.sh where a package registry is reachable, and carry $WHEELS/ with the tree" >&2
        exit 1
    fi
    stamp="$SITE/.exoflow-bundle-$(sha256sum "$WHEELS/MANIFEST.txt" | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        (cd "$WHEELS" && grep -v '^#' MANIFEST.txt | awk '{print $4 "  " $3}' | sha256sum --quiet -c -) || {
            echo "gpu_check: the wheels in $WHEELS do not match its MANIFEST.txt; run bash scripts/gpu_bundle.sh again" >&2; exit 1; }
        rm -rf "$SITE"
        t0=$(date +%s)
        "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl || {
            echo "gpu_check: pip could not install $WHEELS/*.whl into $SITE" >&2; exit 1; }
        touch "$stamp"
        echo "== bundle: $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - t0 )) s"
    fi
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$SITE/bin:$PATH"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - "$ROOT" "$SITE" > "$OUT/env.txt" 2>&1 <<'PYEOF'
import importlib, platform, sys
root, site = sys.argv[1], sys.argv[2]
import torch
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}, "
      f"cuda {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"
      + (f": {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
bad = []
for name in ["snakemake", "jsonschema", "deepspeed", "pydantic", "yte", "transformers",
             "accelerate", "peft", "safetensors", "tokenizers", "pandas", "scipy", "matplotlib",
             "tensorboard", "exoflow"]:
    try:
        m = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 (reported, then the check stops)
        bad.append(name)
        print(f"{name}: NOT IMPORTABLE ({type(e).__name__}: {e})")
        continue
    where = getattr(m, "__file__", "") or ""
    src = "bundle" if where.startswith(site) else "tree" if where.startswith(root) else "image"
    print(f"{name} {getattr(m, '__version__', '')} from the {src}: {where}")
sys.exit(1 if bad else 0)
PYEOF
rc=$?
cat "$OUT/env.txt"
[ $rc -eq 0 ] || { note "gpu_check: an import failed (env.txt)"; exit 1; }

# ---- 2. the DAG ------------------------------------------------------------------------------
if [ "$MODE" = gpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/env.txt" 2>&1 || true
    RUN=gpu_check
    SMK=(--profile profiles/local eval_all --configfile configs/gpu_check.yaml)
else
    RUN=gpu_rehearsal
    SMK=(eval_all --cores 2 --configfile configs/tiny.yaml configs/gpu_rehearsal.yaml)
fi
rm -rf "results/$RUN"  # the check's own run, from nothing
start=$(date +%s)
timeout "$LIMIT" "$PY" -m snakemake "${SMK[@]}" > "$OUT/snakemake.log" 2>&1
dag=$?
dag_s=$(( $(date +%s) - start ))
"$PY" scripts/gpu_report.py "results/$RUN" > "$OUT/report.md" 2>&1 || true
[ -f "results/$RUN/summary.csv" ] && cp "results/$RUN/summary.csv" "$OUT/summary.csv"
tar -czf "$OUT/logs.tar.gz" -C results "$RUN/logs" "$RUN/benchmarks" \
    $(cd results && ls -d "$RUN"/models/*/metrics.json "$RUN"/models/align/*/metrics.json 2>/dev/null) 2>/dev/null || true

# ---- 3. the paper's shapes -------------------------------------------------------------------
if [ "$MODE" = gpu ]; then
    SHAPE=(--shape pythia-2.8b --device cuda)
else
    SHAPE=(--shape tiny --device cpu --len 48 --gen 12 --prompts 2 --sample-prompts 2 --repeats 1)
fi
"$PY" benchmarks/bench_gpu_shapes.py "${SHAPE[@]}" > "$OUT/shapes.txt" 2>&1
shapes=$?

# ---- the summary, last -----------------------------------------------------------------------
note "== gpu_check ($MODE) $(head -1 "$OUT/env.txt")"
note "bundle: $(grep -c 'from the bundle' "$OUT/env.txt") packages imported from $SITE; every import resolved"
note "eval_all: exit $dag after $dag_s s (limit $LIMIT s; snakemake.log)"
[ -f "$OUT/report.md" ] && sed 's/^/  /' "$OUT/report.md" | tee -a "$OUT/SUMMARY.txt"
note "shapes: exit $shapes"
sed 's/^/  /' "$OUT/shapes.txt" | tail -4 | tee -a "$OUT/SUMMARY.txt"
[ $dag -eq 0 ] && [ $shapes -eq 0 ] && [ -f "$OUT/summary.csv" ]
