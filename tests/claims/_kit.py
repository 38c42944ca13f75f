"""What the claim tests share (tests/claims/test_<topic>.py): BN layers with non-trivial state, weight
snapshots, the numbers a model's BN layers hold, the Keras entry points, and the small readers every
module needs: float64 copies of tensors (`f64`, `flat`), a variable's name (`variable_name`), the
flavour's ops (`ops`), seeded inputs
(`feature_inputs`), one EMA step's reference (`ema_step`), evidence spelled for a summary line
(`ratio`, `ratio_text`, `value_text`, `bound_text`, `within_text`: bnspec.measure.verdict.Verdict.ratio and
.quote), and the skip of a synchronized=True case only where Keras refuses it (`skip_if_synchronized_refused`).
Backend-neutral: every value is read through bnspec.measure.backend.to_numpy (Keras 3 on TensorFlow, JAX or
PyTorch, and tf_keras).

Change detection is NaN-safe: `changes` and `grouped_changes` raise bnspec.measure.verdict.NonFiniteMeasurement
when a snapshot holds a NaN or infinite value (a NaN written into a variable is never read as "no
change", nor as a change: it is an error of the test). To decide "unchanged" for a verdict use
`unchanged(verdict, before, after)`, which compares bitwise through `verdict.equal` and records the
evidence per group of variables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bnspec import reference
from bnspec.subjects import model as bn_model
from bnspec.measure.backend import to_numpy
from bnspec.measure.verdict import finite, not_applicable

GROUPS = ("kernels", "gamma_beta", "moving")  # the kinds of variable a model's snapshot is grouped into


# --------------------------------------------------------------------------- values, ops and inputs


def f64(value, keras=None) -> np.ndarray:
    """A float64 numpy copy of a tensor, a variable, an array or a (nested) list, through
    bnspec.measure.backend.to_numpy. Given `keras` and that Keras is Keras 3, the value is first cast to
    float32 by keras.ops, so that 16-bit values are read too (torch cannot hand a bfloat16 tensor to numpy;
    the cast is exact for every 16-bit value); tf_keras values are read as they are."""
    if keras is not None and hasattr(keras, "ops"):
        value = keras.ops.cast(value, "float32")
    return to_numpy(value, np.float64)


def flat(arrays) -> np.ndarray:
    """Arrays (numpy, or anything np.asarray reads) raveled and concatenated into one float64 vector."""
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays])


def ops(keras):
    """keras.ops (Keras 3, any backend), or on tf_keras (Keras 2 has no keras.ops) the TensorFlow functions
    the claim tests use under the same names: convert_to_tensor, matmul and sum (tf.reduce_sum)."""
    if hasattr(keras, "ops"):
        return keras.ops
    import tensorflow as tf

    return SimpleNamespace(convert_to_tensor=tf.convert_to_tensor, matmul=tf.matmul, sum=tf.reduce_sum)


def feature_inputs(rng: np.random.Generator, shape, axis: int) -> np.ndarray:
    """float32 inputs of `shape` whose features (along `axis`) have their own scale in [0.5, 3] and offset
    (normal, sd 2): batch statistics and a layer's initial moving statistics differ by O(1)."""
    b = [1] * len(shape)
    b[axis] = shape[axis]
    return (rng.normal(0, 1, shape) * rng.uniform(0.5, 3, b) + rng.normal(0, 2, b)).astype(np.float32)


def ema_step(x, old_mean, old_var, momentum: float):
    """The moving (mean, variance) expected after one training-mode update with batch x (features last),
    in float64 (reference.ema of the biased batch statistics), and their float32 bounds
    (reference.ema_bounds): (mean, var, b_mean, b_var)."""
    mean, var = reference.batch_stats(x)
    b_mean, b_var = reference.ema_bounds(x, old_mean, old_var, momentum)
    return reference.ema(old_mean, mean, momentum), reference.ema(old_var, var, momentum), b_mean, b_var


# --------------------------------------------------------------------------- evidence in a summary line
# A summary (verdict.conclude) or a mechanism's detail quotes the evidence a comparison recorded
# (Verdict._compare: evidence[name] = {"value", "bound", "ratio"}) through these, in one spelling.


