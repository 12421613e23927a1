#!/usr/bin/env bash
# The GPU run in one call (docs/benchmarks/gpu.md), with the machine's own python3, not .venv:
#
#     make device-bundle                                   # here, once: .device/ (~51 MiB)
#     bench/device_run.sh "$OUT" --budget-s 480            # there, with .device carried
#     PYTHON=.venv/bin/python bench/device_run.sh /tmp/dry --cpu-dry-run   # here: every step on CPU, tiny sizes
#
# The dry run needs a Python with torch (this machine's python3 has none). The bundle's wheels are
# for the GPU machine's Python 3.12: on another version setup records that they did not install,
# and the steps use what that Python has (the project's venv has multiprocess and dill).
#
# Installs the bundle's wheels into a temporary site folder, then runs the steps (environment,
# throughput, squad, profile, gap) in order, each in its own process with its own time limit
# under one deadline, rewriting OUT/summary.json, OUT/summary.md and OUT/log.txt after each:
# a run cut short keeps what finished. OUT stays flat, 8 files at most. PYTHON=... picks the
# interpreter (default python3). python -m bench.device_run --help lists the options.
set -euo pipefail

usage="usage: bench/device_run.sh OUT [--budget-s 480] [--cpu-dry-run] [--steps a,b] [--bundle DIR]"
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "$usage" >&2
    exit 2
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || { echo "bench/device_run.sh: no $python here (set PYTHON)" >&2; exit 3; }
# The orchestrator is standard library only; the steps it starts get the wheels' site folder too.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" -m bench.device_run "$@"
