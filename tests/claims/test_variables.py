"""Reading BN variables: references versus snapshots, and one layer object called in two places.

Value comparisons are bitwise and finite (verdict.equal): a NaN is an error, never evidence.
Backend-neutral (Keras 3 on TensorFlow, JAX and PyTorch; tf_keras): values are read through
bnspec.measure.backend.to_numpy, except the `.numpy()` snapshot N01 is about."""

import re

import numpy as np
import pytest

from tests.claims import _kit as probes
from bnspec.measure.backend import to_numpy
from bnspec.measure.verdict import finite


@pytest.mark.claim("N01")
def test_list_copy_aliases_numpy_snapshots(verdict, keras, rng):
    """After a training call: a list.copy() of the weights follows the moving mean, a .numpy() snapshot does not."""
    layer = probes.make_bn(keras, 100, rng)
    copied = layer.weights.copy()  # a new list, the same variable objects
    snapshot = [w.numpy() for w in layer.weights]  # the claim's own spelling
    i = next(j for j, w in enumerate(layer.weights) if w is layer.moving_mean)
    old = to_numpy(layer.moving_mean, np.float64)  # an independent reference copy
    layer((rng.normal(0, 1, (60, 100)) + 3).astype(np.float32), training=True)  # moves the moving statistics
    new = to_numpy(layer.moving_mean, np.float64)

    # the test's power: the training call did move the moving mean (bound 0: any bitwise change)
    verdict.power("moving_mean_moved", new - old, 0.0, measured=True)
    aliased = all(a is b for a, b in zip(copied, layer.weights, strict=True))
    copy_follows = verdict.equal("list_copy_vs_variable", to_numpy(copied[i]), new)
    snapshot_kept = verdict.equal("numpy_snapshot_vs_old_value", snapshot[i], old)
    verdict.record(same_objects=aliased)
    verdict.conclude(aliased and copy_follows and snapshot_kept,
                     f"list.copy() holds the same variables ({aliased}) and follows the update ({copy_follows}); "
                     f"the .numpy() snapshot keeps the old value ({snapshot_kept}) while the moving mean moved by "
                     f"{probes.value_text(verdict, 'moving_mean_moved')}")


# a rejection of a layer object's second use: it names the layer and says it is used again (not an input
# incompatibility, which names the layer too)
REUSE_REFUSAL = ("shared_bn", re.compile(r"already|more than once|reus|only once|second (call|use)", re.IGNORECASE))


@pytest.mark.claim("N08")
def test_one_bn_layer_object_in_two_places(verdict, keras, rng):
    """Whether a second call of the same BN object in one model is rejected, or shares its four variables there."""
    shared = keras.layers.BatchNormalization(name="shared_bn")
    inputs = keras.Input(shape=(784,))
    h = keras.layers.Activation("tanh")(shared(keras.layers.Dense(100)(inputs)))
    second_input = keras.layers.Dense(100)(h)
    # The only outcome that would make the claim hold is Keras rejecting the second call of the same
    # object, with a ValueError (as it rejects the 50-feature call below) whose message names the layer and
    # its reuse (REUSE_REFUSAL). Any other exception, a ValueError about something else included (an
    # incompatible input, as the control below), is a broken test, not a verdict: it propagates.
    try:
        second = shared(second_input)  # the same object again
        rejection = ""
    except ValueError as exc:
        if not verdict.refusal("second_use_error", exc, ValueError, REUSE_REFUSAL):
            raise
        second, rejection = None, f"{type(exc).__name__}: {exc}"[:200]
    n_vars, same_objects, out_finite = 0, False, False
    if second is not None:
        model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Activation("tanh")(second)))
        x = rng.normal(0, 1, (60, 784)).astype(np.float32)
        finite("outputs of the model with the shared layer", to_numpy(model(x, training=True)))  # a NaN is an error
        out_finite = True
        bn_vars = [w for w in model.weights if "shared_bn" in probes.variable_name(w)]
        n_vars = len(bn_vars)
        same_objects = {id(w) for w in bn_vars} == {id(w) for w in shared.weights}
    try:  # a control: a different feature size cannot share gamma/beta, and is rejected with a ValueError
        shared(keras.layers.Dense(50)(inputs))
        other_width = "accepted"
    except ValueError as exc:
        other_width = f"{type(exc).__name__}: {exc}"[:120]
    verdict.record(second_use_rejected=rejection, shared_bn_variables=n_vars,
                   variables_are_the_layers_own=same_objects, different_width=other_width)
    verdict.mechanism("shared_variables", second is not None and out_finite and n_vars == 4 and same_objects,
                      f"second call {'rejected: ' + rejection if rejection else 'worked'}; the model holds {n_vars} "
                      f"variable(s) for the shared layer ({'its own 4' if same_objects else 'not exactly its own'}); "
                      f"outputs {'finite' if out_finite else 'not computed'}")
    verdict.conclude(bool(rejection),
                     f"a second call of the same BN object {'was rejected: ' + rejection if rejection else 'worked'}; "
                     f"the model holds {n_vars} variables for it (shared); on 50 features: {other_width}")
