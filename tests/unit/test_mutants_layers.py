"""The mutant layers (bnspec.subjects.mutants) on Keras 3: every mutant is really wrong where the catalogue
says (`shows`: the probes below), the harness' own re-implementation of the layer and Keras' layer are not,
the new mutants deviate only where they say, and installing one swaps Keras' class in every route
(including .keras loading)."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

from bnspec import BnspecError, flavours, reference
from bnspec.subjects import mutants
from tests.helpers import run_python
from tests.unit.test_mutants import PROBES as NAMED_PROBES


@pytest.fixture(scope="module")
def keras(run):
    if run.family != "keras3" or run.backend != "tensorflow":
        pytest.skip("mutants patch Keras 3's BatchNormalization on TensorFlow")
    try:
        return flavours.keras_module(run)
    except BnspecError as exc:
        pytest.skip(str(exc))


def _layer(cls, rng, shape=(None, 8), **kwargs):
    layer = cls(**kwargs)
    layer.build(shape)
    n = shape[layer.axis]
    layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    layer.beta.assign(rng.normal(0.0, 1.0, n).astype(np.float32))
    layer.moving_mean.assign(rng.normal(0.0, 2.0, n).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 4.0, n).astype(np.float32))
    return layer


def _state(layer):
    return {k: np.array(getattr(layer, a).numpy(), np.float64) for k, a in
            (("gamma", "gamma"), ("beta", "beta"), ("mean", "moving_mean"), ("var", "moving_variance"))}


def _x(rng, shape, offset=1.0):
    return (rng.normal(0, 1, shape) * rng.uniform(0.5, 3, shape[-1]) + rng.normal(0, offset, shape[-1])).astype(np.float32)


def _beyond(err, bound) -> bool:
    return bool(np.any(np.asarray(err) > np.asarray(bound)))


def _round16(x, dtype):
    """float32 values rounded to the 16-bit dtype (as a mixed policy's autocast does), back as float64."""
    import ml_dtypes

    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16).astype(np.float64)


# Each probe builds a layer of `cls`, runs it and returns True when it deviates from the numpy
# reference beyond the float32 bound the claim tests use (False: consistent with BN as specified).


def probe_train(cls, rng, keras):
    layer = _layer(cls, rng)
    s, x = _state(layer), _x(rng, (60, 8), 0.3)
    y = np.asarray(layer(x, training=True), np.float64)
    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], 1e-3)
    return _beyond(np.abs(y - ref), reference.bn_bound(x, s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=60))


def _inference(cls, rng, training):
    layer = _layer(cls, rng)
    s, x = _state(layer), _x(rng, (60, 8), 2.0)
    y = np.asarray(layer(x) if training is None else layer(x, training=training), np.float64)
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
    moved = not (np.array_equal(_state(layer)["mean"], s["mean"]) and np.array_equal(_state(layer)["var"], s["var"]))
    return _beyond(np.abs(y - ref), reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)), moved


def probe_inference(cls, rng, keras):
    return any(_inference(cls, rng, False))


def probe_inference_none(cls, rng, keras):
    return any(_inference(cls, rng, None))


def probe_inference_state(cls, rng, keras):
    return _inference(cls, rng, False)[1]


def _update(cls, rng, shape, momentum):
    layer = _layer(cls, rng, (None,) + shape[1:], momentum=momentum)
    s, x = _state(layer), _x(rng, shape)
    layer(x, training=True)
    mean, var = reference.batch_stats(x)
    b_mean, b_var = reference.ema_bounds(x, s["mean"], s["var"], momentum)
    after = _state(layer)
    return _beyond(np.abs(after["mean"] - reference.ema(s["mean"], mean, momentum)), b_mean) or \
        _beyond(np.abs(after["var"] - reference.ema(s["var"], var, momentum)), b_var)


def probe_update(cls, rng, keras):
    return _update(cls, rng, (60, 8), 0.9)


def probe_conv_update(cls, rng, keras):
    return _update(cls, rng, (8, 4, 4, 3), 0.0)


def probe_conv(cls, rng, keras):
    layer = _layer(cls, rng, (None, 4, 4, 3))
    s, x = _state(layer), _x(rng, (8, 4, 4, 3))
    y = np.asarray(layer(x, training=True), np.float64)
    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], 1e-3)
    return _beyond(np.abs(y - ref), reference.bn_bound(x, s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=128))


