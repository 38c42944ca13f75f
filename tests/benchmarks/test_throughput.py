"""BN throughput, measured against the machine's own memory bandwidth in the same session.

Run with `tox -e bench` (or `pytest tests/benchmarks -p no:xdist`). Every benchmark records in
extra_info its shape, mode, implementation and the bytes it must move at the least:

  inference forward          read x + write y                       = 2 x size
  training forward           read x for the statistics, read x
                             again to normalise, write y            = 3 x size
  training forward+backward  read x, dy; write y, dx                = 4 x size

`bnspec report` turns the JSON into GB/s and into a fraction of the copy bandwidth measured here
(numpy copyto, TensorFlow's DeepCopy, and y = x + 1 on all threads, and the JAX and PyTorch copies
below: each reads and writes the tensor once, 2 x size; the fastest copy of any backend is the
reference).

One process benchmarks one Keras backend (KERAS_BACKEND, read by bnspec.flavours.backend(); Keras fixes
its backend per process), so `tox -e bench` runs pytest three times into the same storage and the
report merges the newest save of each backend. Each process runs that framework's implementations
(tests of another backend are deselected, not skipped), and its own copy reference next to numpy's:

  tensorflow  keras_eager, keras_function, keras_xla, tf_nn, fused, explicit_function, explicit_xla,
              numpy; copies copy_numpy, copy_tf (DeepCopy), stream_tf (x + 1)
  jax         jax_keras_eager (the layer called eagerly; forward+backward: stateless_call through
              jax.vjp, op by op), jax_keras_jit (stateless_call under jax.jit:
              how Keras trains on JAX; the "vs Keras" reference), jax_jit (BN in jax.numpy under
              jax.jit, forward+backward through jax.vjp); copies copy_numpy, copy_jax (x + 0 under jit)
  torch       torch_keras_eager (the layer; the reference), torch_eager (torch ops), torch_functional
              (torch.nn.functional.batch_norm), torch_compile (torch_eager's function under
              torch.compile; skipped with the reason where it fails); copies copy_numpy, clone_torch
              (x.clone()), copy_torch (out.copy_(x))

Timings include the computation, not just its dispatch: JAX outputs are blocked on
(jax.block_until_ready), CUDA is synchronised; the first call (trace, compile) is outside the timed
region and its duration is recorded as extra_info first_call_s. Forward-only modes run under
torch.no_grad() on PyTorch (as predict() does), training forward updates the moving statistics
everywhere (returned by stateless_call and jax_jit on JAX), and forward+backward returns dx, dgamma,
dbeta for the upstream gradient dy = 1.

JAX and PyTorch allocate every output with malloc; glibc serves a block over 32 MB (the 70.6 MB
tensor) with fresh mmap'd pages, so each call pays their page faults: copy_jax and clone_torch show
the cost against copy_torch (into a kept buffer). Measured once on the 2-core machine:
MALLOC_MMAP_THRESHOLD_=1073741824 took x + 0 under jit from 1.5 to 8.8 GB/s and clone from 1.1 to
7.1 GB/s. The benchmarks keep the default allocator: what a user of these backends gets."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bnspec import reference

SHAPES = {
    "paper_60x100": (60, 100),
    "dense_4096x1024": (4096, 1024),
    "nhwc_64x56x56x64": (64, 56, 56, 64),
    "nhwc_88x56x56x64": (88, 56, 56, 64),  # 70.6 MB of float32: the >= 64 MB case
}
MODES = {"inference": 2, "training": 3, "training_backward": 4}  # bytes moved per element, x4 bytes each
IMPLS = ("keras_eager", "keras_function", "keras_xla", "tf_nn", "fused", "explicit_function", "explicit_xla", "numpy")
JAX_IMPLS = ("jax_keras_eager", "jax_keras_jit", "jax_jit")
TORCH_IMPLS = ("torch_keras_eager", "torch_eager", "torch_functional", "torch_compile")
EPS, MOMENTUM = 1e-3, 0.99  # Keras' defaults


def _info(benchmark, shape, mode, impl, factor, backend="tensorflow"):
    n = int(np.prod(SHAPES[shape]))
    benchmark.extra_info.update({"shape": shape, "dims": list(SHAPES[shape]), "mode": mode, "impl": impl,
                                 "bytes": factor * 4 * n, "elements": n, "backend": backend})


# The fixtures `tf`, `keras`, `backend_name` and `device` (CPU always, GPU when visible) come from
# conftest.py; the marker `bench_backend` (tests/benchmarks/conftest.py) keeps a test to the process
# whose Keras backend it names.


def _data(shape):
    rng = np.random.default_rng(0)
    return rng.normal(1, 2, SHAPES[shape]).astype(np.float32)


# --------------------------------------------------------------------------- the physical reference


@pytest.mark.bench_backend("tensorflow")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", ["copy_numpy", "copy_tf", "stream_tf"])
def test_copy_bandwidth(benchmark, tf, device, shape, impl):
    x = _data(shape)
    _info(benchmark, shape, "copy", impl, 2)
    if impl == "copy_numpy":  # single-threaded memcpy
        out = np.empty_like(x)
        benchmark(np.copyto, out, x)
    elif impl == "stream_tf":  # y = x + 1: TensorFlow's multi-threaded elementwise kernel, read + write
        xt = tf.constant(x)
        stream = tf.function(lambda t: t + 1.0)
        stream(xt)
        benchmark(stream, xt)
    else:
        xt = tf.constant(x)
        # DeepCopy allocates a new buffer and copies into it (tf.identity would just alias, and x + 0
        # is folded away by Grappler): read + write, what the copy bandwidth means
        copy = tf.function(lambda t: tf.raw_ops.DeepCopy(x=t))
        copy(xt)
        benchmark(copy, xt)
    benchmark.extra_info["device"] = device


# --------------------------------------------------------------------------- BN implementations


def _keras_bn(keras, shape, explicit=False):
    if explicit:
        from bnspec.layers import ExplicitBatchNorm

        layer = ExplicitBatchNorm()
    else:
        layer = keras.layers.BatchNormalization()
    layer.build((None,) + SHAPES[shape][1:])
    return layer


def _make(tf, keras, impl, mode, shape):
    """A zero-argument callable running one BN step of `mode`, or None where `impl` does not apply."""
    x_np = _data(shape)
    if impl == "numpy":
        gamma, beta = np.ones(x_np.shape[-1]), np.zeros(x_np.shape[-1])
        dy = np.ones_like(x_np)
        if mode == "inference":
            return lambda: reference.bn_inference(x_np, gamma, beta, 0.0, 1.0, 1e-3)
        if mode == "training":
            return lambda: reference.bn_train(x_np, gamma, beta, 1e-3)
        return lambda: (reference.bn_train(x_np, gamma, beta, 1e-3), reference.bn_backward(dy, x_np, gamma, 1e-3))
    x = tf.constant(x_np)
    dy = tf.ones_like(x)
    if impl in ("tf_nn", "fused"):
        c = x_np.shape[-1]
        gamma, beta = tf.Variable(tf.ones([c])), tf.Variable(tf.zeros([c]))
        mean_v, var_v = tf.Variable(tf.zeros([c])), tf.Variable(tf.ones([c]))
        axes = list(range(x_np.ndim - 1))
        if impl == "fused" and x_np.ndim != 4:
            return None  # the fused kernel takes 4-D input only

        def forward(t, training):
            if impl == "fused":
                if training:
                    y, m, v = tf.compat.v1.nn.fused_batch_norm(t, gamma, beta, epsilon=1e-3, is_training=True)
                else:
                    y, m, v = tf.compat.v1.nn.fused_batch_norm(t, gamma, beta, mean_v, var_v, epsilon=1e-3,
                                                               is_training=False)
            elif training:
                m, v = tf.nn.moments(t, axes)
                y = tf.nn.batch_normalization(t, m, v, beta, gamma, 1e-3)
            else:
                y = tf.nn.batch_normalization(t, mean_v, var_v, beta, gamma, 1e-3)
                return y
            mean_v.assign(mean_v * 0.99 + m * 0.01)
            var_v.assign(var_v * 0.99 + v * 0.01)
            return y

        variables = [gamma, beta]
        call = forward
        jit = False
    else:
        layer = _keras_bn(keras, shape, explicit=impl.startswith("explicit"))
        call = lambda t, training: layer(t, training=training)  # noqa: E731
        variables = [layer.gamma, layer.beta]
        jit = impl.endswith("xla")

    def step(t):
        if mode == "inference":
            return call(t, False)
        if mode == "training":
            return call(t, True)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = call(t, True)
        return tape.gradient(y, [t] + variables, output_gradients=dy)

    if impl == "keras_eager":
        return lambda: step(x)
    fn = tf.function(step, jit_compile=jit)
    fn(x)  # trace (and compile) outside the timed region
    return lambda: fn(x)


@pytest.mark.bench_backend("tensorflow")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("impl", IMPLS)
def test_bn(benchmark, tf, keras, device, impl, mode, shape):
    run = _make(tf, keras, impl, mode, shape)
    if run is None:
        pytest.skip(f"{impl} does not apply to {shape}")
    _info(benchmark, shape, mode, impl, MODES[mode])
    benchmark.extra_info["device"] = device
    if impl == "numpy" and np.prod(SHAPES[shape]) > 1e6:
        benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)  # float64 numpy: seconds per call
    else:
        benchmark(run)


# --------------------------------------------------------------------------- JAX (KERAS_BACKEND=jax)


def _first_call(benchmark, fn):
    """Run fn once outside the timed region (trace, compile, allocate) and record how long it took."""
    t0 = time.perf_counter()
    fn()
    benchmark.extra_info["first_call_s"] = round(time.perf_counter() - t0, 4)


def _jax_device(device):
    import jax

    return jax.devices("gpu" if device == "gpu" else "cpu")[0]


@pytest.mark.bench_backend("jax")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", ["copy_numpy", "copy_jax"])
def test_copy_jax(benchmark, keras, device, shape, impl):
    import jax

    x = _data(shape)
    _info(benchmark, shape, "copy", impl, 2, "jax")
    benchmark.extra_info["device"] = device
    if impl == "copy_numpy":
        out = np.empty_like(x)
        benchmark(np.copyto, out, x)
        return
    xj = jax.device_put(x, _jax_device(device))
    # x + 0 under jit: XLA may simplify the add away, but a jitted function's output never aliases
    # its (undonated) input, so it still allocates and writes a new buffer: read + write
    copy = jax.jit(lambda t: t + 0.0)
    run = lambda: jax.block_until_ready(copy(xj))  # noqa: E731
    _first_call(benchmark, run)
    assert copy(xj).unsafe_buffer_pointer() != xj.unsafe_buffer_pointer()
    benchmark(run)


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


def _jax_make(keras, impl, mode, shape, device):
    """A zero-argument callable running one BN step of `mode` on JAX, blocked on its outputs."""
    import jax

    dev = _jax_device(device)
    x_np = _data(shape)
    x = jax.device_put(x_np, dev)
    dy = jax.device_put(np.ones_like(x_np), dev)
    training = mode != "inference"
    if impl == "jax_jit":
        c, axes = x_np.shape[-1], tuple(range(x_np.ndim - 1))
        params = [jax.device_put(np.ones(c, np.float32), dev), jax.device_put(np.zeros(c, np.float32), dev)]
        stats = [jax.device_put(np.zeros(c, np.float32), dev), jax.device_put(np.ones(c, np.float32), dev)]

        def forward(params, stats, x):  # -> y, (new moving mean, new moving variance)
            return _jax_bn(x, *params, *stats, training, axes)
    else:
        layer = keras.layers.BatchNormalization()
        layer.build((None,) + SHAPES[shape][1:])
        params = [v.value for v in layer.trainable_variables]
        stats = [v.value for v in layer.non_trainable_variables]
        if impl == "jax_keras_eager" and mode != "training_backward":  # the layer as a user calls it
            return lambda: jax.block_until_ready(layer(x, training=training))

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
    return lambda: jax.block_until_ready(step(params, stats, x, dy))


@pytest.mark.bench_backend("jax")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("impl", JAX_IMPLS)
def test_bn_jax(benchmark, keras, device, impl, mode, shape):
    run = _jax_make(keras, impl, mode, shape, device)
    _info(benchmark, shape, mode, impl, MODES[mode], "jax")
    benchmark.extra_info["device"] = device
    _first_call(benchmark, run)
    benchmark(run)


# --------------------------------------------------------------------------- PyTorch (KERAS_BACKEND=torch)


def _torch_device(device):
    import torch

    return torch.device("cuda:0" if device == "gpu" else "cpu")


def _torch_timed(fn, device):
    """fn, synchronised with the GPU so that the time includes its kernels (CPU ops are synchronous)."""
    if device != "gpu":
        return fn
    import torch

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


@pytest.mark.bench_backend("torch")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", ["copy_numpy", "clone_torch", "copy_torch"])
def test_copy_torch(benchmark, keras, device, shape, impl):
    import torch

    x = _data(shape)
    _info(benchmark, shape, "copy", impl, 2, "torch")
    benchmark.extra_info["device"] = device
    if impl == "copy_numpy":
        out = np.empty_like(x)
        benchmark(np.copyto, out, x)
        return
    xt = torch.from_numpy(x).to(_torch_device(device))
    if impl == "clone_torch":  # allocates a new tensor and copies into it
        run = xt.clone
    else:  # copies into a preallocated tensor (the analogue of np.copyto; multi-threaded in ATen)
        out = torch.empty_like(xt)
        run = lambda: out.copy_(xt)  # noqa: E731
    run = _torch_timed(run, device)
    _first_call(benchmark, run)
    benchmark(run)


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


def _torch_make(keras, impl, mode, shape, device):
    """A zero-argument callable running one BN step of `mode` on PyTorch."""
    import torch
    import torch.nn.functional as F

    dev = _torch_device(device)
    x_np = _data(shape)
    backward = mode == "training_backward"
    training = mode != "inference"
    x = torch.from_numpy(x_np).to(dev).requires_grad_(backward)
    dy = torch.ones_like(x)
    c = x_np.shape[-1]
    if impl == "torch_keras_eager":
        layer = keras.layers.BatchNormalization()
        layer.build((None,) + SHAPES[shape][1:])
        params = [layer.gamma.value, layer.beta.value]
        forward = lambda: layer(x, training=training)  # noqa: E731
    else:
        params = [torch.ones(c, device=dev, requires_grad=backward), torch.zeros(c, device=dev, requires_grad=backward)]
        mean_v, var_v = torch.zeros(c, device=dev), torch.ones(c, device=dev)
        if impl == "torch_functional":
            def forward():
                # channels last: NHWC seen as NCHW is torch's channels_last layout (a view, no copy),
                # which the native CPU kernel handles as such; (N, C) is already what it takes
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
            dims = tuple(range(x_np.ndim - 1))
            forward = lambda: fn(x, params[0], params[1], mean_v, var_v, training, dims)  # noqa: E731

    if backward:
        def step():
            y = forward()
            return y, torch.autograd.grad(y, [x] + params, dy)
    else:
        def step():
            with torch.no_grad():
                return forward()
    return _torch_timed(step, device)


@pytest.mark.bench_backend("torch")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_bn_torch(benchmark, keras, device, impl, mode, shape):
    run = _torch_make(keras, impl, mode, shape, device)
    _info(benchmark, shape, mode, impl, MODES[mode], "torch")
    benchmark.extra_info["device"] = device
    try:
        _first_call(benchmark, run)
    except Exception as exc:  # noqa: BLE001 - torch.compile fails from many layers (dynamo, inductor, the C++ compiler)
        if impl != "torch_compile":
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        _TORCH_COMPILE_FAILED.append(f"torch.compile does not work here (first failure on {shape}, {mode}): "
                                     f"{type(exc).__name__}: {first_line}")
        pytest.skip(_TORCH_COMPILE_FAILED[0])
    benchmark(run)


# --------------------------------------------------------------------------- the paper's model, one training step


@pytest.mark.parametrize("variant", ["keras_bn", "explicit_bn", "no_bn"])
def test_mnist_training_step(benchmark, keras, backend_name, variant):
    from bnspec.model import ModelSpec, build, compile_model

    spec = {"keras_bn": ModelSpec(), "explicit_bn": ModelSpec(bn="explicit"), "no_bn": ModelSpec(batchnorm=False)}[variant]
    model = compile_model(build(spec, keras), keras)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 60)]
    model.train_on_batch(x, y)  # builds the training function
    benchmark.extra_info.update({"mode": "mnist_step", "impl": variant, "shape": "mnist_60x784",
                                 "backend": backend_name})
    benchmark(model.train_on_batch, x, y)
