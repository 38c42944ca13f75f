"""bnspec.report.bench: GB/s, fraction of copy bandwidth, vs Keras per backend, the merge of the newest save
of each backend, and the targets, from hand-written pytest-benchmark JSON."""

import json

from bnspec.report import bench

BIG = bench.BIG
N = 100_000_000  # bytes of the tensor


def _b(shape, mode, impl, median, nbytes, backend=None, **extra):
    info = {"shape": shape, "mode": mode, "impl": impl, "bytes": nbytes, "device": "cpu", **extra}
    if backend:
        info["backend"] = backend
    return {"stats": {"median": median, "rounds": 5}, "extra_info": info}


def _save(history, number, when, benchmarks, commit="abcdef0123456789"):
    d = history / "Linux-CPython-3.11-64bit"
    d.mkdir(parents=True, exist_ok=True)
    doc = {"datetime": when, "machine_info": {"cpu": {"brand_raw": "X", "count": 2}, "python_version": "3.11"},
           "commit_info": {"id": commit, "dirty": False}, "benchmarks": benchmarks}
    (d / f"{number:04d}_{commit}_x.json").write_text(json.dumps(doc))


def _cells(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]


def test_throughput_and_fraction_of_copy(tmp_path):
    doc = {"datetime": "2026-01-01T00:00:00", "machine_info": {"cpu": {"brand_raw": "X", "count": 2}},
           "benchmarks": [
               _b(BIG, "copy", "copy_numpy", 0.010, 2 * N),          # 20 GB/s
               _b(BIG, "copy", "stream_tf", 0.008, 2 * N),           # 25 GB/s: the reference
               _b(BIG, "inference", "fused", 0.010, 2 * N),          # 20 GB/s = 80% of 25
               _b(BIG, "training", "fused", 0.030, 3 * N),           # 10 GB/s = 40%
               _b(BIG, "training", "keras_function", 0.020, 3 * N),
               _b(BIG, "training", "explicit_xla", 0.030, 3 * N),    # 1.5x the Keras layer: missed
               _b(BIG, "training", "keras_xla", 0.020, 3 * N),
           ]}
    _save(tmp_path / "history", 1, doc["datetime"], doc["benchmarks"])
    # a save from before the backend dimension: TensorFlow's, rendered alone as before
    text = "\n".join(bench.render(bench.load(bench.latest(tmp_path / "history"))))
    assert "copy bandwidth 25.0 GB/s" in text
    assert ["inference", "tensorflow", "fused", "10.000", "20.00", "80%"] in [c[:6] for c in _cells(text)]
    assert "= 80% of copy (target 60%): **met**" in text
    assert "= 60% of copy (target 40%): **met**" in text  # keras_function: 3n / 0.02 s = 15 GB/s
    assert "1.50x the time (target <= 1.25x): **missed**. Why:" in text


