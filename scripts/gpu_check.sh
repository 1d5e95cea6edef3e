#!/usr/bin/env bash
# The GPU check: the whole DAG on a GPU, then one alignment step and one sampling batch at
# Pythia-2.8B's shape. Needs at least one CUDA GPU; no network (everything is built locally).
#
#   scripts/gpu_check.sh            # from the repository root, after `make install`
#
# 1. snakemake eval_all with configs/gpu_check.yaml (a scratch GPT-NeoX of Pythia-410M's layers,
#    synthetic data, bf16, DeepSpeed ZeRO-2, one GPU per job via profiles/local), at most 10
#    minutes; then per-stage wall time, throughput and peak GPU memory (scripts/gpu_report.py).
# 2. benchmarks/bench_gpu_shapes.py --shape pythia-2.8b (random weights): one EXO step on 16
#    prompts x 2 x 512 tokens, one sampling batch of 32 prompts x 2 x 200 new tokens.
# Without a GPU it stops at once with one line. Put its output in benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing run" >&2
    exit 1
fi
LIMIT=${GPU_CHECK_LIMIT:-600}
echo "== gpu_check: $("$PY" -c 'import torch; print(torch.cuda.device_count(), "x", torch.cuda.get_device_name(0), "| torch", torch.__version__)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
start=$(date +%s)
rc=0
timeout "$LIMIT" "$PY" -m snakemake --profile profiles/local eval_all \
    --configfile configs/gpu_check.yaml > gpu_check.snakemake.log 2>&1 || rc=$?
echo "== eval_all: exit $rc after $(( $(date +%s) - start )) s (limit $LIMIT s; log: gpu_check.snakemake.log)"
"$PY" scripts/gpu_report.py results/gpu_check || true
[ -f results/gpu_check/summary.csv ] && head -20 results/gpu_check/summary.csv
echo "== Pythia-2.8B shape, random weights"
"$PY" benchmarks/bench_gpu_shapes.py --shape pythia-2.8b --device cuda || rc=$?
exit $rc
