"""Several processes, one cache: the model and MNIST are produced once, and unrelated work does not wait."""

import subprocess
import sys

import pytest

from bnspec.subjects import cache

from .conftest import ROOT, TRAIN_CHILD, child_env, result_of, spawn


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_n_processes_train_once_and_get_identical_models(iso_home, n):
    env = child_env(iso_home)
    procs = [spawn(TRAIN_CHILD.format(steps=60), env) for _ in range(n)]
    got = [result_of(p) for p in procs]
    assert sum(g["created"] for g in got) == 1, got
    assert len({g["digest"] for g in got}) == 1, "processes saw different weights"
    events = cache.Store(iso_home / "models").events()
    assert [e["event"] for e in events].count("created") == 1


_SLOW_CREATE = """
import json, sys, time
from pathlib import Path
from bnspec.subjects import cache
store = cache.Store(Path(sys.argv[1]))
def create(tmp):
    start = time.time(); time.sleep(2.0); (tmp / "v").write_text("x")
    return {"start": start, "end": time.time()}
e = store.get_or_create(sys.argv[2], {"config": sys.argv[2]}, create, lambda p: (p / "v").read_text())
print("RESULT " + json.dumps({"start": e.meta["start"], "end": e.meta["end"]}), flush=True)
"""


def test_different_configs_do_not_block_each_other(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _SLOW_CREATE, str(tmp_path), name], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    a, b = (result_of(p, timeout=60) for p in procs)
    overlap = min(a["end"], b["end"]) - max(a["start"], b["start"])
    assert overlap > 1.0, f"the two creations ran one after the other (overlap {overlap:.2f} s)"


_FAKE_FETCH = """
import json, sys, time
from pathlib import Path
from bnspec.subjects import data
real = data.read_npz(Path(sys.argv[1]))
def fetch(progress):
    with open(sys.argv[2], "a") as fh:
        fh.write("fetch\\n")
    time.sleep(float(sys.argv[3]))
    return real
data.SOURCES = (data.Source("fake source", fetch),)
(xtr, ytr), _ = data.load_mnist(progress=lambda m: None)
print("RESULT " + json.dumps({"n": int(len(xtr))}), flush=True)
"""


@pytest.mark.parametrize("n", [2, 4])
def test_mnist_is_fetched_once_by_n_processes(iso_home, tmp_path, n):
    source = tmp_path / "source.npz"
    (iso_home / "data" / "mnist.npz").rename(source)  # the fresh home has no MNIST now
    counter = tmp_path / "fetches.txt"
    env = child_env(iso_home)
    procs = [subprocess.Popen([sys.executable, "-c", _FAKE_FETCH, str(source), str(counter), "1.0"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    got = [result_of(p, timeout=120) for p in procs]
    assert all(g["n"] == 60000 for g in got)
    assert counter.read_text().count("fetch") == 1
    assert (iso_home / "data" / "mnist.npz").is_file()
