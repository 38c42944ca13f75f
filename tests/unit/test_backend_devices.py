"""Every tensor the harness makes follows the device under test (issue #23: on the first GPU run, E02 and E04
errored on torch because `backend.gradients` built `torch.tensor(x)` on the CPU while the layer's variables lived
on cuda:0: "Expected all tensors to be on the same device"). No GPU here: torch's `meta` device stands in for it.
A tensor made on another device than Keras' current one fails the same way against meta variables as against
cuda ones, so a harness tensor that does not follow the device under test is caught on the CPU."""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

CHILD = r"""
import os
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, torch, keras
from bnspec.measure.backend import Backend
from bnspec.subjects import layers

B = Backend("torch")
x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
with keras.device("meta"):
    layer = layers.for_keras(keras).ExplicitBatchNorm()  # E02/E04's subject
    layer.build((None, 4))
    print("variables", layer.gamma.value.device.type, flush=True)
    print("harness tensor", B.tensor(x).device.type, flush=True)
    print("forward", layer(B.tensor(x), training=True).device.type, flush=True)
    try:  # the control: the old harness' tensor, made on the CPU
        layer(torch.tensor(x), training=True)
        print("control no error", flush=True)
    except RuntimeError as exc:
        print("control", "device" in str(exc), flush=True)
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or importlib.util.find_spec("keras") is None,
                    reason="needs torch and Keras 3")
def test_harness_tensors_follow_the_device_keras_places_on():
    env = {k: v for k, v in os.environ.items() if k not in ("BNSPEC_FLAVOUR", "TF_USE_LEGACY_KERAS")}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.split(" ")[0] in ("variables", "harness", "forward", "control")]
    assert lines == ["variables meta", "harness tensor meta", "forward meta", "control True"], out.stdout
