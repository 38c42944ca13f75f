#!/usr/bin/env bash
# The claims on a GPU machine that has CUDA, JAX and PyTorch but no TensorFlow, no Keras and no network
# (the lent accelerator): Keras 3 on the jax and torch backends with --bnspec-device=gpu, one results
# file per backend, reports/raw/keras3-<backend>-gpu.json style, which `bnspec report` merges as columns.
#
#   here:    bash scripts/gpu_prepare.sh          # wheels into .whl/ (cp312), MNIST into .gpu/
#   there:   bash scripts/gpu_run.sh "$OUT" gpu   # (the device tool: carry .whl and .gpu)
#   here:    cp <fetched files> reports/raw/ && bnspec report
#
# Tested here on CPU (tests/robustness/test_gpu_script.py): PYTHON=.venv/bin/python bash scripts/gpu_run.sh /tmp/out cpu
# WORKERS (default 4) sets pytest -n; PYTEST_ARGS adds pytest arguments (e.g. --bnspec-claims=K01,K02).
set -euo pipefail
out=${1:?usage: gpu_run.sh OUTDIR [gpu|cpu]}
device=${2:-gpu}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then  # keras, namex, optree: what the image lacks
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bnspec-site .whl/*.whl
    export PYTHONPATH=/tmp/bnspec-site:$PWD
fi
[ -f .gpu/mnist.npz ] && export BNSPEC_MNIST=$PWD/.gpu/mnist.npz
export BNSPEC_HOME=${BNSPEC_HOME:-/tmp/bnspec-home} BNSPEC_FLAVOUR=keras3 PYTHONUNBUFFERED=1
workers=${WORKERS:-4}
status=0
for backend in jax torch; do
    echo "== keras3 on $backend, device $device"
    KERAS_BACKEND=$backend "$py" -m pytest tests/claims -n "$workers" -p no:cacheprovider -q -m "not slow" ${PYTEST_ARGS:-} \
        --bnspec-device="$device" --bnspec-results="$out/keras3-$backend-$device.json" || status=$?
done
echo "== results in $out"; ls -l "$out"
exit $status
