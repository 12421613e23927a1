#!/usr/bin/env bash
# The GPU check in one call, for whenever a GPU is at hand (under 8 minutes):
#
#     bench/gpu_check.sh OUTDIR [--model DIR] [--steps N] ...   (python -m bench.gpu_check --help)
#
# fp16 and bf16 training sequences/s and MFU for the packaged model and a BERT-base-size config
# at seq 384, the fp16 GradScaler path, and a profile of a few steps (nsys if installed, else
# torch.profiler), written as OUTDIR/gpu_check.json + OUTDIR/gpu_check.md (python -m bench.gpu_check).
# On a machine without a usable CUDA GPU it stops at once, saying why, and writes nothing.
# Written without a GPU at hand: the CUDA path has not been run yet (docs/scaling.md). On the lent
# GPU machine, which lacks this venv and the packaged model, bench/device_run.sh is the way
# (docs/benchmarks/gpu.md).
set -euo pipefail

usage="usage: bench/gpu_check.sh OUTDIR [python -m bench.gpu_check options]"
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "$usage" >&2
    exit 2
fi
out_dir=$1
shift
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
[[ -x "$python" ]] || python=$(command -v python3)

stop() {
    echo "bench/gpu_check.sh: $1; nothing was run (this check needs an NVIDIA GPU)" >&2
    exit 3
}

# Cheap checks first, so a CPU-only machine answers at once.
command -v nvidia-smi >/dev/null 2>&1 || stop "no NVIDIA driver here (nvidia-smi not found)"
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null) || stop "nvidia-smi found no GPU ($(nvidia-smi 2>&1 | head -n 1))"
[[ -n "$gpus" ]] || stop "nvidia-smi lists no GPU"
cuda=$("$python" -c 'import torch; print(torch.version.cuda or "none", torch.cuda.is_available())' 2>&1) \
    || stop "cannot import torch with $python: $cuda"
[[ "$cuda" == *True ]] || stop "torch cannot use the GPU ($gpus): CUDA build ${cuda% *}, cuda.is_available() False (a CPU wheel? set TORCH_SPEC and make install)"

echo "bench/gpu_check.sh: $(echo "$gpus" | head -n 1) ($(echo "$gpus" | wc -l) GPU(s)); writing $out_dir" >&2
mkdir -p "$out_dir"
cd "$repo"
# 8 minutes in all; the Python side stops its own runs well before that.
exec timeout --signal=TERM --kill-after=20 480 "$python" -m bench.gpu_check "$out_dir" "$@"
