#!/usr/bin/env bash
# One prepared run on a GPU machine that has CUDA, JAX and PyTorch but no TensorFlow, no Keras and no network
# (the lent accelerator), within BUDGET_S seconds (default 420, for one call of at most 8 minutes):
#   1. the claims: Keras 3 on the jax and torch backends with --bnspec-device=gpu, one results file per
#      backend, OUT/keras3-<backend>-gpu.json (reports/raw/ format: `bnspec report` merges them as columns);
#      on a GPU both backends run at once (CONCURRENT=1), each with WORKERS xdist workers, logs in
#      OUT/claims-<backend>.log;
#   2. the benchmarks (tests/benchmarks, the GPU shapes), one backend after the other on the otherwise idle
#      GPU, each with its share of the time left (--bench-budget-s; the cases most wanted first, the rest
#      skipped once it is spent), into OUT/bench-<backend>.json
#      (pytest-benchmark JSON), and OUT/bench-run.json (the GPU, the versions, the code: scripts/gpu_bench_run.py).
#
#   here:    bash scripts/gpu_prepare.sh          # wheels into .whl/ (cp312), MNIST into .gpu/ (compressed)
#   there:   bash scripts/gpu_run.sh "$OUT" gpu   # (the device tool: carry .whl and .gpu)
#   here:    cp <fetched>/keras3-*-gpu.json reports/raw/
#            mkdir reports/benchmarks/gpu/<date>-<gpu> && cp <fetched>/bench-*.json reports/benchmarks/gpu/<date>-<gpu>/
#            bnspec report
#
# Tested here on CPU (tests/robustness/test_gpu_script.py): PYTHON=.venv/bin/python bash scripts/gpu_run.sh /tmp/out cpu
# Knobs: WORKERS (default 8) sets pytest -n per backend; PYTEST_ARGS adds claim-suite arguments (e.g.
# --bnspec-claims=K01,K02); BACKENDS (default "jax torch"); CONCURRENT (1 on a GPU, 0 on the CPU);
# BENCH=0 skips the benchmarks; BENCH_K selects benchmarks (pytest -k, e.g. "nhwc_512 and not eager");
# BENCH_ARGS adds benchmark arguments (split on spaces, like PYTEST_ARGS); BENCH_MAX_TIME
# (default 0.25) is each benchmark's --benchmark-max-time; BENCH_MIN_S (default 30) the least time a
# backend's benchmarks get; CLAIMS_TIMEOUT_S (default BUDGET_S - 2 BENCH_MIN_S - 40) stops a claim run that
# overruns; NOTE goes into bench-run.json.
set -euo pipefail
out=${1:?usage: gpu_run.sh OUTDIR [gpu|cpu]}
device=${2:-gpu}
py=${PYTHON:-python3}
t0=$SECONDS
budget=${BUDGET_S:-420}
workers=${WORKERS:-8}
backends=${BACKENDS:-jax torch}
if [ "$device" = gpu ]; then concurrent=${CONCURRENT:-1}; else concurrent=${CONCURRENT:-0}; fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
step() { echo "== [$((SECONDS - t0)) s] $*"; }

export PYTHONPATH=$PWD
py_tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
if ls .whl/*-"$py_tag"-*.whl >/dev/null 2>&1; then  # keras, namex, optree: what the GPU image lacks
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bnspec-site .whl/*.whl
    export PYTHONPATH=/tmp/bnspec-site:$PWD
elif ls .whl/*.whl >/dev/null 2>&1; then
    step "not installing .whl/ (wheels for another Python than this $py_tag): using the interpreter's own keras"
fi
if [ -f .gpu/mnist.npz ]; then export BNSPEC_MNIST=$PWD/.gpu/mnist.npz; fi
export BNSPEC_HOME=${BNSPEC_HOME:-/tmp/bnspec-home} BNSPEC_FLAVOUR=keras3 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX preallocates 75% of the GPU's memory per process by default: the second of several processes (xdist
# workers, the two backends' runs) then fails to allocate. Allocate on demand instead; with preallocation off,
# the memory fraction only caps a process's growth (75% by default), which each process here stays far below.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

status=0
bench_min=${BENCH_MIN_S:-30}
# the claims stop (SIGINT: pytest still writes the cases it measured, marked unfinished) in time to leave the
# benchmarks their least share
claims_limit=${CLAIMS_TIMEOUT_S:-$((budget - 2 * bench_min - 40))}
claims() {  # backend: the claim suite on that backend and device, into its results file
    KERAS_BACKEND=$1 timeout -s INT -k 30 "$claims_limit" \
        "$py" -m pytest tests/claims -n "$workers" -p no:cacheprovider -q -m "not slow" ${PYTEST_ARGS:-} \
        --bnspec-device="$device" --bnspec-results="$out/keras3-$1-$device.json"
}
if [ "$concurrent" = 1 ]; then
    declare -A pids
    for b in $backends; do
        step "claims: keras3 on $b, device $device, $workers workers (in the background: $out/claims-$b.log)"
        claims "$b" >"$out/claims-$b.log" 2>&1 &
        pids[$b]=$!
    done
    for b in $backends; do
        rc=0; wait "${pids[$b]}" || rc=$?
        step "claims on $b: exit $rc; the log's end:"
        tail -n 30 "$out/claims-$b.log"
        if [ "$rc" != 0 ]; then status=$rc; fi
    done
else
    for b in $backends; do
        step "claims: keras3 on $b, device $device, $workers workers"
        set +e; claims "$b" 2>&1 | tee "$out/claims-$b.log"; rc=${PIPESTATUS[0]}; set -e
        if [ "$rc" != 0 ]; then status=$rc; fi
    done
fi

if [ "${BENCH:-1}" = 1 ]; then
    n=$(wc -w <<<"$backends")
    for b in $backends; do
        # this backend's pytest: its share of the time left (a backend that finishes early leaves its rest to
        # the next), less ~20 s of start-up per backend still to run
        left=$((budget - (SECONDS - t0)))
        share=$(((left - 20 * n) / n))
        if [ "$share" -lt "$bench_min" ]; then share=$bench_min; fi
        n=$((n - 1))
        step "benchmarks: keras3 on $b, device $device, budget $share s"
        set +e
        KERAS_BACKEND=$b BNSPEC_TORCH_THREADS=auto timeout -s INT -k 20 $((share + 60)) \
            "$py" -m pytest tests/benchmarks -p no:xdist -p no:cacheprovider -q -rs --bnspec-device="$device" \
            --bench-budget-s="$share" --benchmark-json="$out/bench-$b.json" --benchmark-max-time="${BENCH_MAX_TIME:-0.25}" \
            --benchmark-min-rounds=5 --benchmark-columns=median,iqr,rounds ${BENCH_K:+-k "$BENCH_K"} ${BENCH_ARGS:-} \
            2>&1 | tee "$out/bench-$b.log"
        rc=${PIPESTATUS[0]}
        set -e
        step "benchmarks on $b: exit $rc"
        if [ "$rc" != 0 ]; then status=$rc; fi
    done
    "$py" scripts/gpu_bench_run.py "$out/bench-run.json" "$device" "$((SECONDS - t0))" || status=$?
fi
step "done (exit $status); results in $out"; ls -l "$out"
exit $status
