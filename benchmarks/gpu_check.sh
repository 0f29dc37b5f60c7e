#!/usr/bin/env bash
# The GPU smoke check (issue 13): one number for each item a CPU cannot settle, on one GPU, in under
# 8 minutes. benchmarks/gpu_check.py says what each section measures; put its summary in the README.
#
#   benchmarks/gpu_check.sh                          # CUDA, full sizes
#   benchmarks/gpu_check.sh --sections signs,memory  # some sections only
#   benchmarks/gpu_check.sh --device cpu --quick     # tiny sizes on the CPU: checks the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# A hard stop a little under 8 minutes; every section prints as it goes, so a stop keeps what was done.
exec timeout --signal=INT --kill-after=20 470 "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