def probe_frozen(cls, rng, keras):
    layer = _layer(cls, rng)
    layer.trainable = False
    s, x = _state(layer), _x(rng, (60, 8), 2.0)
    y = np.asarray(layer(x, training=True), np.float64)
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
    return _beyond(np.abs(y - ref), reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)) or \
        not np.array_equal(_state(layer)["mean"], s["mean"])


def probe_mask(cls, rng, keras):
    layer = _layer(cls, rng, (None, 6, 3))
    s = _state(layer)
    x = _x(rng, (5, 6, 3))
    mask = rng.random((5, 6)) > 0.3
    mask[:, 0] = True
    x[~mask] = 50.0
    y = np.asarray(layer(x, training=True, mask=mask), np.float64)[mask]
    ref, mean, var = reference.bn_train(x[mask], s["gamma"], s["beta"], 1e-3)
    return _beyond(np.abs(y - ref), reference.bn_bound(x[mask], s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=30))


def probe_offset(cls, rng, keras):
    # features at 1e4 +- 1: a two-pass variance is still accurate in float32, E[x^2]-E[x]^2 is not
    layer = _layer(cls, rng)
    s = _state(layer)
    x = (1e4 + rng.normal(0, 1, (60, 8))).astype(np.float32)
    y = np.asarray(layer(x, training=True), np.float64)
    ref = reference.bn_train(x, s["gamma"], s["beta"], 1e-3)[0]
    return not np.all(np.abs(y - ref) <= 0.05)  # also True for NaN


def probe_gradient(cls, rng, keras):
    import tensorflow as tf

    layer = _layer(cls, rng)
    s, x = _state(layer), _x(rng, (60, 8))
    dy = rng.normal(0, 1, (60, 8)).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer(xt, training=True) * dy)
    gx = np.asarray(tape.gradient(loss, xt), np.float64)
    ref = reference.bn_backward(dy, x, s["gamma"], 1e-3)["x"]
    return _beyond(np.abs(gx - ref), reference.bn_backward_bound(dy, x, s["gamma"], 1e-3)["x"])


