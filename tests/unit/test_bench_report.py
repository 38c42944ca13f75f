"""bnspec.report.bench: GB/s, fraction of copy bandwidth, vs Keras per backend, the merge of the newest save
of each backend, and the targets, from hand-written pytest-benchmark JSON."""

import json

import pytest

from bnspec.report import bench, bench_gpu


def _page(doc, previous=None) -> str:
    """BENCHMARKS.md's body as bnspec.report renders it: the CPU sections, then the GPU section."""
    return "\n".join(bench.render(doc, previous) + (bench_gpu.gpu_section(doc["gpu"]) if "gpu" in doc else []))

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

    text = _page(doc, previous)
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
    text = _page(doc)
    assert "torch_compile is not in the newest PyTorch save" in text
    assert "= Keras" in text  # the fastest on torch is Keras' layer itself


# --------------------------------------------------------------------------- GPU runs

BIG_GPU = "nhwc_512x56x56x256"
E_BIG, E_TINY, E_MID = 512 * 56 * 56 * 256, 60 * 100, 88 * 56 * 56 * 64  # elements


def _g(shape, mode, impl, per_call, elements, backend, calls=1, factor=None, **extra):
    """A GPU benchmark: a round of `calls` calls, per_call seconds each."""
    factor = factor or {"copy": 2, "inference": 2, "training": 3, "training_backward": 4}[mode]
    info = {"shape": shape, "mode": mode, "impl": impl, "bytes": factor * 4 * elements, "elements": elements,
            "device": "gpu", "backend": backend, **({"calls": calls} if calls > 1 else {}), **extra}
    return {"stats": {"median": per_call * calls, "rounds": 50}, "extra_info": info}


def _gpu_run(root, name, when, benchmarks, meta=None):
    d = root / "gpu" / name
    d.mkdir(parents=True)
    for backend in ("jax", "torch"):
        mine = [b for b in benchmarks if b["extra_info"]["backend"] == backend]
        if mine:
            (d / f"bench-{backend}.json").write_text(json.dumps({
                "datetime": when, "machine_info": {"cpu": {"count": 16}, "python_version": "3.12.3"},
                "commit_info": {"id": "1ce5ff60abcdef", "dirty": False}, "benchmarks": mine}))
    if meta is not None:
        (d / bench.RUN_FILE).write_text(json.dumps(meta))


def _cpu_history(root):
    _save(root / "history", 1, "2026-01-01T10:00:00", [
        _b(BIG, "copy", "copy_tf", 0.010, 2 * N),
        _b(BIG, "inference", "keras_function", 0.040, 2 * N),
    ])


def test_gpu_time_per_call_is_the_rounds_median_over_its_calls():
    doc = {"benchmarks": [_g(BIG_GPU, "copy", "copy_torch", 0.8e-3, E_BIG, "torch", calls=3)]}
    (r,) = bench.rows(doc)
    assert r["median_s"] == pytest.approx(0.8e-3)
    assert r["gbps"] == pytest.approx(2 * 4 * E_BIG / 0.8e-3 / 1e9)


def test_launch_bound_compares_the_bytes_at_copy_speed_with_the_fixed_cost_of_a_call():
    floor = 5e-6  # s per call
    assert bench_gpu.launch_bound(48_000, floor, 4000.0) is True              # 12 ns of memory traffic
    assert bench_gpu.launch_bound(3.288e9, floor, 4000.0) is False            # 822 us
    assert bench_gpu.launch_bound(141e6, floor, 4000.0) is True               # 35 us < 10 x 5 us
    assert bench_gpu.launch_bound(141e6, 1e-6, 4000.0) is False
    assert bench_gpu.launch_bound(141e6, None, 4000.0) is None


