#!/usr/bin/env bash
# The test suite as a newcomer first runs it: every compile cache empty and private
# (PyTensor's C and Numba caches under base_compiledir, Numba's own, JAX's), the 25
# slowest tests listed, the wall time printed. `make test-cold`; extra arguments go to
# pytest (e.g. tests/cold_run.sh -n 0 to time the suite on one core).
set -euo pipefail
cd "$(dirname "$0")/.."
caches=$(mktemp -d "${TMPDIR:-/tmp}/ift6266-cold.XXXXXX")
trap 'rm -rf "$caches"' EXIT
export PYTENSOR_FLAGS="base_compiledir=$caches/pytensor${PYTENSOR_FLAGS:+,$PYTENSOR_FLAGS}"
export NUMBA_CACHE_DIR="$caches/numba" JAX_COMPILATION_CACHE_DIR="$caches/jax" IFT6266_CACHE="$caches/ift6266"
start=$(date +%s)
status=0
.venv/bin/python -m pytest -q -ra --durations=25 "$@" || status=$?
echo "cold test run: $(( $(date +%s) - start )) s wall, exit status $status (private caches in $caches, removed)"
exit "$status"
