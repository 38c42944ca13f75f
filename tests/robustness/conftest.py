"""Helpers for the robustness tests: an isolated BNSPEC_HOME with MNIST already in it, and child
Python processes (the scenarios involve several processes, kills and fresh imports)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT  # re-exported to the robustness modules

# A child that asks the training cache for a small model and prints what it got.
TRAIN_CHILD = """
import hashlib, json, sys
from bnspec.run import Run
from bnspec.subjects import training
from bnspec.subjects.model import ModelSpec
t = training.trained(Run.from_env(), ModelSpec(), training.TrainSpec(epochs=1, steps_per_epoch={steps}))
digest = hashlib.sha256(b"".join(w.tobytes() for w in t.model.get_weights())).hexdigest()
print("RESULT " + json.dumps({{"created": t.created, "digest": digest, "path": str(t.path)}}), flush=True)
"""


@pytest.fixture
def iso_home(tmp_path):
    """A fresh BNSPEC_HOME holding a verified MNIST (copied from this machine's cache)."""
    from bnspec.subjects import data

    data.load_mnist(progress=lambda m: None)  # make sure the source cache exists
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    shutil.copy(data.cache_path(), home / "data" / "mnist.npz")
    return home


def child_env(home: Path, **extra) -> dict:
    env = dict(os.environ, BNSPEC_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.pop("BNSPEC_MNIST", None)
    return {**env, **extra}


def spawn(code: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}): {err[-2000:]}"
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))
