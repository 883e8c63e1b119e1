#!/usr/bin/env bash
# One prepared pass on a CUDA machine, for the few minutes such a machine is lent:
#   1. the GPU, driver, torch and pluggy versions;
#   2. the overhead benchmark on CUDA (tiny MLP, then medium), whose CUDA run also counts
#      synchronisations per iteration with torch.cuda.set_sync_debug_mode;
#   3. the test suite without the slow tests: on a CUDA machine the Runner's default device
#      is cuda:0, so most tests then train on the GPU, and the CUDA-only ones run.
# Everything is written under $OUT (default ./gpu-results); each step has its own time limit
# so that a hang in one still leaves the others' results.
#
#     OUT=/tmp/gpu bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    echo "   exit $?, $((SECONDS - start)) s"
}

{
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    "$PY" -c "import sys, torch, pluggy; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'pluggy', pluggy.__version__)"
    nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# No package index there: install the checkout and its plugins without dependencies
# (torch, pluggy and the plugins' libraries are already installed).
step install 120 bash -c "$PY -m pip install --no-deps --no-build-isolation --no-index -e . \
    $(printf -- '-e %s ' plugins/pluginloop-*/)"

# On an H100 machine a tiny-MLP worker took ~17 s (the host-bound step is ~1.2 ms): three
# variants, two repeats and the sync pass fit in about two minutes.
step overhead_cuda 200 "$PY" benchmarks/overhead.py --device cuda --repeats 2 --variants default,optimizer
step overhead_cuda_medium 100 "$PY" benchmarks/overhead.py --device cuda --medium --repeats 3
step tests_cuda 200 "$PY" -m pytest -q -p no:cacheprovider tests plugins -m "not slow"

for name in overhead_cuda overhead_cuda_medium; do
    echo "== $name"
    cat "$OUT/$name.txt"
done
echo "== tests_cuda (tail)"
tail -n 40 "$OUT/tests_cuda.txt"
