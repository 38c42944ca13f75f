"""The audit's gallery: small models with exactly one BN trap each, and clean models.

Every builder takes (keras, rng) and returns a Case: the model (or a saved file), the data to audit
it with (None: random inputs), and the exact set of (claim id, layer path) the audit must report.
Models are "trained" just enough for their BN statistics to have left their initial values (a few
training-mode calls), so that the untrained-model note (M02) does not appear where it is not the trap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    model: object  # a Keras model, or a path to a saved file
    expected: set  # {(claim id, layer path)}, every finding of any severity
    data: object = None
    severity: dict = field(default_factory=dict)  # (id, path) -> expected severity
    dynamic: bool = True


def settle(model, x, steps: int = 3):
    """Training-mode forward passes: the moving statistics move off their initial values."""
    for _ in range(steps):
        model(x, training=True)
    return model


def _x(rng, n=16, d=8, mean=0.0):
    return (rng.standard_normal((n, d)) + mean).astype("float32")


def _img(rng, n=8, size=8):
    return rng.standard_normal((n, size, size, 3)).astype("float32")


def _head(keras, h, units=3):
    return keras.layers.Dense(units, name="head")(keras.layers.Activation("relu", name="relu")(h))


# --------------------------------------------------------------------------- traps


def hardcoded_training_true(keras, rng):
    """The study notebook's trap: bn(x, training=True) while building the model."""
    inp = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, use_bias=False, name="dense")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h, training=True)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _x(rng)), {("N05", "m/bn")}, severity={("N05", "m/bn"): "error"})


def hardcoded_training_true_then_bn(keras, rng):
    """bn(x, training=True) followed by a normal BN: on Keras 3.0-3.15 model(x) carries the flag on to
    the second BN too; the audit attaches that measurement to the one N05 finding."""
    inp = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, use_bias=False, name="dense")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h, training=True)
    h = keras.layers.Dense(8, use_bias=False, name="dense_2")(keras.layers.Activation("tanh", name="tanh")(h))
    h = keras.layers.BatchNormalization(name="bn_2")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _x(rng)), {("N05", "m/bn")})


def hardcoded_training_false(keras, rng):
    inp = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, use_bias=False, name="dense")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h, training=False)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _x(rng)), {("C01", "m/bn")})


def _subclassed(keras, kind: str):
    """A subclassed Dense -> BN -> Dense model whose call() passes training to BN as `kind` says."""

    class Base(keras.Model):
        def __init__(self):
            super().__init__(name="m")
            self.dense = keras.layers.Dense(8, use_bias=False, name="dense")
            self.bn = keras.layers.BatchNormalization(name="bn")
            self.head = keras.layers.Dense(3, name="head")
            self.kw = {"training": True}

    class Forwarding(Base):  # clean
        def call(self, x, training=None):
            return self.head(self.bn(self.dense(x), training=training))

    class HardCoded(Base):  # the notebook's trap, visible in the source
        def call(self, x, training=None):
            return self.head(self.bn(self.dense(x), training=True))

    class Hidden(Base):  # training=True through **kwargs: invisible to a source reader
        def call(self, x, training=None):
            return self.head(self.bn(self.dense(x), **self.kw))

    return {"clean": Forwarding, "hardcoded": HardCoded, "hidden": Hidden}[kind]()


def hardcoded_training_true_subclassed(keras, rng):
    """The notebook's trap in a subclassed model: found by reading call() (ast)."""
    m = _subclassed(keras, "hardcoded")
    return Case(settle(m, _x(rng)), {("N05", "m/bn")})


def hidden_training_subclassed(keras, rng):
    """training=True passed through **kwargs: only the forward passes show it (M01)."""
    m = _subclassed(keras, "hidden")
    return Case(settle(m, _x(rng)), {("M01", "m/bn")}, severity={("M01", "m/bn"): "error"})


def custom_block_hardcoded(keras, rng):
    """A custom layer (Dense + BN) used in a Functional model, hard-coding training=True inside its
    call(): the config does not show the block's layers, the live object and its source do."""

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(8, use_bias=False, name="dense")
            self.bn = keras.layers.BatchNormalization(name="bn")

        def call(self, x):
            return self.bn(self.dense(x), training=True)

    inp = keras.Input((8,), name="x")
    m = keras.Model(inp, _head(keras, Block(name="block")(inp)), name="m")
    return Case(settle(m, _x(rng)), {("N05", "m/block/bn")})


def nested_training_false(keras, rng):
    """The transfer-learning guide's base_model(x, training=False), with the base trainable."""
    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, use_bias=False, name="dense"),
                             keras.layers.BatchNormalization(name="bn")], name="base")
    inp = keras.Input((8,), name="x")
    m = keras.Model(inp, _head(keras, base(inp, training=False)), name="m")
    return Case(settle(m, _x(rng)), {("C01", "m/base")})


