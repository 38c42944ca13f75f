"""Reading BN variables: references versus snapshots."""

import numpy as np
import pytest

from bnspec import probes


@pytest.mark.claim("N01")
def test_list_copy_aliases_numpy_snapshots(verdict, keras, rng):
    layer = probes.make_bn(keras, 100, rng)
    copied = layer.weights.copy()  # a new list, the same variable objects
    snapshot = [w.numpy() for w in layer.weights]
    layer((rng.normal(0, 1, (60, 100)) + 3).astype(np.float32), training=True)  # moves the moving statistics

    aliased = all(a is b for a, b in zip(copied, layer.weights))
    copy_followed = float(np.abs(copied[2].numpy() - layer.moving_mean.numpy()).max())
    snapshot_kept = float(np.abs(snapshot[2] - layer.moving_mean.numpy()).max())
    verdict.record(same_objects=aliased, copy_vs_variable=copy_followed, snapshot_vs_variable=snapshot_kept)
    verdict.conclude(aliased and copy_followed == 0.0 and snapshot_kept > 0,
                     f"list.copy() holds the same variables ({aliased}); the .numpy() snapshot differs from "
                     f"the updated moving mean by {snapshot_kept:.2e}")


@pytest.mark.claim("N08")
def test_one_bn_layer_object_in_two_places(verdict, keras, rng):
    shared = keras.layers.BatchNormalization(name="shared_bn")
    inputs = keras.Input(shape=(784,))
    h = keras.layers.Activation("tanh")(shared(keras.layers.Dense(100)(inputs)))
    error = ""
    try:
        h = keras.layers.Activation("tanh")(shared(keras.layers.Dense(100)(h)))  # the same object again
        model = keras.Model(inputs, keras.layers.Dense(10)(h))
        x = rng.normal(0, 1, (60, 784)).astype(np.float32)
        model(x, training=True)
        bn_vars = [w for w in model.weights if "shared_bn" in (getattr(w, "path", None) or w.name)]
        n_vars = len(bn_vars)
    except Exception as exc:  # the claim would hold: the second use is rejected
        error, n_vars = f"{type(exc).__name__}: {exc}"[:200], 0
    try:  # a different feature size cannot share gamma/beta
        shared(keras.layers.Dense(50)(inputs))
        other_width = "accepted"
    except Exception as exc:
        other_width = type(exc).__name__
    verdict.record(second_use_error=error, shared_bn_variables=n_vars, different_width=other_width)
    verdict.conclude(bool(error), f"a second call of the same BN object {'failed: ' + error if error else 'worked'}; "
                                  f"the model holds {n_vars} variables for it (shared); on 50 features: {other_width}")