def test_without_gpu_files_the_section_says_no_gpu_run_of_the_new_shapes_exists(tmp_path):
    _cpu_history(tmp_path)
    doc, _ = bench.current(tmp_path / "history")
    assert doc["gpu"] == []
    text = _page(doc)
    assert "## GPU: BN throughput against the device's own copy bandwidth" in text
    assert "**No GPU run of the new shapes exists yet**" in text
    assert "There are no GPU benchmark files under `reports/benchmarks/gpu/`." in text


def test_an_old_shapes_gpu_run_is_shown_for_what_it_is(tmp_path):
    _cpu_history(tmp_path)
    _gpu_run(tmp_path, "2026-12-04-h200", "2026-12-04T16:48:13", [
        _g("paper_60x100", "copy", "copy_numpy", 0.8e-6, E_TINY, "torch"),     # host memory: never the reference
        _g("paper_60x100", "copy", "copy_torch", 11.5e-6, E_TINY, "torch"),    # the fixed cost of a call
        _g(BIG, "copy", "copy_numpy", 1e-6, E_MID, "torch"),                   # absurdly fast host copy: excluded
        _g(BIG, "copy", "copy_torch", 45e-6, E_MID, "torch"),                  # 3,140 GB/s
        _g(BIG, "inference", "torch_keras_eager", 300e-6, E_MID, "torch"),
        _g(BIG, "inference", "torch_functional", 75e-6, E_MID, "torch"),       # 4.00x faster than Keras
    ], meta={"gpu": "1 x NVIDIA H200", "torch": "2.11.0+cu130", "commit": "1ce5ff60ab", "note": "The first GPU run."})
    doc, _ = bench.current(tmp_path / "history")
    text = _page(doc)
    assert "**No GPU run of the new shapes exists yet**" in text
    assert "What exists is shown below for what it is" in text
    assert "### gpu/2026-12-04-h200: 1 x NVIDIA H200 (old shapes)" in text
    assert "The first GPU run." in text and "code 1ce5ff60ab" in text and "torch 2.11.0+cu130" in text
    assert "its largest BN tensor is 70.6 MB" in text
    assert "one call and one synchronisation timed on the host clock" in text
    assert "Fixed cost of a call 11.5 µs; device copy bandwidth 3,140 GB/s on nhwc_88x56x56x64." in text
    cells = _cells(text[text.index("## GPU"):])
    assert cells[0] == ["tensor", "mode", "bound", "copy GB/s", "torch: Keras µs", "torch: native µs",
                        "torch: Keras ÷ native"]
    # 141 MB at 3,140 GB/s is 45 us, under 10 x 11.5 us: launch-bound
    assert [f"{BIG} (70.6 MB)", "inference", "launch", "3,140", "300.0 (471 GB/s, 15%)",
            "75.0 (1,884 GB/s, 60%)", "4.00x"] in cells


