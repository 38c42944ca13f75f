"""The JAX and PyTorch implementations the benchmarks time, and how they are timed (tests/benchmarks/
test_throughput.py runs them; tests/unit/test_bench_gpu.py checks them on the CPU against bnspec.reference).
No framework is imported at import time.

A maker returns (call, sync): call() runs one BN step and returns its outputs (queued, on a GPU), sync(outputs)
waits for the device (None where the call is synchronous, torch on the CPU). `_measure` times them: on the CPU
with pytest-benchmark's own calibration, one synchronised call per iteration (as the CPU history was measured);
on a GPU in batched rounds (`_measure_batched`, tests/benchmarks/_device.py). The makers take `dims`,
`on_device` and `dy` to run the GPU path (tensors made on the device) on the CPU with a tiny tensor.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.benchmarks import _device
from tests.benchmarks._device import SHAPES

EPS, MOMENTUM = 1e-3, 0.99  # Keras' defaults


def _data(shape, dims=None):
    rng = np.random.default_rng(0)
    return rng.normal(1, 2, tuple(dims or SHAPES[shape])).astype(np.float32)


# --------------------------------------------------------------------------- timing (JAX and PyTorch)


def _first_call(benchmark, fn):
    """Run fn once outside the timed region (trace, compile, allocate) and record how long it took."""
    t0 = time.perf_counter()
    fn()
    benchmark.extra_info["first_call_s"] = round(time.perf_counter() - t0, 4)


def _measure(benchmark, call, sync, device, limits, backend, event=None, first_call=True):
    """Time call() with its device work included (sync(output) waits for it; None: call() is synchronous). The
    CPU: pytest-benchmark's own calibration, one synchronised call per iteration, as the CPU history was
    measured. A GPU: batched rounds (_measure_batched). `first_call`: time the first call here (False: the
    caller did)."""
    def run():
        out = call()
        sync(out)
        return out

    run = call if sync is None else run
    if first_call:
        _first_call(benchmark, run)
    if device != "gpu":
        benchmark(run)
        return
    benchmark.extra_info.update(_device.gpu_info(backend))
    _measure_batched(benchmark, call, sync, limits, event, min(_device.timed(run) for _ in range(3)))


def _measure_batched(benchmark, call, sync, limits, event=None, call_s=None):
    """Rounds of `calls` back-to-back calls and one sync (_device.Batch), planned from a synchronised call's
    time (`call_s`; measured once here when not given) so that a round lasts >= _device.MIN_ROUND_S and the
    rounds fill --benchmark-max-time. pytest-benchmark records rounds: extra_info["calls"] says how many calls
    each holds (bnspec.report.bench divides by it)."""
    if call_s is None:
        call_s = _device.timed(lambda: _device.synced(call, sync))
    max_time, min_rounds = limits
    p = _device.plan(call_s, max_time, min_rounds)
    batch = _device.Batch(call, sync, p.calls, event)
    benchmark.extra_info.update({"calls": p.calls, "timing": f"rounds of {p.calls} calls + 1 sync"
                                 + (", CUDA events" if event is not None else "")})
    benchmark.pedantic(batch, rounds=p.rounds, iterations=1, warmup_rounds=1)
    device_s = batch.device_median(p.rounds)
    if device_s is not None:
        benchmark.extra_info["device_median_s"] = device_s
    return p, batch


# --------------------------------------------------------------------------- JAX (KERAS_BACKEND=jax)


def _jax_device(device):
    import jax

    return jax.devices("gpu" if device == "gpu" else "cpu")[0]


def _jax_input(shape, device, dims=None, on_device=None):
    """x on the jax device: made there for a GPU (on_device), else numpy's N(1, 2^2) copied over."""
    import jax

    dims = tuple(dims or SHAPES[shape])
    dev = _jax_device(device)
    if on_device if on_device is not None else device == "gpu":
        return _device.jax_normal(dims, dev)
    return jax.device_put(_data(shape, dims), dev)


def _jax_bn(x, gamma, beta, mean_v, var_v, training, axes):
    """BN in jax.numpy: the statistics as Keras computes them on JAX (jnp.mean, jnp.var), then
    y = x * scale + shift with scale = gamma / sqrt(var + eps): one pass over x."""
    import jax
    import jax.numpy as jnp

    if training:
        m, v = jnp.mean(x, axes), jnp.var(x, axes)
        mean_v, var_v = mean_v * MOMENTUM + m * (1 - MOMENTUM), var_v * MOMENTUM + v * (1 - MOMENTUM)
    else:
        m, v = mean_v, var_v
    scale = gamma * jax.lax.rsqrt(v + EPS)
    return x * scale + (beta - m * scale), (mean_v, var_v)


