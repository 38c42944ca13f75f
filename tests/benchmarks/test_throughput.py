"""BN throughput, measured against the device's own memory bandwidth in the same session.

Run with `tox -e bench` (or `pytest tests/benchmarks -p no:xdist`); on a GPU machine scripts/gpu_run.sh runs
them with `--bnspec-device=gpu`. Every benchmark records in extra_info its shape, mode, implementation and
the bytes it must move at the least:

  inference forward          read x + write y                       = 2 x size
  training forward           read x for the statistics, read x
                             again to normalise, write y            = 3 x size
  training forward+backward  read x, dy; write y, dx                = 4 x size

`bnspec report` turns the JSON into GB/s and into a fraction of the copy bandwidth measured here
(numpy copyto, TensorFlow's DeepCopy, and y = x + 1 on all threads, and the JAX and PyTorch copies
below: each reads and writes the tensor once, 2 x size; the fastest copy of any backend is the
reference; on a GPU only the device's own copies count).

One process benchmarks one Keras backend (the run's, bnspec.run.Run; Keras fixes its backend per process),
so `tox -e bench` runs pytest three times into the same storage and the report merges the newest save of
each backend. Each process runs that framework's implementations (tests of another backend are deselected,
not skipped), and its own copy reference next to numpy's:

  tensorflow  keras_eager, keras_function, keras_xla, tf_nn, fused, explicit_function, explicit_xla,
              numpy; copies copy_numpy, copy_tf (DeepCopy), stream_tf (x + 1)
  jax         jax_keras_eager (the layer called eagerly; forward+backward: stateless_call through
              jax.vjp, op by op), jax_keras_jit (stateless_call under jax.jit:
              how Keras trains on JAX; the "vs Keras" reference), jax_jit (BN in jax.numpy under
              jax.jit, forward+backward through jax.vjp: JAX's native BN); copies copy_numpy, copy_jax
              (x + 0 under jit)
  torch       torch_keras_eager (the layer; the reference), torch_eager (torch ops), torch_functional
              (torch.nn.functional.batch_norm: cuDNN or ATen's CUDA kernel on a GPU), torch_compile
              (torch_eager's function under torch.compile; skipped with the reason where it fails); copies
              copy_numpy, clone_torch (x.clone()), copy_torch (out.copy_(x))

Devices and shapes (tests/benchmarks/_device.py). The CPU measures CPU_SHAPES, as its history always has. A
GPU measures GPU_SHAPES: a 1.64 GB tensor (memory-bound), the 70.6 MB one (about an H200's L2) and the
paper's 60x100 (launch-bound); there the tensors are made on the device, the host copy copy_numpy is not a
reference, and the timing is batched: each round is several back-to-back calls and one synchronisation
(extra_info["calls"]; PyTorch also records CUDA-event device time, extra_info["device_median_s"]).

Timings include the computation, not just its dispatch: JAX outputs are blocked on
(jax.block_until_ready), CUDA is synchronised; the first call (trace, compile) is outside the timed
region and its duration is recorded as extra_info first_call_s. Forward-only modes run under
torch.no_grad() on PyTorch (as predict() does), training forward updates the moving statistics
everywhere (returned by stateless_call and jax_jit on JAX), and forward+backward returns dx, dgamma,
dbeta for the upstream gradient dy = 1.

JAX and PyTorch allocate every output with malloc on the CPU; glibc serves a block over 32 MB (the 70.6 MB
tensor) with fresh mmap'd pages, so each call pays their page faults: copy_jax and clone_torch show
the cost against copy_torch (into a kept buffer). Measured once on the 2-core machine:
MALLOC_MMAP_THRESHOLD_=1073741824 took x + 0 under jit from 1.5 to 8.8 GB/s and clone from 1.1 to
7.1 GB/s. The benchmarks keep the default allocator: what a user of these backends gets."""

from __future__ import annotations

import numpy as np
import pytest

from bnspec import reference
from tests.benchmarks import _device
from tests.benchmarks._device import SHAPES  # CPU_SHAPES and GPU_SHAPES: each device runs its own set
from tests.benchmarks._impls import (_TORCH_COMPILE_FAILED, _data, _first_call, _jax_input, _jax_make, _measure,
                                     _torch_extra, _torch_input, _torch_make)

MODES = {"inference": 2, "training": 3, "training_backward": 4}  # bytes moved per element, x4 bytes each
IMPLS = ("keras_eager", "keras_function", "keras_xla", "tf_nn", "fused", "explicit_function", "explicit_xla", "numpy")
JAX_IMPLS = ("jax_keras_eager", "jax_keras_jit", "jax_jit")
TORCH_IMPLS = ("torch_keras_eager", "torch_eager", "torch_functional", "torch_compile")