def test_newest_save_of_each_backend_merged(tmp_path):
    history = tmp_path / "history"
    # run 1: the three backends; TensorFlow's save predates the backend field
    _save(history, 1, "2026-01-01T10:00:00", [
        _b(BIG, "copy", "copy_tf", 0.010, 2 * N),                              # 20 GB/s
        _b(BIG, "inference", "keras_function", 0.040, 2 * N),
        _b(BIG, "inference", "fused", 0.020, 2 * N),
    ])
    _save(history, 2, "2026-01-01T10:05:00", [
        _b(BIG, "copy", "copy_jax", 0.020, 2 * N, "jax"),
        _b(BIG, "inference", "jax_keras_jit", 0.050, 2 * N, "jax", first_call_s=0.3),
        _b(BIG, "inference", "jax_jit", 0.025, 2 * N, "jax", first_call_s=0.2),   # 8 GB/s, 2x Keras on JAX
        _b("mnist_60x784", "mnist_step", "keras_bn", 0.002, 0, "jax"),
        _b("mnist_60x784", "mnist_step", "no_bn", 0.001, 0, "jax"),
    ])
    _save(history, 3, "2026-01-01T10:10:00", [
        _b(BIG, "copy", "copy_torch", 0.008, 2 * N, "torch"),                  # 25 GB/s: the best copy
        _b(BIG, "inference", "torch_keras_eager", 0.100, 2 * N, "torch"),
        _b(BIG, "inference", "torch_functional", 0.010, 2 * N, "torch"),       # 20 GB/s = 80%, 10x Keras on torch
        _b(BIG, "inference", "torch_compile", 0.050, 2 * N, "torch", first_call_s=6.5),
        _b("mnist_60x784", "mnist_step", "keras_bn", 0.030, 0, "torch"),
        _b("mnist_60x784", "mnist_step", "no_bn", 0.010, 0, "torch"),
    ])
    # run 2: TensorFlow only; JAX and PyTorch keep their run-1 numbers
    _save(history, 4, "2026-01-02T09:00:00", [
        _b(BIG, "copy", "copy_tf", 0.010, 2 * N, "tensorflow"),
        _b(BIG, "inference", "keras_function", 0.050, 2 * N, "tensorflow"),  # 4 GB/s = 16%
        _b(BIG, "inference", "fused", 0.025, 2 * N, "tensorflow"),           # 8 GB/s = 32%, 2x Keras
    ], commit="fedcba9876543210")

    doc, previous = bench.current(history)
    assert doc["saves"]["tensorflow"]["file"].startswith("0004_")
    assert doc["saves"]["jax"]["file"].startswith("0002_")
    assert doc["saves"]["torch"]["file"].startswith("0003_")
    assert set(previous["saves"]) == {"tensorflow"} and previous["saves"]["tensorflow"]["file"].startswith("0001_")

    text = "\n".join(bench.render(doc, previous))
    assert "tensorflow 2026-01-02 09:00 (fedcba98)" in text and "torch 2026-01-01 10:10 (abcdef01)" in text
    assert "copy bandwidth 25.0 GB/s" in text  # the best copy of any backend: PyTorch's copy_
    cells = _cells(text)
    # the summary: one row per tensor and mode, Keras' layer and the fastest implementation per backend
    assert cells[0] == ["tensor", "mode", "copy GB/s", "tensorflow: Keras", "tensorflow: fastest", "jax: Keras",
                        "jax: fastest", "torch: Keras", "torch: fastest"]
    assert [BIG, "inference", "25.00", "4.00 (16%)", "fused 8.00 (32%), 2.00x", "4.00 (16%)", "jax_jit 8.00 (32%), 2.00x",
            "2.00 (8%)", "torch_functional 20.00 (80%), 10.00x"] in cells
    # every implementation: vs Keras on the same backend; previous run only where that backend has one
    rows = {c[2]: c for c in cells if len(c) == 9 and c[0] == "inference"}
    assert rows["fused"][1:] == ["tensorflow", "fused", "25.000", "8.00", "32%", "2.00x", "20.000", "-"]
    assert rows["keras_function"][6:8] == ["1.00x", "40.000"]
    assert rows["jax_jit"][1:] == ["jax", "jax_jit", "25.000", "8.00", "32%", "2.00x", "-", "0.20"]
    assert rows["torch_compile"][6:] == ["2.00x", "-", "6.50"]
    assert "Copies (GB/s): copy_tf (tensorflow) 20.00, copy_jax (jax) 10.00, copy_torch (torch) 25.00" in text
    # the targets look at every backend
    assert "torch_functional (torch) at 20.00 GB/s = 80% of copy (target 60%): **met**" in text
    # the MNIST step: time vs no BN on the same backend
    assert ["jax", "keras_bn", "2.000", "500", "2.00"] in cells
    assert ["torch", "keras_bn", "30.000", "33", "3.00"] in cells


def test_no_saves(tmp_path):
    assert bench.current(tmp_path / "history") == (None, None)


def test_torch_compile_missing_is_said():
    doc = {"datetime": "2026-01-01T00:00:00", "machine_info": {}, "benchmarks": [
        _b(BIG, "copy", "copy_torch", 0.008, 2 * N, "torch"),
        _b(BIG, "inference", "torch_keras_eager", 0.100, 2 * N, "torch"),
    ]}
    text = "\n".join(bench.render(doc))
    assert "torch_compile is not in the newest PyTorch save" in text
    assert "= Keras" in text  # the fastest on torch is Keras' layer itself
