#!/usr/bin/env bash
# Prepare what scripts/gpu_run.sh needs on the GPU machine (no network there): the cp312 wheels of
# keras and the two packages its image lacks (namex, optree) into .whl/, and the verified MNIST
# (bnspec data) into .gpu/mnist.npz. Both folders are git-ignored; the device tool carries them.
set -euo pipefail
py=${PYTHON:-.venv/bin/python}
keras_version=$("$py" -c "import importlib.metadata as m; print(m.version('keras'))")
rm -rf .whl && mkdir -p .whl .gpu
for pkg in "keras==$keras_version" namex optree; do
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$pkg"
done
"$py" -m bnspec data >/dev/null
cp "${BNSPEC_HOME:-$HOME/.cache/bnspec}/data/mnist.npz" .gpu/mnist.npz
ls -l .whl .gpu
