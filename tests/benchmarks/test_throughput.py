"""BN throughput, measured against the machine's own memory bandwidth in the same session.

Run with `tox -e bench` (or `pytest tests/benchmarks -p no:xdist`). Every benchmark records in
extra_info its shape, mode, implementation and the bytes it must move at the least:

  inference forward          read x + write y                       = 2 x size
  training forward           read x for the statistics, read x
                             again to normalise, write y            = 3 x size
  training forward+backward  read x, dy; write y, dx                = 4 x size

`bnspec report` turns the JSON into GB/s and into a fraction of the copy bandwidth measured here
(numpy copyto, TensorFlow's DeepCopy, and y = x + 1 on all threads: each reads and writes the
tensor once, 2 x size; the fastest of the three is the reference)."""

from __future__ import annotations

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


def _info(benchmark, shape, mode, impl, factor):
    n = int(np.prod(SHAPES[shape]))
    benchmark.extra_info.update({"shape": shape, "dims": list(SHAPES[shape]), "mode": mode, "impl": impl,
                                 "bytes": factor * 4 * n, "elements": n})


# The fixtures `tf`, `keras` and `device` (CPU always, GPU when visible) come from conftest.py.


def _data(shape):
    rng = np.random.default_rng(0)
    return rng.normal(1, 2, SHAPES[shape]).astype(np.float32)


# --------------------------------------------------------------------------- the physical reference


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


# --------------------------------------------------------------------------- the paper's model, one training step


@pytest.mark.parametrize("variant", ["keras_bn", "explicit_bn", "no_bn"])
def test_mnist_training_step(benchmark, tf, keras, variant):
    from bnspec.model import ModelSpec, build, compile_model

    spec = {"keras_bn": ModelSpec(), "explicit_bn": ModelSpec(bn="explicit"), "no_bn": ModelSpec(batchnorm=False)}[variant]
    model = compile_model(build(spec, keras), keras)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 60)]
    model.train_on_batch(x, y)  # builds the training function
    benchmark.extra_info.update({"mode": "mnist_step", "impl": variant, "shape": "mnist_60x784"})
    benchmark(model.train_on_batch, x, y)
