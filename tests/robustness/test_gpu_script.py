"""scripts/gpu_run.sh, tested on CPU. With a stand-in interpreter that records how it is called, the recipe's
orchestration as it runs on a GPU machine: the claims on JAX and PyTorch at once with JAX's preallocation off,
then the benchmarks one backend after the other within the time budget, then the run's description. With a real
interpreter that has jax and torch (slow; skipped without them), the whole recipe on the CPU: one claims results
file per backend, pytest-benchmark JSON per backend and bench-run.json, without TensorFlow being needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT

FAKE = textwrap.dedent("""
    import json, os, sys, time
    record = {"argv": sys.argv[1:], "t": time.monotonic_ns(), "pid": os.getpid(),
              "env": {k: os.environ.get(k) for k in ("KERAS_BACKEND", "XLA_PYTHON_CLIENT_PREALLOCATE", "BNSPEC_FLAVOUR",
                                                   "BNSPEC_TORCH_THREADS", "PYTHONPATH")}}
    with open(os.path.join(os.environ["FAKE_LOG"], f"{os.getpid()}-{time.monotonic_ns()}.json"), "w") as f:
        json.dump(record, f)
    if "tests/claims" in sys.argv and os.environ.get("KERAS_BACKEND") == os.environ.get("FAKE_FAIL"):
        sys.exit(1)
""")


def _fake_python(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    exe = tmp_path / "python"
    exe.write_text(f"#!/usr/bin/env bash\nexec {sys.executable} {script} \"$@\"\n")
    exe.chmod(0o755)
    (tmp_path / "log").mkdir()
    return exe


def _calls(tmp_path):
    calls = [json.loads(f.read_text()) for f in (tmp_path / "log").glob("*.json")]
    return sorted(calls, key=lambda c: c["t"])


def _opt(argv, name):
    return next(a.split("=", 1)[1] for a in argv if a.startswith(name + "="))


def test_gpu_script_runs_claims_concurrently_then_budgeted_benchmarks_with_jax_preallocation_off(tmp_path):
    exe = _fake_python(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=str(exe), FAKE_LOG=str(tmp_path / "log"), FAKE_FAIL="torch", BUDGET_S="400",
               BENCH_K="nhwc_512 and not eager", BNSPEC_HOME=str(tmp_path / "home"))
    for name in ("WORKERS", "CONCURRENT", "BACKENDS", "PYTEST_ARGS", "BENCH_ARGS", "XLA_PYTHON_CLIENT_PREALLOCATE"):
        env.pop(name, None)
    res = subprocess.run(["bash", "scripts/gpu_run.sh", str(out), "gpu"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]  # the torch claims failed: so does the run
    calls = _calls(tmp_path)
    claims = [c for c in calls if "tests/claims" in c["argv"]]
    benches = [c for c in calls if "tests/benchmarks" in c["argv"]]
    described = [c for c in calls if c["argv"][:1] == ["scripts/gpu_bench_run.py"]]
    assert sorted(c["env"]["KERAS_BACKEND"] for c in claims) == ["jax", "torch"]
    for c in claims:
        b = c["env"]["KERAS_BACKEND"]
        assert c["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and c["env"]["BNSPEC_FLAVOUR"] == "keras3"
        assert c["argv"][c["argv"].index("-n") + 1] == "8"
        assert _opt(c["argv"], "--bnspec-device") == "gpu"
        assert _opt(c["argv"], "--bnspec-results") == str(out / f"keras3-{b}-gpu.json")
        assert (out / f"claims-{b}.log").is_file()  # concurrent: each backend's output in its log
    # the benchmarks after every claim run (a failed one included), one backend after the other
    assert [c["env"]["KERAS_BACKEND"] for c in benches] == ["jax", "torch"]
    assert min(c["t"] for c in benches) > max(c["t"] for c in claims)
    budgets = []
    for c in benches:
        b = c["env"]["KERAS_BACKEND"]
        assert c["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and c["env"]["BNSPEC_TORCH_THREADS"] == "auto"
        assert "no:xdist" in c["argv"] and _opt(c["argv"], "--bnspec-device") == "gpu"
        assert _opt(c["argv"], "--benchmark-json") == str(out / f"bench-{b}.json")
        assert c["argv"][c["argv"].index("-k") + 1] == "nhwc_512 and not eager"  # one argument
        budgets.append(float(_opt(c["argv"], "--bench-budget-s")))
    # each backend gets its share of the time left when it starts: half of it, less start-up, for the first;
    # the rest for the last, which inherits what the first (done at once here) did not use
    assert 170 <= budgets[0] <= (400 - 2 * 20) / 2 and budgets[0] < budgets[1] <= 400 - 20, budgets
    assert len(described) == 1 and described[0]["argv"][1:3] == [str(out / "bench-run.json"), "gpu"]
    assert described[0]["t"] > max(c["t"] for c in benches)


@pytest.mark.slow
def test_gpu_script_runs_the_claims_and_benchmarks_on_jax_and_torch(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHON=sys.executable, WORKERS="0", PYTEST_ARGS="--bnspec-claims=K08,K02",
               BNSPEC_HOME=str(tmp_path / "home"), CONCURRENT="1", BENCH_MAX_TIME="0.01", BUDGET_S="300",
               BENCH_K="paper_60x100 and (copy_jax or copy_torch or jax_jit or torch_functional)")
    env.pop("BNSPEC_FLAVOUR", None)
    out = subprocess.run(["bash", "scripts/gpu_run.sh", str(tmp_path / "out"), "cpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for backend in ("jax", "torch"):
        doc = json.loads((tmp_path / "out" / f"keras3-{backend}-cpu.json").read_text())
        assert doc["backend"] == backend and doc["flavour"] == "keras3"
        measured = {t["claim"] for t in doc["tests"] if t["outcome"] == "passed" and t.get("observed")}
        assert measured == {"K08", "K02"}, doc["tests"]
        saved = json.loads((tmp_path / "out" / f"bench-{backend}.json").read_text())
        infos = [b["extra_info"] for b in saved["benchmarks"]]
        assert {i["backend"] for i in infos} == {backend} and {i["device"] for i in infos} == {"cpu"}
        native = {"jax": "jax_jit", "torch": "torch_functional"}[backend]
        assert {(i["impl"], i["mode"]) for i in infos if i["impl"] == native} == \
            {(native, m) for m in ("inference", "training", "training_backward")}
    run = json.loads((tmp_path / "out" / "bench-run.json").read_text())
    assert run["device"] == "cpu" and run["files"] == ["bench-jax.json", "bench-torch.json"]
    assert run["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
