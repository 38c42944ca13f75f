"""Models the `--export` tests share (tests/audit/test_export*.py)."""

from __future__ import annotations

import numpy as np


def resnet50(keras, rng, size: int = 32, n: int = 4):
    """ResNet50 (weights=None) with the BN state of a trained network: gamma and beta random, the moving
    statistics those of a batch (momentum 0 for one training-mode pass), so that every BN layer has a scale and
    a shift of its own (a fold that drops or misplaces one shows) and the activations stay normalised.
    Returns (model, x)."""
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    x = rng.standard_normal((n, size, size, 3)).astype(np.float32)
    bns = [layer for layer in model.layers if "BatchNorm" in type(layer).__name__]
    for layer in bns:
        c = layer.gamma.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        layer.beta.assign(rng.normal(0.0, 0.2, c).astype(np.float32))
        layer.momentum = 0.0
    model(x, training=True)
    for layer in bns:
        layer.momentum = 0.99
    return model, x


def with_epsilon(keras, model, layer: str, epsilon: float, x):
    """A copy of `model` (same weights) whose BN layer `layer` uses another epsilon: the deliberately wrong
    export of the power checks. Called once (Keras' ONNX export needs a called model)."""
    wrong = keras.models.clone_model(model)
    wrong.set_weights(model.get_weights())
    wrong.get_layer(layer).epsilon = epsilon
    wrong(x, training=False)
    return wrong