def ratio(verdict, name: str) -> float:
    """The worst value/bound ratio recorded as evidence `name`, as a number: the record's "inf" (a value
    over a zero bound) is float("inf") (bnspec.measure.verdict.Verdict.ratio)."""
    return verdict.ratio(name)


def ratio_text(verdict, name: str, spec: str = ".3g") -> str:
    """The ratio of evidence `name` for a summary line, formatted with `spec` ("inf" stays the word)."""
    return verdict.quote(name, spec, "ratio")


def value_text(verdict, name: str, spec: str = ".2e") -> str:
    """The value of evidence `name` for a summary line, formatted with `spec`: a comparison's worst
    |measurement|, or what verdict.record recorded under that name (a word, such as verdict.equal's
    "shape differs" or a recorded string, stays as it is)."""
    return verdict.quote(name, spec, "value")


def bound_text(verdict, name: str, spec: str = ".1e") -> str:
    """The bound of evidence `name` (at its worst element) for a summary line, formatted with `spec`."""
    return verdict.quote(name, spec, "bound")


def within_text(verdict, name: str, spec: str = ".2e", bound_spec: str = ".1e") -> str:
    """Evidence `name` as "<value> (bound <bound>)" for a summary line (value_text, bound_text)."""
    return f"{value_text(verdict, name, spec)} (bound {bound_text(verdict, name, bound_spec)})"


# --------------------------------------------------------------------------- BN layers and their state


def bn_state(layer) -> dict:
    """gamma, beta, moving mean/variance (float64 copies) and epsilon of a BN layer."""
    return {
        "gamma": to_numpy(layer.gamma, np.float64),
        "beta": to_numpy(layer.beta, np.float64),
        "mean": to_numpy(layer.moving_mean, np.float64),
        "var": to_numpy(layer.moving_variance, np.float64),
        "eps": float(layer.epsilon),
    }


def randomise_bn(layer, rng: np.random.Generator) -> None:
    """Give a built BN layer distinctive gamma/beta/moving statistics, so that training-mode and
    inference-mode outputs differ by O(1) and any update of the statistics is visible."""
    n = layer.gamma.shape[0]
    layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    layer.beta.assign(rng.normal(0.0, 1.0, n).astype(np.float32))
    layer.moving_mean.assign(rng.normal(0.0, 2.0, n).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 4.0, n).astype(np.float32))


def make_bn(keras, units: int, rng: np.random.Generator, input_shape=None, **kwargs):
    """A built BatchNormalization layer on `units` features (or on `input_shape`, batch axis
    included) with randomised state."""
    layer = keras.layers.BatchNormalization(**kwargs)
    layer.build(tuple(input_shape) if input_shape else (None, units))
    randomise_bn(layer, rng)
    return layer


def set_bn_state(layer, state: dict) -> None:
    """Assign {gamma, beta, mean, var} (numpy) to a built BN layer."""
    for name, attr in (("gamma", "gamma"), ("beta", "beta"), ("mean", "moving_mean"), ("var", "moving_variance")):
        getattr(layer, attr).assign(np.asarray(state[name], np.float32))


def snapshot(model) -> dict[str, np.ndarray]:
    """Independent copies of every variable, keyed by a stable name. Non-finite values are kept (a
    snapshot is raw data); the functions below that read snapshots reject them."""
    return {f"{i}:{variable_name(v)}": to_numpy(v) for i, v in enumerate(model.weights)}


def variable_name(v) -> str:
    """A variable's full name: Keras 3's `path` ("sequential/batch_normalization/gamma"), else tf_keras' `name`."""
    return getattr(v, "path", None) or v.name


def group_of(key: str) -> str:
    """The group ("kernels", "gamma_beta" or "moving") of a snapshot key."""
    name = key.split(":", 1)[1] if ":" in key else key
    return "moving" if "moving" in name else "gamma_beta" if ("gamma" in name or "beta" in name) else "kernels"


def changes(before: dict, after: dict) -> dict[str, float]:
    """max |after - before| per variable. Raises NonFiniteMeasurement if either snapshot holds a NaN or
    inf in that variable (np.max would propagate a NaN, and a NaN compared with 0 reads as "no change")."""
    if set(before) != set(after):
        raise ValueError(f"snapshots of different variables: {sorted(set(before) ^ set(after))}")
    return {k: float(np.max(np.abs(finite(f"{k} after", after[k]) - finite(f"{k} before", before[k]))))
            for k in before}


