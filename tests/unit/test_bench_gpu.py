"""The GPU benchmarks' machinery, on the CPU (tests/benchmarks/_device.py and the makers and timing of
tests/benchmarks/_impls.py): which tensors each device gets and in which order a GPU run measures
them, the round planning and the batched timing with a fake clock and fake CUDA events, and the GPU code path
(tensors made on the device, batched rounds) forced onto the CPU with tiny tensors, its BN checked against
bnspec.reference's float64 BN within its float32 bounds. No GPU, no TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from bnspec import reference
from tests.benchmarks import _device
from tests.benchmarks import _impls as tt

EPS = tt.EPS
DIMS = (3, 4, 5, 6)  # NHWC, 6 channels, 60 elements per channel
MODES = ["inference", "training", "training_backward"]


# --------------------------------------------------------------------------- shapes and order


def test_gpu_shapes_hold_a_tensor_of_at_least_one_gib_and_the_cpu_keeps_its_history():
    sizes = {name: _device.nbytes(dims) for name, dims in _device.GPU_SHAPES.items()}
    assert max(sizes.values()) >= 2**30, sizes
    assert _device.nbytes(_device.GPU_SHAPES[_device.BIG_GPU]) == 512 * 56 * 56 * 256 * 4
    # the CPU's shapes are those its saved history was measured on
    assert _device.CPU_SHAPES == {"paper_60x100": (60, 100), "dense_4096x1024": (4096, 1024),
                                  "nhwc_64x56x56x64": (64, 56, 56, 64), "nhwc_88x56x56x64": (88, 56, 56, 64)}
    assert set(_device.SHAPES) == set(_device.CPU_SHAPES) | set(_device.GPU_SHAPES)


def test_each_device_skips_the_other_devices_shapes_with_a_reason():
    big = _device.BIG_GPU
    assert "sized for a GPU" in _device.skip_reason("cpu", big)
    assert "1644.2 MB" in _device.skip_reason("cpu", big)
    assert "is a CPU shape" in _device.skip_reason("gpu", "dense_4096x1024")
    assert "host memory" in _device.skip_reason("gpu", big, "copy_numpy")
    for device in ("cpu", "gpu"):
        for shape in _device.shapes_for(device):
            assert _device.skip_reason(device, shape, "copy_jax") is None
    assert _device.skip_reason("cpu", "paper_60x100", "copy_numpy") is None
    assert _device.skip_reason(None, None) is None  # an unparametrised test (the MNIST step)


def test_a_gpu_run_measures_the_largest_tensor_first_copies_then_keras_and_native():
    cases = [("test_bn_torch", {"shape": "paper_60x100", "impl": "torch_functional"}),
             ("test_mnist_training_step", {"variant": "keras_bn"}),
             ("test_bn_torch", {"shape": _device.BIG_GPU, "impl": "torch_compile"}),
             ("test_bn_torch", {"shape": _device.BIG_GPU, "impl": "torch_keras_eager"}),
             ("test_copy_torch", {"shape": _device.BIG_GPU, "impl": "copy_torch"}),
             ("test_bn_torch", {"shape": "nhwc_88x56x56x64", "impl": "torch_functional"})]
    ordered = sorted(cases, key=lambda c: _device.priority(c[1], c[0]))
    assert [(n, p.get("shape"), p.get("impl")) for n, p in ordered] == [
        ("test_copy_torch", _device.BIG_GPU, "copy_torch"),
        ("test_bn_torch", _device.BIG_GPU, "torch_keras_eager"),
        ("test_bn_torch", _device.BIG_GPU, "torch_compile"),
        ("test_bn_torch", "nhwc_88x56x56x64", "torch_functional"),
        ("test_bn_torch", "paper_60x100", "torch_functional"),
        ("test_mnist_training_step", None, None)]


# --------------------------------------------------------------------------- planning and timing


@pytest.mark.parametrize("call_s, calls, rounds", [
    (1e-5, 64, 390),     # a launch-bound call: 64 calls per round, the rounds fill 0.25 s
    (0.8e-3, 3, 104),    # the 1.64 GB tensor at ~4 TB/s: a round of 3 calls lasts 2.4 ms
    (0.5, 1, 5),         # a slow call: one per round, and never fewer than min_rounds
    (0.0, 64, 2000),     # a clock too coarse to see it: capped, not divided by zero
])
def test_plan_makes_rounds_long_enough_for_the_sync_and_fills_the_time(call_s, calls, rounds):
    p = _device.plan(call_s, max_time=0.25, min_rounds=5)
    assert (p.calls, p.rounds) == (calls, rounds)


def test_timed_reads_the_clock_around_one_call():
    ticks = iter([10.0, 10.75])
    seen = []
    assert _device.timed(lambda: seen.append(1), clock=lambda: next(ticks)) == pytest.approx(0.75)
    assert seen == [1]


class FakeEvent:
    """A CUDA event on a fake device clock: record() reads the clock, elapsed_time is in ms."""

    def __init__(self, clock):
        self.clock, self.t = clock, None

    def record(self):
        self.t = self.clock[0]

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


def test_a_batch_is_calls_back_to_back_then_one_sync_of_the_last_output_timed_by_device_events():
    clock = [0.0]
    outputs, synced = [], []

    def call():  # each call advances the device clock by 2 ms
        clock[0] += 2e-3
        outputs.append(len(outputs))
        return outputs[-1]

    batch = _device.Batch(call, synced.append, 4, event=lambda: FakeEvent(clock))
    assert batch() == 3
    assert batch() == 7
    assert synced == [3, 7]  # once per round, on its last output
    assert batch.device_s == pytest.approx([2e-3, 2e-3])  # per call
    assert batch.device_median(1) == pytest.approx(2e-3)
    no_sync = _device.Batch(lambda: 1, None, 3)
    assert no_sync() == 1 and no_sync.device_s == [] and no_sync.device_median(5) is None


class FakeBenchmark:
    """What _measure_batched uses of pytest-benchmark's fixture: extra_info and pedantic (warm-up rounds, then
    rounds, each one call of the target)."""

    def __init__(self):
        self.extra_info, self.runs = {}, []

    def pedantic(self, target, rounds, iterations, warmup_rounds):
        assert iterations == 1
        for _ in range(warmup_rounds + rounds):
            target()
        self.runs.append((rounds, warmup_rounds))


# --------------------------------------------------------------------------- the GPU code path on the CPU


def _reference(x, mode, dy):
    """(y, dx, dgamma, dbeta) in float64 and their float32 bounds, for gamma = 1, beta = 0 and moving statistics
    (0, 1) as the benchmarks start from."""
    c = x.shape[-1]
    g, b = np.ones(c), np.zeros(c)
    m = x.size // c
    if mode == "inference":
        return reference.bn_inference(x, g, b, np.zeros(c), np.ones(c), EPS), \
            reference.bn_bound(x, g, b, np.zeros(c), np.ones(c), EPS), None
    y, mean, var = reference.bn_train(x, g, b, EPS)
    bound = reference.bn_bound(x, g, b, mean, var, EPS, n_reduce=m)
    if mode == "training":
        return y, bound, None
    return y, bound, (reference.bn_backward(dy, x, g, EPS), reference.bn_backward_bound(dy, x, g, EPS))


def _check(y, x, mode, dy, grads=None):
    ref, bound, backward = _reference(x.astype(np.float64), mode, dy)
    assert np.all(np.abs(np.asarray(y, np.float64) - ref) <= bound), np.max(np.abs(y - ref) / bound)
    if backward is not None:
        exact, bounds = backward
        for name, got in zip(("x", "gamma", "beta"), grads):
            err = np.abs(np.asarray(got, np.float64) - exact[name])
            assert np.all(err <= bounds[name]), (name, float(np.max(err / bounds[name])))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["torch_eager", "torch_functional"])
def test_torch_gpu_path_on_the_cpu_computes_bn(impl, mode):
    torch = pytest.importorskip("torch")
    dy = np.random.default_rng(1).normal(0, 1, DIMS).astype(np.float32)
    call, sync = tt._torch_make(None, impl, mode, None, "cpu", dims=DIMS, on_device=True, dy=dy)
    assert sync is None  # torch on the CPU is synchronous
    x = _device.torch_normal(DIMS, torch.device("cpu")).numpy()  # the same seed: the tensor the case made
    assert abs(x.mean() - 1) < 0.5 and abs(x.std() - 2) < 0.5  # N(1, 2^2), as the CPU shapes' numpy data
    out = call()
    if mode == "training_backward":
        y, grads = out
        _check(y.detach().numpy(), x, mode, dy, [g.numpy() for g in grads])
    else:
        _check(out.numpy(), x, mode, dy)


def test_torch_gpu_path_on_the_cpu_times_batched_rounds():
    pytest.importorskip("torch")
    call, sync = tt._torch_make(None, "torch_functional", "training", None, "cpu", dims=DIMS, on_device=True)
    bench = FakeBenchmark()
    plan, batch = tt._measure_batched(bench, call, sync, (0.01, 3), event=None, call_s=1e-4)
    assert plan == _device.plan(1e-4, 0.01, 3)
    assert bench.runs == [(plan.rounds, 1)]
    assert bench.extra_info["calls"] == plan.calls == 20
    assert bench.extra_info["timing"] == "rounds of 20 calls + 1 sync"
    assert "device_median_s" not in bench.extra_info  # no CUDA events on the CPU


@pytest.mark.parametrize("mode", MODES)
def test_jax_gpu_path_on_the_cpu_computes_bn(mode):
    jax = pytest.importorskip("jax")
    dy = np.random.default_rng(1).normal(0, 1, DIMS).astype(np.float32)
    call, sync = tt._jax_make(None, "jax_jit", mode, None, "cpu", dims=DIMS, on_device=True, dy=dy)
    x = np.asarray(_device.jax_normal(DIMS, jax.devices("cpu")[0]))
    assert abs(x.mean() - 1) < 0.5 and abs(x.std() - 2) < 0.5
    out = call()
    sync(out)
    if mode == "training_backward":
        y, dx, (dgamma, dbeta), _ = out
        _check(np.asarray(y), x, mode, dy, [np.asarray(dx), np.asarray(dgamma), np.asarray(dbeta)])
    else:
        y, (mean_v, var_v) = out
        _check(np.asarray(y), x, mode, dy)
        if mode == "training":  # the moving statistics moved 1% of the way to the batch's
            _, mean, var = reference.bn_train(x.astype(np.float64), np.ones(6), np.zeros(6), EPS)
            np.testing.assert_allclose(np.asarray(mean_v), 0.01 * mean, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(np.asarray(var_v), 0.99 + 0.01 * var, rtol=1e-5)
    bench = FakeBenchmark()
    plan, _ = tt._measure_batched(bench, call, sync, (0.01, 3), call_s=1e-3)
    assert bench.runs == [(plan.rounds, 1)] and bench.extra_info["calls"] == plan.calls == 2


def test_batched_rounds_through_pytest_benchmark_reach_the_report_per_call(pytester, monkeypatch):
    """A batched case timed by pytest-benchmark itself (its pedantic loop, its JSON), read back by
    bnspec.report.bench: the stats are per round of `calls` calls, the report's time is per call."""
    import json
    import os

    from bnspec.report import bench
    from tests.helpers import ROOT

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)  # under -n, the child would take itself for a worker: no JSON
    pytester.makepyfile(test_batched="""
        import time
        from tests.benchmarks import _impls

        def test_sleepy_call(benchmark):
            def call():
                time.sleep(0.0005)  # a kernel of 0.5 ms
                return 1
            plan, _ = _impls._measure_batched(benchmark, call, None, (0.05, 3), call_s=0.0005)
            assert plan.calls == 4  # 4 x 0.5 ms >= the 2 ms a round lasts at least
            benchmark.extra_info.update(shape="s", mode="inference", impl="x", bytes=4e6, elements=1e6, device="gpu",
                                        backend="torch")
    """)
    out = pytester.path / "bench.json"
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", f"--benchmark-json={out}")
    result.assert_outcomes(passed=1)
    saved = json.loads(out.read_text())
    (row,) = bench.rows(saved)
    (raw,) = saved["benchmarks"]
    assert raw["extra_info"]["calls"] == 4 and raw["stats"]["rounds"] == 25
    assert raw["stats"]["median"] == pytest.approx(4 * row["median_s"])
    assert 0.0005 <= row["median_s"] < 0.005  # per call: the sleep, not the round
