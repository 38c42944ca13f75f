"""Same seed, same weights; same suite, same verdicts (bnspec compare)."""

import json
import subprocess
import sys

import pytest

from bnspec import results

from .conftest import ROOT, TRAIN_CHILD, child_env, result_of, spawn


@pytest.mark.slow
def test_training_twice_gives_bitwise_identical_weights(iso_home, tmp_path):
    import shutil

    other = tmp_path / "other_home"
    shutil.copytree(iso_home, other)
    a = spawn(TRAIN_CHILD.format(steps=100), child_env(iso_home))
    b = spawn(TRAIN_CHILD.format(steps=100), child_env(other))
    ra, rb = result_of(a), result_of(b)
    assert ra["created"] and rb["created"]  # two independent trainings, not one shared entry
    assert ra["digest"] == rb["digest"], "same seed and data on CPU must give bitwise-identical weights"


def _doc(observed):
    run = {"finished": "t", "seconds": 1.0, "environment": {}, "code": {"fingerprint": "f", "commit": None, "dirty": False},
           "selection": {"args": [], "partial": False}}
    return {"schema": results.SCHEMA, "flavour": "keras3", "backend": "tensorflow", "runs": {"r": run}, "tests": [
        {"nodeid": "t.py::a[1]", "claim": "K01", "outcome": "passed", "expected": "holds", "observed": observed, "run": "r"},
        {"nodeid": "t.py::b", "claim": "K02", "outcome": "passed", "expected": "holds", "observed": "holds", "run": "r"}]}


def test_compare_reports_verdict_differences(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_doc("holds")))
    b.write_text(json.dumps(_doc("holds")))
    c.write_text(json.dumps(_doc("refuted")))
    same = subprocess.run([sys.executable, "-m", "bnspec", "compare", str(a), str(b)], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    assert same.returncode == 0 and "identical verdict tables (2 test cases" in same.stdout
    diff = subprocess.run([sys.executable, "-m", "bnspec", "compare", str(a), str(c)], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    assert diff.returncode == 1 and "keras3: t.py::a[1]: concluded/holds vs concluded/refuted" in diff.stdout