def grouped_changes(model, before: dict, after: dict) -> dict[str, float]:
    """Largest change per kind of variable: kernel/bias, gamma/beta, moving statistics (NaN-safe, as
    `changes`; a group with no variable reports 0.0). For a verdict on "unchanged" prefer `unchanged`."""
    groups = dict.fromkeys(GROUPS, 0.0)
    for key, delta in changes(before, after).items():
        groups[group_of(key)] = max(groups[group_of(key)], delta)  # every delta is finite here
    return groups


def grouped_arrays(snap: dict) -> dict[str, np.ndarray]:
    """A snapshot's variables flattened and concatenated per group (float64; groups with no variable
    are left out)."""
    parts: dict[str, list] = {}
    for key in snap:  # in the snapshot's (the model's) variable order
        parts.setdefault(group_of(key), []).append(snap[key])
    return {g: flat(parts[g]) for g in GROUPS if g in parts}


def unchanged(verdict, before: dict, after: dict, prefix: str = "") -> dict[str, bool]:
    """Per group, whether every variable is finite and bitwise unchanged, recorded through
    `verdict.equal` as evidence `<prefix><group>_unchanged` (value: max |change|). A non-finite value
    in either snapshot raises NonFiniteMeasurement (an error of the test, never a verdict)."""
    a, b = grouped_arrays(before), grouped_arrays(after)
    if set(a) != set(b):
        raise ValueError(f"snapshots with different groups: {sorted(a)} vs {sorted(b)}")
    return {g: verdict.equal(f"{prefix}{g}_unchanged", a[g], b[g]) for g in a}


def moving_state(layers) -> np.ndarray:
    """The moving mean and variance of BN `layers`, one float64 vector (a raw copy: compare it with
    `verdict.equal`, which rejects non-finite values)."""
    return flat(to_numpy(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance))


def mlp_reference_layers(model) -> list[dict]:
    """The model's Dense and BN layers as numpy dicts for bnspec.reference.mlp_inference."""
    out = []
    for layer in bn_model._all_layers(model):
        kind = type(layer).__name__
        if kind == "Dense":
            kernel, bias = layer.get_weights()
            out.append({"kernel": kernel, "bias": bias})
        elif bn_model.is_bn(layer):
            out.append(bn_state(layer))
    return out


def randomise_model_bn(model, rng: np.random.Generator) -> None:
    """Randomise every BN layer of `model` (randomise_bn), in the model's layer order."""
    for layer in bn_model.bn_layers(model):
        randomise_bn(layer, rng)


# --------------------------------------------------------------------------- entry points and the collapse

INFERENCE_ENTRIES = ("predict", "predict_on_batch", "evaluate", "test_on_batch", "call", "call_training_false")
TRAINING_ENTRIES = ("fit", "train_on_batch", "call_training_true")
OUTPUT_ENTRIES = ("predict", "predict_on_batch", "call", "call_training_false", "call_training_true")
LOSS_ENTRIES = ("evaluate", "test_on_batch")  # return the mean cross-entropy loss of the batch


def run_entry(model, entry: str, x, y):
    """Run `model` on (x, y) through one Keras entry point; returns logits (numpy) where the
    entry point returns them, the loss for evaluate/test_on_batch, and None for fit. Outputs are read
    through backend.to_numpy (a PyTorch output of model(x) requires grad: np.asarray refuses it)."""
    n = len(x)
    if entry == "fit":
        model.fit(x, y, batch_size=n, epochs=1, verbose=0, shuffle=False)
        return None
    if entry == "train_on_batch":
        model.train_on_batch(x, y)
        return None
    if entry == "predict":
        return to_numpy(model.predict(x, batch_size=n, verbose=0))
    if entry == "predict_on_batch":
        return to_numpy(model.predict_on_batch(x))
    if entry == "evaluate":
        return float(np.ravel(to_numpy(model.evaluate(x, y, batch_size=n, verbose=0)))[0])
    if entry == "test_on_batch":
        # Keras < 3.1 (seen on 3.0.5) does not reset the metrics in test_on_batch: its "loss" is the running mean
        # over every call so far. Resetting first makes it this batch's loss on every release.
        model.reset_metrics()
        return float(np.ravel(to_numpy(model.test_on_batch(x, y)))[0])
    if entry == "call":
        return to_numpy(model(x))
    if entry == "call_training_false":
        return to_numpy(model(x, training=False))
    if entry == "call_training_true":
        return to_numpy(model(x, training=True))
    raise ValueError(f"unknown entry point {entry!r}")


