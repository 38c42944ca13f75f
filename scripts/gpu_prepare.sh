#!/usr/bin/env bash
# Prepare what scripts/gpu_run.sh needs on the GPU machine (no network there): the cp312 wheels of
# keras and the two packages its image lacks (namex, optree) into .whl/, and the verified MNIST
# into .gpu/mnist.npz, compressed (np.savez_compressed: about 11.5 MB instead of 55 MB; bnspec data
# verifies any npz by the sha256 of its arrays, via BNSPEC_MNIST). Both folders are git-ignored; the
# device tool carries them with the working tree, 64 MiB in all: the last step measures that payload
# (scripts/gpu_payload.py size) and fails when it does not fit.
set -euo pipefail
py=${PYTHON:-.venv/bin/python}
keras_version=$("$py" -c "import importlib.metadata as m; print(m.version('keras'))")
rm -rf .whl .gpu && mkdir -p .whl .gpu
for pkg in "keras==$keras_version" namex optree; do
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$pkg"
done
"$py" scripts/gpu_payload.py mnist .gpu/mnist.npz
ls -l .whl .gpu
"$py" scripts/gpu_payload.py size