def resizing_upstream(keras, rng):
    """A Resizing layer (call defaults training=True) before BN."""
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Resizing(8, 8, name="resizing")(inp)
    h = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _img(rng)), {("C02", "m/resizing")})


def augmentation_model_upstream(keras, rng):
    """RandomFlip inside a nested augmentation model, BN downstream in the outer model."""
    augment = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.RandomFlip(seed=1, name="flip")],
                               name="augment")
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(augment(inp))
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _img(rng)), {("C02", "m/augment/flip")})


def random_layer_after_bn(keras, rng):
    """RandomFlip after the BN (no BN downstream): model(x) still flips at inference (C02's default),
    which the forward passes see as its seed state moving."""
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.RandomFlip(seed=1, name="flip")(h)
    h = keras.layers.Flatten(name="flat")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _img(rng)), {("C02", "m/flip")}, severity={("C02", "m/flip"): "warning"})


def shared_bn(keras, rng):
    shared = keras.layers.BatchNormalization(name="shared_bn")
    inp = keras.Input((8,), name="x")
    a = shared(keras.layers.Dense(8, use_bias=False, name="dense_a")(inp))
    b = shared(keras.layers.Dense(8, use_bias=False, name="dense_b")(inp))
    h = keras.layers.Concatenate(name="concat")([a, b])
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _x(rng)), {("N08", "m/shared_bn")})


def frozen_bn(keras, rng):
    """One BN frozen (pretrained statistics) inside a trainable model."""
    inp = keras.Input((8,), name="x")
    bn = keras.layers.BatchNormalization(name="bn")
    h = bn(keras.layers.Dense(8, use_bias=False, name="dense")(inp))
    m = keras.Model(inp, _head(keras, h), name="m")
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 0.1, 8), rng.normal(0, 1, 8), rng.uniform(0.5, 2, 8)])
    bn.trainable = False
    return Case(m, {("K04", "m/bn")}, severity={("K04", "m/bn"): "info"})


def bfloat16_statistics(keras, rng):
    inp = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, use_bias=False, name="dense")(inp)
    h = keras.layers.BatchNormalization(name="bn", dtype="bfloat16")(h)
    h = keras.layers.Activation("linear", dtype="float32", name="to_float32")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _x(rng, mean=3.0)), {("C06", "m/bn")})


def torch_momentum(keras, rng):
    inp = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, use_bias=False, name="dense")(inp)
    h = keras.layers.BatchNormalization(momentum=0.1, name="bn")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _x(rng)), {("X01", "m/bn")})


def small_epsilon(keras, rng):
    """PyTorch's eps=1e-5 on a conv input: exact on Keras 3, clamped by tf_keras' fused kernel."""
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inp)
    h = keras.layers.BatchNormalization(epsilon=1e-5, name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _img(rng)), {("C09", "m/bn")})


def dense_bias_before_bn(keras, rng):
    inp = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, name="dense")(inp)  # use_bias=True (the default)
    h = keras.layers.BatchNormalization(name="bn")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _x(rng)), {("C18", "m/dense")}, severity={("C18", "m/dense"): "info"})


def statistics_never_updated(keras, rng):
    """gamma/beta moved by training while the moving statistics stayed at 0/1: BN never ran in
    training mode (e.g. a custom loop calling model(x) without training=True)."""
    inp = keras.Input((8,), name="x")
    bn = keras.layers.BatchNormalization(name="bn")
    h = bn(keras.layers.Dense(8, use_bias=False, name="dense")(inp))
    m = keras.Model(inp, _head(keras, h), name="m")
    bn.gamma.assign(rng.uniform(0.8, 1.2, 8).astype("float32"))
    bn.beta.assign(rng.normal(0, 0.1, 8).astype("float32"))
    return Case(m, {("M02", "m/bn")}, severity={("M02", "m/bn"): "warning"})


def constant_feature(keras, rng):
    """Feature 0 constant in training: moving variance -> 0; at inference it varies (C16)."""
    inp = keras.Input((4,), name="x")
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(inp)
    m = keras.Model(inp, _head(keras, h), name="m")
    for _ in range(80):  # 0.9**80 = 2e-4 < eps = 1e-3
        x = rng.standard_normal((64, 4)).astype("float32")
        x[:, 0] = 2.0
        m(x, training=True)
    data = rng.standard_normal((64, 4)).astype("float32")
    return Case(m, {("C16", "m/bn")}, data=data, severity={("C16", "m/bn"): "warning"})


def stale_statistics(keras, rng):
    """Trained on standardised inputs, fed raw ones (mean 5): moving statistics far from the data (L03)."""
    inp = keras.Input((4,), name="x")
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(inp)
    m = keras.Model(inp, _head(keras, h), name="m")
    for _ in range(60):
        m(rng.standard_normal((64, 4)).astype("float32"), training=True)
    data = (rng.standard_normal((64, 4)) * 3 + 5).astype("float32")
    return Case(m, {("L03", "m/bn")}, data=data)