def _collapse_parts(model, bn_index: int):
    layers = bn_model._all_layers(model)
    bn = bn_model.bn_layers(model)[bn_index]
    pos = layers.index(bn)
    w_in, b_in = layers[pos - 1].get_weights()
    w_out, b_out = bn_model.dense_layers(model)[-1].get_weights()
    x_max = np.abs(w_in).sum(axis=0) + np.abs(b_in)
    s = bn_state(bn)
    e = reference.batch_of_one_bound(x_max, s["gamma"], s["beta"], s["eps"])
    return s, e, np.asarray(w_out, np.float64), np.asarray(b_out, np.float64)


def collapse_bound(model, bn_index: int = -1) -> np.ndarray:
    """Bound on how much the logits of two single-example batches can differ when the BN layer
    `bn_index` (the last hidden one by default) runs in training mode on batches of one.

    That layer then outputs beta + e with |e| <= batch_of_one_bound(x), where its input x comes from
    a Dense layer fed by tanh/sigmoid outputs in [-1, 1], so |x_j| <= sum_i |W_ij| + |b_j|. Through
    the activation (1-Lipschitz) and the logits layer W_out, two outputs differ by at most
    2 * |W_out|^T e, plus the float32 rounding of the logits' dot products (2 * k * u * |W_out|^T 1).

    The same number bounds |logits - collapsed_logits(model)| (one output against the exact
    training-mode reference): that distance is at most |W_out|^T e plus one dot product's rounding
    ((k+1)*u*(|W_out|^T 1 + |b_out|), the activation's own rounding adding u*|W_out|^T 1), i.e. at
    most half this bound for k >= 2."""
    _, e, w_out, b_out = _collapse_parts(model, bn_index)
    k = w_out.shape[0]
    aw = np.abs(w_out)
    return 2 * (e @ aw) + 2 * k * reference.U32 * (aw.sum(axis=0) + np.abs(b_out))


def collapsed_logits(model, activation: str = "tanh") -> np.ndarray:
    """The exact (float64) logits of a single-example batch when the last hidden BN layer runs in
    training mode: that layer outputs beta whatever the input (the batch's mean is the example, its
    variance 0), so the logits are act(beta) @ W_out + b_out, one row (shape (1, 10)) for every
    input. Compare with `collapse_bound(model)` (see there)."""
    s, _, w_out, b_out = _collapse_parts(model, -1)
    act = np.tanh if activation == "tanh" else (lambda z: 1.0 / (1.0 + np.exp(-z)))
    return (act(s["beta"]) @ w_out + b_out)[None, :]


def bn_layer(keras, **kwargs):
    """keras.layers.BatchNormalization(**kwargs); where this Keras does not know one of the arguments
    (e.g. `renorm` before Keras 3.14) the case is not applicable, not failed."""
    try:
        return keras.layers.BatchNormalization(**kwargs)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        unknown = [k for k in kwargs if k in text]
        if unknown and ("Unrecognized keyword" in text or "unexpected keyword" in text):
            not_applicable(f"this Keras' BatchNormalization has no {', '.join(unknown)} argument")
        raise


def skip_if_synchronized_refused(keras, backend_name: str) -> None:
    """Skip a synchronized=True case where Keras refuses the argument, and only then. Keras documents it as
    TensorFlow-only ("synchronized: Only applicable with the TensorFlow backend", BatchNormalization's
    docstring) and its constructor refuses it elsewhere: a documented limitation, not a verdict. The case is
    skipped only when that refusal (a ValueError saying so) is what we observe, so that a Keras that starts to
    support it on this backend is measured again; any other exception propagates (an error of the test)."""
    if backend_name == "tensorflow":
        return
    try:
        keras.layers.BatchNormalization(synchronized=True)
    except ValueError as exc:
        if "only supported with the TensorFlow backend" not in str(exc):
            raise
        pytest.skip(f"synchronized=True is documented as TensorFlow-only, and Keras refuses it on {backend_name}: {exc}")