def test_a_gpu_run_of_the_new_shapes_comes_first_with_launch_and_memory_bound_rows(tmp_path):
    _cpu_history(tmp_path)
    _gpu_run(tmp_path, "2026-12-04-h200", "2026-12-04T16:48:13", [
        _g(BIG, "copy", "copy_torch", 45e-6, E_MID, "torch"),
        _g(BIG, "inference", "torch_functional", 75e-6, E_MID, "torch"),
    ])
    _gpu_run(tmp_path, "2027-01-10-h200", "2027-01-10T09:00:00", [
        _g("paper_60x100", "copy", "copy_torch", 5e-6, E_TINY, "torch", calls=64),
        _g("paper_60x100", "copy", "copy_jax", 8e-6, E_TINY, "jax", calls=64),
        _g(BIG_GPU, "copy", "copy_numpy", 1e-5, E_BIG, "torch"),
        _g(BIG_GPU, "copy", "copy_torch", 0.822e-3, E_BIG, "torch", calls=3, gpu="NVIDIA H200"),  # 4,000 GB/s
        _g(BIG_GPU, "copy", "copy_jax", 0.9e-3, E_BIG, "jax", calls=3),
        _g(BIG_GPU, "inference", "torch_keras_eager", 2.5e-3, E_BIG, "torch"),                      # 1,315 GB/s
        _g(BIG_GPU, "inference", "torch_functional", 1.0e-3, E_BIG, "torch", calls=2, device_median_s=0.98e-3),
        _g(BIG_GPU, "inference", "jax_keras_jit", 1.25e-3, E_BIG, "jax", calls=2),
        _g(BIG_GPU, "inference", "jax_jit", 1.0e-3, E_BIG, "jax", calls=2, first_call_s=0.31),
        _g("paper_60x100", "inference", "torch_functional", 10e-6, E_TINY, "torch", calls=64),
        _g("paper_60x100", "inference", "torch_keras_eager", 250e-6, E_TINY, "torch", calls=10),
    ], meta={"gpu": "1 x NVIDIA H200", "jax": "0.11.2", "torch": "2.11.0+cu130", "cuda": "13.0", "driver": "580.95"})
    doc, _ = bench.current(tmp_path / "history")
    assert [r["name"] for r in doc["gpu"]] == ["gpu/2027-01-10-h200", "gpu/2026-12-04-h200"]
    text = _page(doc)
    assert "No GPU run of the new shapes exists yet" not in text
    first, second = text.index("### gpu/2027-01-10-h200: 1 x NVIDIA H200\n"), text.index("### gpu/2026-12-04-h200")
    assert first < second
    assert "CUDA 13.0, driver 580.95" in text
    assert "Fixed cost of a call 5.0 µs; device copy bandwidth 4,000 GB/s on nhwc_512x56x56x256." in text
    cells = _cells(text[text.index("## GPU"):])
    assert cells[0] == ["tensor", "mode", "bound", "copy GB/s", "jax: Keras µs", "jax: native µs", "jax: Keras ÷ native",
                        "torch: Keras µs", "torch: native µs", "torch: Keras ÷ native"]
    # 3.29 GB at 4,000 GB/s: 822 us, far over 10 x 5 us: memory-bound; the host's copy_numpy is not the reference
    assert [f"{BIG_GPU} (1.64 GB)", "inference", "memory", "4,000", "1,250.0 (2,631 GB/s, 66%)",
            "1,000.0 (3,288 GB/s, 82%)", "1.25x", "2,500.0 (1,315 GB/s, 33%)", "1,000.0 (3,288 GB/s, 82%)",
            "2.50x"] in cells
    # 48 KB: launch-bound; the tiny copy's 9.6 GB/s is a launch rate, not a bandwidth
    assert ["paper_60x100 (24 KB)", "inference", "launch", "10", "-", "-", "-", "250.0 (0.19 GB/s, 2%)",
            "10.0 (4.8 GB/s, 50%)", "25.00x"] in cells
    # every implementation: calls per round, per-call time, CUDA-event time, first call
    assert ["inference", "torch", "torch_functional", "2", "50", "1,000.0", "3,288.3", "82%", "2.50x", "980.0",
            "-"] in cells
    assert ["inference", "jax", "jax_jit", "2", "50", "1,000.0", "3,288.3", "82%", "1.25x", "-", "0.31"] in cells


def test_a_gpu_save_in_the_history_never_replaces_the_cpu_save_of_its_backend(tmp_path):
    history = tmp_path / "history"
    _save(history, 1, "2026-01-01T10:00:00", [_b(BIG, "inference", "jax_jit", 0.025, 2 * N, "jax")])
    _save(history, 2, "2026-01-02T10:00:00", [_g(BIG_GPU, "inference", "jax_jit", 1e-3, E_BIG, "jax")])
    doc, previous = bench.current(history)
    assert doc["saves"]["jax"]["file"].startswith("0001_") and previous is None
    assert [r["name"] for r in doc["gpu"]] == ["history/Linux-CPython-3.11-64bit/0002_abcdef0123456789_x.json"]
    assert all(r["device"] == "cpu" for r in bench.rows(doc))