def time_distributed_bn(keras, rng, steps: int = 5, features: int = 4):
    """TimeDistributed(BatchNormalization()) on a sequence whose time steps differ (step t has mean t):
    Keras 3 calls the BN per time step, so training normalises each step with its own batch statistics and
    inference all steps with one shared pair of moving statistics (C29), not stale statistics (L03)."""
    inp = keras.Input((steps, features), name="x")
    h = keras.layers.TimeDistributed(keras.layers.BatchNormalization(momentum=0.9, name="bn"), name="td")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    m = keras.Model(inp, keras.layers.Dense(3, name="head")(h), name="m")

    def batch(n):
        return (rng.standard_normal((n, steps, features)) + np.arange(steps)[None, :, None]).astype("float32")

    for _ in range(60):
        m(batch(32), training=True)
    return Case(m, {("C29", "m/td")}, data=batch(64), severity={("C29", "m/td"): "warning"})


def nan_statistics(keras, rng):
    """A NaN batch in training poisoned the moving variance of one feature."""
    inp = keras.Input((8,), name="x")
    bn = keras.layers.BatchNormalization(name="bn")
    h = bn(keras.layers.Dense(8, use_bias=False, name="dense")(inp))
    m = keras.Model(inp, _head(keras, h), name="m")
    settle(m, _x(rng))
    var = bn.moving_variance.numpy()
    var[0] = np.nan
    bn.moving_variance.assign(var)
    return Case(m, {("C10", "m/bn")}, severity={("C10", "m/bn"): "error"})


def keras2_arguments_h5(keras, rng, tmp_path):
    """A tf_keras .h5 whose BN uses virtual_batch_size and a two-element axis (config written as
    tf_keras writes it; read statically, no tf_keras needed)."""
    import h5py

    def layer(cls, name, cfg, inbound):
        return {"class_name": cls, "name": name, "config": dict(cfg, name=name, trainable=True, dtype="float32"),
                "inbound_nodes": [[[src, 0, 0, {}] for src in inbound]] if inbound else []}

    config = {"class_name": "Functional", "config": {
        "name": "m", "trainable": True,
        "layers": [
            {"class_name": "InputLayer", "name": "x", "config": {"batch_input_shape": [None, 6, 6, 3],
                                                                  "dtype": "float32", "name": "x"},
             "inbound_nodes": []},
            layer("Conv2D", "conv", {"filters": 4, "kernel_size": [3, 3], "use_bias": False,
                                     "activation": "linear", "data_format": "channels_last"}, ["x"]),
            layer("BatchNormalization", "bn", {"axis": [1, 2], "momentum": 0.99, "epsilon": 0.001, "center": True,
                                               "scale": True, "virtual_batch_size": 2}, ["conv"]),
        ],
        "input_layers": [["x", 0, 0]], "output_layers": [["bn", 0, 0]]}}
    path = tmp_path / "keras2_args.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.21.0"
        f.attrs["backend"] = "tensorflow"
    return Case(path, {("C12", "m/bn")}, dynamic=False)


TRAPS = {f.__name__: f for f in (
    hardcoded_training_true, hardcoded_training_true_then_bn, hardcoded_training_false,
    hardcoded_training_true_subclassed, hidden_training_subclassed, custom_block_hardcoded, nested_training_false,
    resizing_upstream, augmentation_model_upstream, random_layer_after_bn, shared_bn, frozen_bn, bfloat16_statistics, torch_momentum,
    small_epsilon, dense_bias_before_bn, statistics_never_updated, constant_feature, stale_statistics,
    time_distributed_bn, nan_statistics)}
FILE_TRAPS = {"keras2_arguments_h5": keras2_arguments_h5}


# --------------------------------------------------------------------------- clean models


def clean_functional(keras, rng):
    inp = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, use_bias=False, name="dense")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    return Case(settle(m, _x(rng)), set())


def clean_subclassed(keras, rng):
    m = _subclassed(keras, "clean")
    return Case(settle(m, _x(rng)), set())


def clean_cnn_with_data(keras, rng):
    """Statistics converged on the data's distribution, audited on fresh data of it."""
    inp = keras.Input((8, 8, 3), name="x")
    h = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inp)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    m = keras.Model(inp, _head(keras, h), name="m")
    for _ in range(60):
        m(_img(rng, n=16), training=True)
    return Case(m, set(), data=_img(rng, n=32))


def clean_transfer_recipe(keras, rng):
    """The transfer-learning recipe done right: the base frozen, called with training=False."""
    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, use_bias=False, name="dense"),
                             keras.layers.BatchNormalization(name="bn")], name="base")
    settle(base, _x(rng))
    base.trainable = False
    inp = keras.Input((8,), name="x")
    m = keras.Model(inp, _head(keras, base(inp, training=False)), name="m")
    return Case(m, set())


CLEAN = {f.__name__: f for f in (clean_functional, clean_subclassed, clean_cnn_with_data, clean_transfer_recipe)}