def _jax_make(keras, impl, mode, shape, device, dims=None, on_device=None, dy=None):
    """(call, sync): one BN step of `mode` on JAX (its outputs), and what blocks on them. `dims`, `on_device` and
    `dy` override the shape's dimensions, where x is made and the upstream gradient (default 1)
    (tests/unit/test_bench_gpu.py: the GPU path on the CPU, checked against bnspec.reference)."""
    import jax

    dims = tuple(dims or SHAPES[shape])
    dev = _jax_device(device)
    x = _jax_input(shape, device, dims, on_device)
    dy = jax.numpy.ones_like(x) if dy is None else jax.device_put(np.asarray(dy, np.float32), dev)
    training = mode != "inference"
    if impl == "jax_jit":
        c, axes = dims[-1], tuple(range(len(dims) - 1))
        params = [jax.device_put(np.ones(c, np.float32), dev), jax.device_put(np.zeros(c, np.float32), dev)]
        stats = [jax.device_put(np.zeros(c, np.float32), dev), jax.device_put(np.ones(c, np.float32), dev)]

        def forward(params, stats, x):  # -> y, (new moving mean, new moving variance)
            return _jax_bn(x, *params, *stats, training, axes)
    else:
        layer = keras.layers.BatchNormalization()
        layer.build((None,) + dims[1:])
        params = [v.value for v in layer.trainable_variables]
        stats = [v.value for v in layer.non_trainable_variables]
        if impl == "jax_keras_eager" and mode != "training_backward":  # the layer as a user calls it
            return (lambda: layer(x, training=training)), jax.block_until_ready

        def forward(params, stats, x):  # -> y, the new non-trainable variables (the moving statistics)
            return layer.stateless_call(params, stats, x, training=training)

    if mode == "training_backward":
        def step(params, stats, x, dy):
            y, vjp, new_stats = jax.vjp(lambda p, t: forward(p, stats, t), params, x, has_aux=True)
            dparams, dx = vjp(dy)
            return y, dx, dparams, new_stats
    else:
        step = lambda params, stats, x, dy: forward(params, stats, x)  # noqa: E731
    if impl != "jax_keras_eager":
        step = jax.jit(step)  # every array an argument: nothing folded into the compiled code
    return (lambda: step(params, stats, x, dy)), jax.block_until_ready


def _torch_device(device):
    import torch

    return torch.device("cuda:0" if device == "gpu" else "cpu")


def _torch_input(shape, device, dims=None, on_device=None):
    """x on the torch device: made there for a GPU (on_device), else numpy's N(1, 2^2) copied over."""
    import torch

    dims = tuple(dims or SHAPES[shape])
    dev = _torch_device(device)
    if on_device if on_device is not None else device == "gpu":
        return _device.torch_normal(dims, dev)
    return torch.from_numpy(_data(shape, dims)).to(dev)


def _torch_extra(device) -> dict:
    if device != "gpu":
        return {}
    import torch

    return {"cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}


def _torch_bn(x, gamma, beta, mean_v, var_v, training: bool, dims: tuple):
    """BN in torch ops: statistics by torch.var_mean (one pass), y = x * scale + shift; the moving
    statistics are updated in place (from detached statistics, outside the autograd graph)."""
    import torch

    if training:
        v, m = torch.var_mean(x, dim=dims, correction=0)
        with torch.no_grad():
            mean_v.mul_(MOMENTUM).add_(m.detach(), alpha=1 - MOMENTUM)
            var_v.mul_(MOMENTUM).add_(v.detach(), alpha=1 - MOMENTUM)
    else:
        m, v = mean_v, var_v
    scale = gamma * torch.rsqrt(v + EPS)
    return x * scale + (beta - m * scale)


_TORCH_COMPILE_FAILED: list[str] = []  # the first torch.compile failure: later cases skip with it


def _torch_make(keras, impl, mode, shape, device, dims=None, on_device=None, dy=None):
    """(call, sync): one BN step of `mode` on PyTorch, and what waits for the device. `dims`, `on_device` and
    `dy` override the shape's dimensions, where x is made and the upstream gradient (default 1)
    (tests/unit/test_bench_gpu.py: the GPU path on the CPU, checked against bnspec.reference)."""
    import torch
    import torch.nn.functional as F

    dims = tuple(dims or SHAPES[shape])
    dev = _torch_device(device)
    backward = mode == "training_backward"
    training = mode != "inference"
    x = _torch_input(shape, device, dims, on_device).requires_grad_(backward)
    dy = torch.ones_like(x) if dy is None else torch.as_tensor(np.asarray(dy, np.float32), device=dev)
    c = dims[-1]
    if impl == "torch_keras_eager":
        layer = keras.layers.BatchNormalization()
        layer.build((None,) + dims[1:])
        params = [layer.gamma.value, layer.beta.value]
        forward = lambda: layer(x, training=training)  # noqa: E731
    else:
        params = [torch.ones(c, device=dev, requires_grad=backward), torch.zeros(c, device=dev, requires_grad=backward)]
        mean_v, var_v = torch.zeros(c, device=dev), torch.ones(c, device=dev)
        if impl == "torch_functional":
            def forward():
                # channels last: NHWC seen as NCHW is torch's channels_last layout (a view, no copy),
                # which the native kernels (CPU, cuDNN, ATen's CUDA) handle as such; (N, C) is already what it takes
                t = x.permute(0, x.ndim - 1, *range(1, x.ndim - 1)) if x.ndim > 2 else x
                y = F.batch_norm(t, mean_v, var_v, params[0], params[1], training=training,
                                 momentum=1 - MOMENTUM, eps=EPS)
                return y.permute(0, *range(2, x.ndim), 1) if x.ndim > 2 else y
        else:
            fn = _torch_bn
            if impl == "torch_compile":
                if _TORCH_COMPILE_FAILED:
                    pytest.skip(_TORCH_COMPILE_FAILED[0])
                torch._dynamo.reset()  # one specialised graph per case: no recompile limits, no dynamic shapes
                fn = torch.compile(_torch_bn, dynamic=False)
            axes = tuple(range(len(dims) - 1))
            forward = lambda: fn(x, params[0], params[1], mean_v, var_v, training, axes)  # noqa: E731

    if backward:
        def step():
            y = forward()
            return y, torch.autograd.grad(y, [x] + params, dy)
    else:
        def step():
            with torch.no_grad():
                return forward()
    return step, _device.torch_sync(device)