def probe_mixed(cls, rng, keras):
    layer = _layer(cls, rng, (None, 16), dtype="mixed_float16")
    layer.moving_mean.assign((200 + rng.normal(0, 1, 16)).astype(np.float32))
    s = _state(layer)
    x = (200 + rng.normal(0, 3, (60, 16))).astype(np.float32)
    xin = x.astype(np.float16).astype(np.float64)
    deviates = False
    for training in (True, False):
        y = np.asarray(layer(x, training=training), np.float64)
        if training:
            ref, mean, var = reference.bn_train(xin, s["gamma"], s["beta"], 1e-3)
            bound = reference.bn_bound(xin, s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=60)
        else:
            ref = reference.bn_inference(xin, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
            bound = reference.bn_bound(xin, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
        deviates |= _beyond(np.abs(y - ref), reference.float16_output_bound(ref, bound))
        s = _state(layer)  # the training call moved the moving statistics
    return deviates


def probe_mixed_update(cls, rng, keras):
    """Under mixed_float16 and mixed_bfloat16 (float32 variables) one training call moves the moving
    statistics as float32 arithmetic does: the EMA of the batch statistics of the 16-bit inputs, within
    reference.ema_bounds. The start values use all of float32's bits, so a 16-bit update cannot match."""
    deviates = False
    for policy in ("mixed_float16", "mixed_bfloat16"):
        layer = _layer(cls, rng, (None, 16), dtype=policy, momentum=0.9)
        assert layer.moving_mean.dtype == layer.moving_variance.dtype == "float32", policy
        layer.moving_mean.assign((1 + rng.random(16) / 3).astype(np.float32))
        s = _state(layer)
        xin = _round16(_x(rng, (60, 16)), policy.removeprefix("mixed_"))
        layer(xin.astype(np.float32), training=True)
        mean, var = reference.batch_stats(xin)
        b_mean, b_var = reference.ema_bounds(xin, s["mean"], s["var"], 0.9)
        after = _state(layer)
        deviates |= _beyond(np.abs(after["mean"] - reference.ema(s["mean"], mean, 0.9)), b_mean) or \
            _beyond(np.abs(after["var"] - reference.ema(s["var"], var, 0.9)), b_var)
    return deviates


RENORM_CLIP = {"rmin": 0.5, "rmax": 2.0, "dmax": 1.0}


def probe_renorm_train(cls, rng, keras):
    """renorm=True in training: y = gamma*((x - mean_B)/sigma_B * r + d) + beta with r = sigma_B/sigma_R and
    d = (mean_B - mean_R)/sigma_R, clipped (sigma_B = sqrt(var_B + eps); sigma_R = max(renorm_stddev,
    sqrt(eps))). The renorm statistics are set far from the batch's, so (r, d) move the output by order one;
    the tolerance (1e-4 relative) is ~100 float32 roundings."""
    layer = _layer(cls, rng, renorm=True, renorm_clipping=RENORM_CLIP, momentum=0.9)
    layer.renorm_mean.assign(rng.normal(0, 1, 8).astype(np.float32))
    layer.renorm_stddev.assign(rng.uniform(1.5, 3.0, 8).astype(np.float32))
    s = _state(layer)
    mu_r, sd_r = np.asarray(layer.renorm_mean.numpy(), np.float64), np.asarray(layer.renorm_stddev.numpy(), np.float64)
    x = _x(rng, (60, 8), 1.0)
    y = np.asarray(layer(x, training=True), np.float64)
    mean, var = reference.batch_stats(x)
    sd_b, sd_r = np.sqrt(var + 1e-3), np.maximum(sd_r, np.sqrt(1e-3))
    r = np.clip(sd_b / sd_r, RENORM_CLIP["rmin"], RENORM_CLIP["rmax"])
    d = np.clip((mean - mu_r) / sd_r, -RENORM_CLIP["dmax"], RENORM_CLIP["dmax"])
    ref = s["gamma"] * ((x - mean) / sd_b * r + d) + s["beta"]
    return not np.all(np.abs(y - ref) <= 1e-4 * (1 + np.abs(ref)))


def probe_float64(cls, rng, keras):
    """A float64 layer computes in float64: training and inference outputs within the float32 bound scaled
    to float64's unit roundoff (2^-53 / 2^-24), and float64 outputs."""
    layer = _layer(cls, rng, dtype="float64")
    s = _state(layer)
    x = rng.normal(0, 1, (60, 8)) * rng.uniform(0.5, 3, 8) + rng.normal(0, 1, 8)
    to64 = 2.0**-29
    out = layer(x, training=True)
    assert np.asarray(out).dtype == np.float64, out.dtype
    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], 1e-3)
    deviates = _beyond(np.abs(np.asarray(out) - ref),
                       to64 * reference.bn_bound(x, s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=60))
    s = _state(layer)
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
    y = np.asarray(layer(x, training=False))
    return deviates or _beyond(np.abs(y - ref), to64 * reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3))


def probe_config(cls, rng, keras):
    layer = _layer(cls, rng, momentum=0.9, epsilon=1e-2)
    clone = cls.from_config(layer.get_config())
    return (clone.momentum, clone.epsilon) != (0.9, 1e-2)


def probe_weights(cls, rng, keras):
    layer = _layer(cls, rng)
    names = sorted(w.path.split("/")[-1] for w in layer.trainable_weights)
    return names != ["beta", "gamma"] or layer.count_params() != 32


def probe_save_load(cls, rng, keras):
    import tempfile

    layer = _layer(cls, rng)
    model = keras.Sequential([keras.Input((8,)), layer])
    with tempfile.TemporaryDirectory() as tmp, _resolving(keras, cls):
        model.save(f"{tmp}/m.keras")
        loaded = keras.models.load_model(f"{tmp}/m.keras").layers[-1]
    assert type(loaded) is cls, "the .keras file did not load back into the same class"
    return not all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), loaded.get_weights()))


@contextlib.contextmanager
def _resolving(keras, cls):
    """`.keras` loading resolves BatchNormalization to `cls` inside the block (mutants.installed)."""
    name = getattr(cls, "bnspec_mutant", None)
    if name is None:
        yield
        return
    with mutants.installed(keras, name) as installed:
        assert installed is cls
        yield


PROBES = {name.removeprefix("probe_"): fn for name, fn in globals().items() if name.startswith("probe_")}


