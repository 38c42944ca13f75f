"""scripts/gpu_run.sh, tested on CPU: it runs the claims on Keras 3's JAX and PyTorch backends into one
results file per backend, without TensorFlow being needed."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_gpu_script_runs_the_claims_on_jax_and_torch(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHON=sys.executable, WORKERS="0", PYTEST_ARGS="--bnspec-claims=K08,K02",
               BNSPEC_HOME=str(tmp_path / "home"))
    env.pop("BNSPEC_FLAVOUR", None)
    out = subprocess.run(["bash", "scripts/gpu_run.sh", str(tmp_path / "out"), "cpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for backend in ("jax", "torch"):
        doc = json.loads((tmp_path / "out" / f"keras3-{backend}-cpu.json").read_text())
        assert doc["backend"] == backend and doc["flavour"] == "keras3"
        measured = {t["claim"] for t in doc["tests"] if t["outcome"] == "passed" and t.get("observed")}
        assert measured == {"K08", "K02"}, doc["tests"]
