"""Population statistics recomputed with frozen weights (Algorithm 2 of the paper; "PreciseBN" in
Wu & Johnson 2021), for any model whose BN layers read `momentum` at call time: Keras'
BatchNormalization (both flavours) and bnspec.subjects.layers.ExplicitBatchNorm.

Each batch is run through the model in training mode, so every BN layer sees the inputs the
training network N_tr gives it (Algorithm 2, step 9), with the layer's momentum set to i/(i+1) for
the i-th batch: the moving statistics become the plain average of the batch statistics (equal
weight per batch). With `unbiased=True` the variance is then multiplied by m/(m-1) (step 10).
Kernels, gamma and beta are not touched (no optimizer runs).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bnspec.measure.backend import to_numpy
from bnspec.subjects.model import bn_layers


def recompute(model, batches, unbiased: bool = True, progress: bool = False,
              elements_per_feature: int | None = None) -> dict:
    """Overwrite the moving statistics of `model`'s BN layers with population statistics over
    `batches` (an iterable of equally sized input arrays). Returns {"batches", "batch_size", "seconds"}.

    The unbiased factor m/(m-1) needs m, the number of values each batch statistic is taken over:
    the batch size for dense inputs (the default), batch x H x W for convolutional ones — pass it as
    `elements_per_feature` there."""
    layers = bn_layers(model)
    if not layers:
        raise ValueError("the model has no BatchNormalization layer")
    saved = [(layer.momentum, getattr(layer, "update_moving", None)) for layer in layers]
    started, n, m = time.time(), 0, None
    try:
        for i, x in enumerate(batches):
            if m is None:
                m = len(x)
            elif len(x) != m:
                raise ValueError(f"batch {i} has {len(x)} examples, the first had {m}: Algorithm 2 weighs batches equally")
            for layer in layers:
                layer.momentum = i / (i + 1.0)
                if hasattr(layer, "update_moving"):  # ExplicitBatchNorm(population="algorithm2")
                    layer.update_moving = True
            model(x, training=True)
            n = i + 1
            if progress and n % 200 == 0:
                print(f"bnspec: population statistics: {n} batches", file=sys.__stderr__, flush=True)
    finally:
        for layer, (momentum, update) in zip(layers, saved):
            layer.momentum = momentum
            if update is not None:
                layer.update_moving = update
    if n == 0:
        raise ValueError("no batches given")
    if unbiased:
        m = elements_per_feature or m
        if m < 2:
            raise ValueError("the unbiased variance needs batches of at least 2")
        for layer in layers:
            layer.moving_variance.assign((to_numpy(layer.moving_variance, np.float64) * (m / (m - 1.0))).astype(np.float32))
    return {"batches": n, "batch_size": m, "seconds": round(time.time() - started, 2)}
