#!/usr/bin/env bash
# Everything that needs a GPU, in one command: the CUDA tests, every benchmark on the GPU, one table of ratios.
#   bash benchmarks/gpu.sh          # on a machine with CUDA
#   bash benchmarks/gpu.sh --cpu    # the same steps on the CPU (the CUDA tests skip, saying why)
# Options: see python benchmarks/gpu.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu.py "$@"
