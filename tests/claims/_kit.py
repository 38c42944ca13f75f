"""Small measuring helpers the claim tests share: BN layers with non-trivial state, weight
snapshots, and the numbers a model's BN layers hold. Backend-neutral: every value is read through
bnspec.measure.backend.to_numpy (Keras 3 on TensorFlow, JAX or PyTorch, and tf_keras).

Change detection is NaN-safe: `changes` and `grouped_changes` raise bnspec.measure.verdict.NonFiniteMeasurement
when a snapshot holds a NaN or infinite value (a NaN written into a variable is never read as "no
change", nor as a change: it is an error of the test). To decide "unchanged" for a verdict use
`unchanged(verdict, before, after)`, which compares bitwise through `verdict.equal` and records the
evidence per group of variables."""

from __future__ import annotations

import numpy as np

from bnspec.subjects import model as bn_model
from bnspec.measure.backend import to_numpy
from bnspec.measure.verdict import finite, not_applicable

GROUPS = ("kernels", "gamma_beta", "moving")  # the kinds of variable a model's snapshot is grouped into


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
    return {f"{i}:{_name(v)}": to_numpy(v) for i, v in enumerate(model.weights)}


def _name(v) -> str:
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
        parts.setdefault(group_of(key), []).append(np.ravel(np.asarray(snap[key], np.float64)))
    return {g: np.concatenate(parts[g]) for g in GROUPS if g in parts}


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
    return np.concatenate([np.concatenate([np.ravel(to_numpy(layer.moving_mean)), np.ravel(to_numpy(layer.moving_variance))])
                           for layer in layers]).astype(np.float64)


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
    for layer in bn_model.bn_layers(model):
        randomise_bn(layer, rng)


# --------------------------------------------------------------------------- entry points

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
    from bnspec import reference

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
    from bnspec import reference

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