def _info(benchmark, shape, mode, impl, factor, backend="tensorflow", dims=None):
    dims = tuple(dims or SHAPES[shape])
    n = int(np.prod(dims))
    benchmark.extra_info.update({"shape": shape, "dims": list(dims), "mode": mode, "impl": impl,
                                 "bytes": factor * 4 * n, "elements": n, "backend": backend})


# The fixtures `tf`, `keras`, `backend_name` and `device` (CPU always, GPU when visible) come from
# conftest.py; the marker `bench_backend` and `bench_limits` from tests/benchmarks/conftest.py.


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
        from bnspec.subjects import layers

        layer = layers.for_keras(keras).ExplicitBatchNorm()
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


@pytest.mark.bench_backend("jax")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", ["copy_numpy", "copy_jax"])
def test_copy_jax(benchmark, keras, device, bench_limits, shape, impl):
    import jax

    _info(benchmark, shape, "copy", impl, 2, "jax")
    benchmark.extra_info["device"] = device
    if impl == "copy_numpy":
        x = _data(shape)
        out = np.empty_like(x)
        benchmark(np.copyto, out, x)
        return
    xj = _jax_input(shape, device)
    # x + 0 under jit: XLA may simplify the add away, but a jitted function's output never aliases
    # its (undonated) input, so it still allocates and writes a new buffer: read + write
    copy = jax.jit(lambda t: t + 0.0)
    assert copy(xj).unsafe_buffer_pointer() != xj.unsafe_buffer_pointer()
    _measure(benchmark, lambda: copy(xj), jax.block_until_ready, device, bench_limits, "jax")


@pytest.mark.bench_backend("jax")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("impl", JAX_IMPLS)
def test_bn_jax(benchmark, keras, device, bench_limits, impl, mode, shape):
    call, sync = _jax_make(keras, impl, mode, shape, device)
    _info(benchmark, shape, mode, impl, MODES[mode], "jax")
    benchmark.extra_info["device"] = device
    _measure(benchmark, call, sync, device, bench_limits, "jax")


# --------------------------------------------------------------------------- PyTorch (KERAS_BACKEND=torch)


@pytest.mark.bench_backend("torch")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("impl", ["copy_numpy", "clone_torch", "copy_torch"])
def test_copy_torch(benchmark, keras, device, bench_limits, shape, impl):
    import torch

    _info(benchmark, shape, "copy", impl, 2, "torch")
    benchmark.extra_info["device"] = device
    if impl == "copy_numpy":
        x = _data(shape)
        out = np.empty_like(x)
        benchmark(np.copyto, out, x)
        return
    xt = _torch_input(shape, device)
    if impl == "clone_torch":  # allocates a new tensor and copies into it
        call = xt.clone
    else:  # copies into a preallocated tensor (the analogue of np.copyto; multi-threaded in ATen)
        out = torch.empty_like(xt)
        call = lambda: out.copy_(xt)  # noqa: E731
    _measure(benchmark, call, _device.torch_sync(device), device, bench_limits, "torch", _device.torch_event(device))


@pytest.mark.bench_backend("torch")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("impl", TORCH_IMPLS)
def test_bn_torch(benchmark, keras, device, bench_limits, impl, mode, shape):
    call, sync = _torch_make(keras, impl, mode, shape, device)
    _info(benchmark, shape, mode, impl, MODES[mode], "torch")
    benchmark.extra_info.update({"device": device, **_torch_extra(device)})
    try:
        _first_call(benchmark, lambda: _device.synced(call, sync))
    except Exception as exc:  # noqa: BLE001 - torch.compile fails from many layers (dynamo, inductor, the C++ compiler)
        if impl != "torch_compile":
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        _TORCH_COMPILE_FAILED.append(f"torch.compile does not work here (first failure on {shape}, {mode}): "
                                     f"{type(exc).__name__}: {first_line}")
        pytest.skip(_TORCH_COMPILE_FAILED[0])
    _measure(benchmark, call, sync, device, bench_limits, "torch", _device.torch_event(device), first_call=False)


# --------------------------------------------------------------------------- the paper's model, one training step


@pytest.mark.parametrize("variant", ["keras_bn", "explicit_bn", "no_bn"])
def test_mnist_training_step(benchmark, keras, backend_name, gpus, variant):
    from bnspec.subjects.model import ModelSpec, build, compile_model

    spec = {"keras_bn": ModelSpec(), "explicit_bn": ModelSpec(bn="explicit"), "no_bn": ModelSpec(batchnorm=False)}[variant]
    model = compile_model(build(spec, keras), keras)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 60)]
    model.train_on_batch(x, y)  # builds the training function
    benchmark.extra_info.update({"mode": "mnist_step", "impl": variant, "shape": "mnist_60x784",
                                 "backend": backend_name, "device": "gpu" if gpus else "cpu"})  # Keras' default device
    benchmark(model.train_on_batch, x, y)