def test_the_probe_list_is_this_files():
    assert set(PROBES) == NAMED_PROBES


@pytest.mark.parametrize("name", [m.name for m in mutants.CATALOGUE])
def test_every_mutant_is_really_wrong(keras, name):
    cls = mutants.mutant_class(keras, name)
    assert cls.bnspec_mutant == name and issubclass(cls, keras.layers.BatchNormalization)
    assert cls.__name__ == "BatchNormalization"  # what bnspec.subjects.model.is_bn and .keras files see
    assert mutants.mutant_class(keras, name) is cls  # made once per Keras module
    assert cls.__mro__[2] is mutants.mutant_class(keras, mutants.CONTROL)  # family class, then the shared Hooked
    rng = np.random.default_rng(5)
    deviates = {p: PROBES[p](cls, rng, keras) for p in mutants.BY_NAME[name].shows}
    assert all(deviates.values()), f"{name} matches the reference on {[p for p, d in deviates.items() if not d]}"


@pytest.mark.parametrize("which", ["keras", "identity"])
def test_real_layer_and_the_harness_control_pass_every_probe(keras, which):
    """The probes have no false alarms: Keras' own layer, and the harness' hooked re-implementation
    with no deviation, agree with the reference on every one."""
    cls = keras.layers.BatchNormalization if which == "keras" else mutants.mutant_class(keras, "identity")
    rng = np.random.default_rng(5)
    deviates = [p for p, fn in PROBES.items() if fn(cls, rng, keras)]
    assert deviates == []


def test_identity_is_bitwise_keras(keras):
    """The hooked call() computes exactly what Keras' call() does: outputs and moving statistics."""
    rng = np.random.default_rng(9)
    identity = mutants.mutant_class(keras, "identity")
    for shape in ((None, 8), (None, 4, 4, 3)):
        a = _layer(keras.layers.BatchNormalization, rng, shape, momentum=0.9)
        b = _layer(identity, rng, shape, momentum=0.9)
        b.set_weights(a.get_weights())
        x = _x(rng, (6,) + shape[1:])
        for training in (True, False, None):
            ya = np.asarray(a(x) if training is None else a(x, training=training))
            yb = np.asarray(b(x) if training is None else b(x, training=training))
            assert np.array_equal(ya, yb), (shape, training)
        assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


def _twins(keras, name, rng, **kwargs):
    """Keras' layer and the mutant, built alike with the same weights."""
    a = _layer(keras.layers.BatchNormalization, rng, **kwargs)
    b = _layer(mutants.mutant_class(keras, name), rng, **kwargs)
    b.set_weights(a.get_weights())
    return a, b


def test_the_new_mutants_deviate_only_where_they_say(keras):
    rng = np.random.default_rng(11)
    same = lambda a, b: all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))  # noqa: E731
    # renorm-correction-ignored: renorm's weights, config and bookkeeping are Keras' own, only the output moves
    a, b = _twins(keras, "renorm-correction-ignored", rng, renorm=True, renorm_clipping=RENORM_CLIP, momentum=0.9)
    assert [w.path for w in a.weights] == [w.path.replace(b.name, a.name) for w in b.weights]
    assert {k: v for k, v in a.get_config().items() if k != "name"} == \
        {k: v for k, v in b.get_config().items() if k != "name"}
    for w in (a.renorm_mean, b.renorm_mean):
        w.assign(np.full(8, 3.0, np.float32))
    x = _x(rng, (60, 8))
    ya, yb = (np.asarray(layer(x, training=True)) for layer in (a, b))
    assert same(a, b), "the renorm bookkeeping differs"
    assert not np.allclose(ya, yb, atol=1e-2)
    assert np.array_equal(np.asarray(a(x, training=False)), np.asarray(b(x, training=False)))
    # mixed-16bit-moving-average: the normalisation is Keras', the stored statistics are 16-bit numbers
    for policy, dtype in (("mixed_float16", np.float16), ("mixed_bfloat16", None)):
        a, b = _twins(keras, "mixed-16bit-moving-average", rng, dtype=policy, momentum=0.9)
        x = _x(rng, (60, 8))
        assert np.array_equal(np.asarray(a(x, training=True)), np.asarray(b(x, training=True)))
        mean = np.asarray(b.moving_mean.numpy())
        assert mean.dtype == np.float32 and np.array_equal(mean, _round16(mean, policy.removeprefix("mixed_")))
        assert not np.array_equal(np.asarray(a.moving_mean.numpy()), mean)
    a, b = _twins(keras, "mixed-16bit-moving-average", rng, momentum=0.9)  # float32: Keras' own update
    x = _x(rng, (60, 8))
    a(x, training=True), b(x, training=True)
    assert same(a, b)
    # float64-computes-in-float32: float64 outputs of float32 precision; float32 layers untouched
    a, b = _twins(keras, "float64-computes-in-float32", rng, dtype="float64")
    x = rng.normal(0, 1, (60, 8))
    ya, yb = np.asarray(a(x, training=True)), np.asarray(b(x, training=True))
    assert ya.dtype == yb.dtype == np.float64
    assert np.array_equal(yb, yb.astype(np.float32).astype(np.float64)) and not np.array_equal(ya, yb)
    a, b = _twins(keras, "float64-computes-in-float32", rng)
    x = _x(rng, (60, 8))
    assert np.array_equal(np.asarray(a(x, training=True)), np.asarray(b(x, training=True))) and same(a, b)


