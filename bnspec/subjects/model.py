"""The study notebook's MNIST network (cells 47-63), as one builder driven by a frozen spec.

    Input(784) -> 3 x [Dense(100, no activation, Orthogonal(gain=1, seed=100))
                       -> BatchNormalization(momentum=0.99, epsilon=1e-3) -> tanh]
               -> Dense(10) logits
    Adam(1e-3), categorical cross-entropy from logits, accuracy.

`hardcoded_training=True` reproduces the notebook's mistake (cells 55-56): the 2nd and 3rd BN layers
are called as `bn(x, training=True)`, so the flag is baked into the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# The notebook hard-coded training=True on its 2nd and 3rd BN layers (0-based 1 and 2), not the 1st.
NOTEBOOK_HARDCODED_LAYERS = (1, 2)
KINDS = ("functional", "sequential", "subclassed")
BN_IMPLEMENTATIONS = ("keras", "explicit")  # keras.layers.BatchNormalization | bnspec.subjects.layers.ExplicitBatchNorm


@dataclass(frozen=True)
class ModelSpec:
    activation: str = "tanh"  # tanh | sigmoid
    batchnorm: bool = True
    bn_kwargs: tuple[tuple[str, object], ...] = (("momentum", 0.99), ("epsilon", 1e-3))
    hardcoded_training: bool = False
    kind: str = "functional"  # functional | sequential | subclassed
    hidden: tuple[int, ...] = (100, 100, 100)
    seed: int = 100
    bn: str = "keras"  # keras | explicit (bnspec.subjects.layers.ExplicitBatchNorm, coded from the paper)

    def __post_init__(self):
        if self.activation not in ("tanh", "sigmoid"):
            raise ValueError(f"activation must be tanh or sigmoid, not {self.activation!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if self.hardcoded_training and not self.batchnorm:
            raise ValueError("hardcoded_training needs batchnorm=True")
        if self.bn not in BN_IMPLEMENTATIONS:
            raise ValueError(f"bn must be one of {BN_IMPLEMENTATIONS}, not {self.bn!r}")
        if self.hardcoded_training and self.kind == "sequential":
            raise ValueError("a Sequential model cannot pass training=True to one layer; use functional or subclassed")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["bn_kwargs"] = dict(self.bn_kwargs)
        return d

    def hardcoded(self, index: int) -> bool:
        return self.hardcoded_training and index in NOTEBOOK_HARDCODED_LAYERS


def _blocks(spec: ModelSpec, keras):
    """Per hidden layer: (Dense, BN or None, Activation), freshly constructed."""
    blocks = []
    for i, units in enumerate(spec.hidden):
        dense = keras.layers.Dense(
            units,
            activation=None,
            kernel_initializer=keras.initializers.Orthogonal(gain=1.0, seed=spec.seed),
            name=f"dense_{i}",
        )
        bn = _bn_class(spec, keras)(name=f"bn_{i}", **dict(spec.bn_kwargs)) if spec.batchnorm else None
        act = keras.layers.Activation(spec.activation, name=f"{spec.activation}_{i}")
        blocks.append((dense, bn, act))
    head = keras.layers.Dense(
        10, activation=None, kernel_initializer=keras.initializers.Orthogonal(gain=1.0, seed=spec.seed), name="logits"
    )
    return blocks, head


def _bn_class(spec: ModelSpec, keras):
    if spec.bn == "explicit":
        from bnspec.subjects import layers

        return layers.for_keras(keras).ExplicitBatchNorm
    return keras.layers.BatchNormalization


def is_bn(layer) -> bool:
    """Keras' BatchNormalization (either flavour) or bnspec's ExplicitBatchNorm."""
    return "BatchNorm" in type(layer).__name__


def _apply(spec: ModelSpec, blocks, head, x, training=None):
    for i, (dense, bn, act) in enumerate(blocks):
        x = dense(x)
        if bn is not None:
            if spec.hardcoded(i):
                x = bn(x, training=True)  # baked in: the notebook's mistake
            elif training is None:
                x = bn(x)  # let Keras decide the mode
            else:
                x = bn(x, training=training)
        x = act(x)
    return head(x)


def build(spec: ModelSpec, keras):
    """An uncompiled model for `spec` on this Keras module, built for inputs of shape (None, 784)."""
    blocks, head = _blocks(spec, keras)
    if spec.kind == "functional":
        inputs = keras.Input(shape=(784,), name="pixels")
        return keras.Model(inputs, _apply(spec, blocks, head, inputs), name="bn_mlp")
    if spec.kind == "sequential":
        layers = [layer for block in blocks for layer in block if layer is not None] + [head]
        return keras.Sequential([keras.Input(shape=(784,), name="pixels")] + layers, name="bn_mlp_sequential")

    class BNMLP(keras.Model):
        def __init__(self):
            super().__init__(name="bn_mlp_subclassed")
            self.blocks, self.head = _blocks(spec, keras)

        def call(self, x, training=None):
            return _apply(spec, self.blocks, self.head, x, training=training)

    model = BNMLP()
    model(keras.ops.zeros((2, 784)) if hasattr(keras, "ops") else np.zeros((2, 784), "float32"))  # creates the weights
    return model


def compile_model(model, keras, learning_rate: float = 1e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def bn_layers(model) -> list:
    """The model's BatchNormalization layers, in order."""
    return [layer for layer in _all_layers(model) if is_bn(layer)]


def dense_layers(model) -> list:
    return [layer for layer in _all_layers(model) if type(layer).__name__ == "Dense"]


def _all_layers(model):
    if hasattr(model, "blocks"):  # subclassed
        out = []
        for dense, bn, act in model.blocks:
            out += [dense] + ([bn] if bn is not None else []) + [act]
        return out + [model.head]
    return list(model.layers)
