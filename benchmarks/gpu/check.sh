#!/usr/bin/env bash
# The GPU checks of issue #18 in one command, on a machine with a CUDA device:
#   1. install the gpu extra (CuPy) into the venv, unless CuPy already imports;
#   2. run the tests marked gpu (tests/gpu/: device publish, monitors on the device, the 4-rank
#      CuPy heat run under `doreisa run` against the numpy one, analytics on the GPU);
#   3. run the device benchmark (publish of a CuPy block vs cupy.asnumpy, 64 KiB to 64 MiB).
# Everything it produces goes under DIR: environment.txt, install.log, tests.log, junit.xml,
# bench.log, bench_device.json, status.txt (one line per stage: ok or failed, with its exit code).
#
#   benchmarks/gpu/check.sh DIR [--quick]
#
# --quick: 5 timed calls per size instead of 30 (a smoke run of the benchmark).
# Without network, point pip at a folder of wheels: DOREISA_WHEELS=/path/to/wheels.
# PYTHON: the venv's interpreter (default: .venv/bin/python beside this repository).
set -uo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 DIR [--quick]" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
QUICK=${2:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
cd "$ROOT" || exit 2
: >"$OUT/status.txt"
failed=0

stage() {  # stage NAME LOG COMMAND...: run it, its output in LOG, its outcome in status.txt
    local name=$1 log=$2
    shift 2
    local started=$SECONDS
    "$@" >"$OUT/$log" 2>&1
    local rc=$?
    local took=$((SECONDS - started))
    if [[ $rc -eq 0 ]]; then
        echo "$name: ok (${took} s)" | tee -a "$OUT/status.txt"
    else
        echo "$name: failed, exit $rc (${took} s; see $log)" | tee -a "$OUT/status.txt"
        failed=1
    fi
    return $rc
}

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null | head -50
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
    "$PYTHON" -c "import sys, numpy; print(sys.version); print('numpy', numpy.__version__)"
} >"$OUT/environment.txt" 2>&1

# shellcheck disable=SC2317  # called through stage
install() {  # the gpu extra's requirements, as pyproject.toml lists them (doreisa itself is installed already)
    if "$PYTHON" -c "import cupy" 2>/dev/null; then
        echo "CuPy already importable"
    else
        local args=() reqs
        if [[ -n "${DOREISA_WHEELS:-}" ]]; then
            args=(--no-index --find-links "$DOREISA_WHEELS")
        fi
        reqs=$("$PYTHON" -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['gpu'])") || return 1
        # shellcheck disable=SC2086  # one word per requirement
        "$PYTHON" -m pip install "${args[@]}" $reqs || return 1
    fi
    "$PYTHON" -c "import cupy; print('cupy', cupy.__version__, 'devices', cupy.cuda.runtime.getDeviceCount())"
}

stage install install.log install || { echo "CuPy is not usable: see $OUT/install.log" >&2; exit 1; }
"$PYTHON" -c "import cupy; p = cupy.cuda.runtime.getDeviceProperties(0); print('device', p['name'].decode())" \
    >>"$OUT/environment.txt" 2>&1

stage tests tests.log "$PYTHON" -m pytest -m gpu -v -s -p no:cacheprovider --junitxml="$OUT/junit.xml" tests/gpu

bench_args=(--output "$OUT/bench_device.json")
if [[ "$QUICK" == "--quick" ]]; then
    bench_args+=(--quick)
fi
stage bench bench.log "$PYTHON" benchmarks/gpu/bench_device.py "${bench_args[@]}"

cat "$OUT/status.txt"
exit $failed