# --------------------------------------------------------------------------- installing (a child process)

INSTALL = """
import os, sys, tempfile
import numpy as np
from bnspec.run import Run
from bnspec import flavours
from bnspec.subjects import keras_for
from tests.claims import _kit as probes
from bnspec.subjects.model import ModelSpec, bn_layers, build
run = Run.from_env(mutant="gamma-ignored")
keras = keras_for(run)
import keras.src.layers as src_layers
from keras.src.layers.normalization import batch_normalization as bn_module
cls = keras.layers.BatchNormalization
assert cls.bnspec_mutant == "gamma-ignored" and keras_for(run).layers.BatchNormalization is cls
assert flavours.keras_module(run).layers.BatchNormalization is cls
assert src_layers.BatchNormalization is cls and bn_module.BatchNormalization is cls
rng = np.random.default_rng(0)
layer = probes.make_bn(keras, 4, rng)
assert type(layer) is cls
model = build(ModelSpec(), keras)
assert all(type(b) is cls for b in bn_layers(model)), "the notebook model holds the mutant"
probes.randomise_model_bn(model, rng)
path = os.path.join(tempfile.mkdtemp(), "m.keras")
model.save(path)
loaded = keras.models.load_model(path)
assert all(type(b) is cls for b in bn_layers(loaded)), [type(b) for b in bn_layers(loaded)]
x = rng.normal(0, 1, (5, 784)).astype(np.float32)
assert np.allclose(np.asarray(model(x)), np.asarray(loaded(x)), atol=1e-5)
seq = keras.Sequential([keras.Input((4,)), layer])
y = np.asarray(layer(np.ones((3, 4), "float32"), training=False))
s = probes.bn_state(layer)
with_gamma = s["gamma"] * (1 - s["mean"]) / np.sqrt(s["var"] + s["eps"]) + s["beta"]
assert not np.allclose(y[0], with_gamma, atol=1e-4), "gamma was applied"
print("ok", cls.__module__)
"""


def test_install_swaps_the_class_everywhere_including_keras_files(keras):
    env = dict(os.environ)
    env.pop("BNSPEC_MUTANT", None)
    proc = run_python(INSTALL, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")


def test_unknown_mutant_in_the_run_is_one_clear_error(keras, run):
    from bnspec.run import Run
    from bnspec.subjects import keras_for

    real = keras.layers.BatchNormalization
    with pytest.raises(BnspecError, match="^unknown mutant 'wrongbn'; known:"):
        keras_for(Run(run.flavour, run.backend, mutant="wrongbn"))
    assert keras.layers.BatchNormalization is real


def test_installed_swaps_and_restores_in_process(keras):
    real = keras.layers.BatchNormalization
    with mutants.installed(keras, "beta-ignored") as cls:
        assert keras.layers.BatchNormalization is cls and cls.bnspec_mutant == "beta-ignored"
        with pytest.raises(BnspecError, match="already installed"):
            mutants.install(keras, "gamma-ignored")
    assert keras.layers.BatchNormalization is real
    from keras.src import api_export

    assert api_export.get_symbol_from_name("keras.layers.BatchNormalization") is real
