"""Which Keras entry points run BN in training mode, and which change the model's state.

Models are the notebook's architecture (bnspec.subjects.model), untrained but with randomised BN state
(tests.claims._kit.randomise_bn), fed seeded random inputs: what is measured is the mode and the
state changes, not accuracy. "Unchanged" is finite and bitwise equal (probes.unchanged, through
verdict.equal): an inference call assigns no variable, and a NaN written into one is an error.

A mode is identified by comparing outputs with the float64 reference of that mode: all BN layers in
inference mode (reference.mlp_inference, with its float32 bound), or, for single examples through a
last BN layer in training mode, the collapsed logits act(beta) @ W_out + b_out (probes.collapsed_logits,
within probes.collapse_bound). Each test first checks that the two references are further apart than
the sum of their bounds, so an output within one bound is outside the other.

Backend-neutral (Keras 3 on TensorFlow, JAX and PyTorch; tf_keras): outputs are read through
bnspec.measure.backend.to_numpy, state through tests.claims._kit."""

import numpy as np
import pytest

from bnspec import reference
from tests.claims import _kit as probes
from bnspec.measure.backend import to_numpy
from bnspec.subjects.model import KINDS, NOTEBOOK_HARDCODED_LAYERS, ModelSpec, bn_layers, build, compile_model, dense_layers


# --------------------------------------------------------------------------- helpers

BATCH = 60
SINGLES = 10  # single-example batches per test of the hard-coded model


@pytest.fixture
def batch(rng):
    x = rng.normal(0, 1, (BATCH, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, BATCH)]
    return x, y


def _model(keras, rng, **spec):
    model = compile_model(build(ModelSpec(**spec), keras), keras)
    probes.randomise_model_bn(model, rng)
    return model


def _run(verdict, model, entry, x, y):
    """Run the entry point; returns (output, {group: finite and bitwise unchanged}) with the evidence recorded."""
    before = probes.snapshot(model)
    out = probes.run_entry(model, entry, x, y)
    return out, probes.unchanged(verdict, before, probes.snapshot(model))


def _loss_reference(logits, logit_bound, y):
    """Per example: the exact cross-entropy of `logits` (float64) and a bound on |float32 loss - it| for
    an implementation whose logits are within `logit_bound` of `logits`.

    Propagation: L = logsumexp(z) - z_y moves by <= 2 max_j |dz_j| (logsumexp is 1-Lipschitz in the max
    norm). Rounding of the float32 evaluation (z - max z, exp, a sum of 10 terms <= 1, log, subtract):
    the shifted logits carry u*|z_j - max z| each (through exp into the log: at most u*range(z) twice,
    for the sum and for z_y), the sum of 10 terms 10u relative, exp and log a few ulps each, the final
    subtraction u*|L|: at most u*(2 range(z) + 16 + |L|); we allow 4 times that for exp/log
    implementations that are not correctly rounded (a few ulps each)."""
    z = np.asarray(logits, np.float64)
    loss = reference.softmax_cross_entropy(z, y)
    rng_z = z.max(axis=1) - z.min(axis=1)
    return loss, 2 * np.asarray(logit_bound, np.float64).max(axis=1) + 4 * reference.U32 * (2 * rng_z + 16 + loss)


def _mean_loss_bound(loss, per_example_bound):
    """Bound on |mean float32 loss - mean exact loss| over a batch of n: the per-example bounds on
    average, plus the float32 reduction of n positive terms (<= n*u*mean L) and the loss tracker's
    few roundings (total / count: 3u*mean L)."""
    n = len(loss)
    return per_example_bound.mean() + (n + 3) * reference.U32 * loss.mean()


def _single_losses(logits, logit_bound, y):
    """Per row, the exact loss and the bound on the loss a batch of ONE reports (_mean_loss_bound, n = 1)."""
    loss, per = _loss_reference(logits, logit_bound, y)
    return loss, np.array([_mean_loss_bound(loss[i : i + 1], per[i : i + 1]) for i in range(len(loss))])


def _first_bn_update(model, x):
    """The expected moving mean/variance of the first BN layer after one training step on x, and their
    bounds. The forward pass of a step sees the weights before the step, so the layer's input is
    h = x @ W0 + b0 with the current Dense weights. float32 computes h within
    dh = (k+1)*u*(|x| @ |W0| + |b0|) (k = 784, worst case for any summation order); that moves the batch
    mean by <= mean(dh) and the biased variance by <= 2*mean(|h - mu| * D) + mean(D^2) with
    D = dh + mean(dh) (the perturbation minus its mean); both enter the update times (1 - momentum),
    on top of reference.ema_bounds (the update's own arithmetic and reductions)."""
    dense, bn = dense_layers(model)[0], bn_layers(model)[0]
    w, b = (np.asarray(v, np.float64) for v in dense.get_weights())
    s, momentum = probes.bn_state(bn), float(bn.momentum)
    xs = np.asarray(x, np.float64)
    h = xs @ w + b
    k = w.shape[0]
    dh = (k + 1) * reference.U32 * (np.abs(xs) @ np.abs(w) + np.abs(b))
    mean, var = reference.batch_stats(h)
    d = dh + dh.mean(axis=0)
    d_mean = dh.mean(axis=0)
    d_var = 2 * (np.abs(h - mean) * d).mean(axis=0) + (d**2).mean(axis=0)
    b_mean, b_var = reference.ema_bounds(h, s["mean"], s["var"], momentum)
    return ({"mean": reference.ema(s["mean"], mean, momentum), "var": reference.ema(s["var"], var, momentum)},
            {"mean": b_mean + (1 - momentum) * d_mean, "var": b_var + (1 - momentum) * d_var}, s, bn)


def _hardcoded(model):
    layers = bn_layers(model)
    return [layers[i] for i in NOTEBOOK_HARDCODED_LAYERS]


def _mode_references(verdict, model, x):
    """Inference-mode logits and bound for the rows of x, the collapsed (training-mode) logits and their
    bound, after checking that the two references are told apart on these rows."""
    inf_logits, inf_bound = reference.mlp_inference(x, probes.mlp_reference_layers(model))
    col_logits, col_bound = probes.collapsed_logits(model), probes.collapse_bound(model)
    # the bound sums both references' bounds (each mode's own rounding): 1x
    verdict.power("inference_vs_collapsed_reference", inf_logits - col_logits, inf_bound + col_bound, measured=True)
    return inf_logits, inf_bound, col_logits, col_bound


@pytest.mark.claim("M01")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", probes.INFERENCE_ENTRIES)
def test_inference_entry_points_change_nothing(verdict, keras, rng, batch, entry, kind):
    """Kernels, gamma/beta and moving statistics bitwise unchanged by one call of an inference entry point."""
    _, same = _run(verdict, _model(keras, rng, kind=kind), entry, *batch)
    verdict.conclude(all(same.values()),
                     f"largest change: moving {probes.value_text(verdict, 'moving_unchanged')}, gamma/beta "
                     f"{probes.value_text(verdict, 'gamma_beta_unchanged')}, kernels "
                     f"{probes.value_text(verdict, 'kernels_unchanged')} (all finite; unchanged means bitwise)")


@pytest.mark.claim("M02")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", probes.TRAINING_ENTRIES)
def test_training_entry_points_change_state(verdict, keras, rng, batch, entry, kind):
    """Moving statistics, and kernels except under model(x, training=True), changed by a training entry point."""
    _, same = _run(verdict, _model(keras, rng, kind=kind), entry, *batch)
    kernels_must_move = entry != "call_training_true"
    ok = not same["moving"] and (not same["kernels"] or not kernels_must_move)
    verdict.conclude(ok, f"moving statistics changed by {probes.value_text(verdict, 'moving_unchanged')}, kernels by "
                         f"{probes.value_text(verdict, 'kernels_unchanged')} (new values finite)")


@pytest.mark.claim("N02")
@pytest.mark.parametrize("entry", ["predict", "call"])
@pytest.mark.parametrize("batch_size", [1, 60])
def test_inference_updates_moving_statistics_when_trainable(verdict, keras, rng, batch, entry, batch_size):
    """Whether predict or model(x) on 1 or 60 examples changes the moving statistics of trainable BN layers."""
    model = _model(keras, rng)
    assert all(layer.trainable for layer in bn_layers(model))
    x, y = batch
    _, same = _run(verdict, model, entry, x[:batch_size], y[:batch_size])
    change = probes.value_text(verdict, "moving_unchanged")
    verdict.mechanism("moving_unchanged", same["moving"],
                      f"moving statistics finite and {'bitwise unchanged' if same['moving'] else f'changed by {change}'}")
    verdict.conclude(not same["moving"], f"{entry} on {batch_size} example(s), trainable=True: moving statistics "
                                         f"{'bitwise unchanged' if same['moving'] else f'changed by {change}'}")


@pytest.mark.claim("N04")
@pytest.mark.parametrize("entry", [e for e in probes.INFERENCE_ENTRIES if e != "call_training_false"]
                         + ["fit", "train_on_batch"])
def test_training_flag_is_set_automatically(verdict, keras, device, rng, batch, entry):
    """Each entry point's mode unasked: outputs vs the inference reference, or fit's first BN update vs an EMA step."""
    model = _model(keras, rng)
    x, y = batch
    layers = probes.mlp_reference_layers(model)
    ref_logits, bound = reference.mlp_inference(x, layers)
    alt_logits = reference.mlp_training(x, layers)  # what training mode would give
    if entry in ("fit", "train_on_batch"):
        # training mode <=> the first BN layer's moving statistics take one EMA step towards the batch
        # statistics of its input (claim K03); the inference alternative leaves them where they are
        want, tol, s, bn = _first_bn_update(model, x)
        verdict.power("no_update_alternative_mean", s["mean"] - want["mean"], tol["mean"])
        _, same = _run(verdict, model, entry, x, y)
        after = probes.bn_state(bn)
        ok_mean = verdict.within("first_bn_moving_mean_vs_batch_update", after["mean"] - want["mean"], tol["mean"])
        ok_var = verdict.within("first_bn_moving_variance_vs_batch_update", after["var"] - want["var"], tol["var"])
        verdict.conclude(not same["moving"] and ok_mean and ok_var,
                         f"{entry}: moving statistics changed by {probes.value_text(verdict, 'moving_unchanged')}; the "
                         f"first BN layer's moving mean is within "
                         f"{probes.ratio_text(verdict, 'first_bn_moving_mean_vs_batch_update')} x its bound of one "
                         "update with the batch statistics")
        return
    # The test must be able to tell the two modes apart, or its verdict means nothing:
    verdict.power("training_mode_alternative", alt_logits - ref_logits, bound)
    out = probes.run_entry(model, entry, x, y)
    if entry in probes.LOSS_ENTRIES:
        ref, per = _loss_reference(ref_logits, bound, y)
        tol = _mean_loss_bound(ref, per)
        alt = reference.softmax_cross_entropy(alt_logits, y).mean()
        verdict.power("training_mode_loss_alternative", alt - ref.mean(), tol)
        ok = verdict.within("loss_vs_inference_reference", out - ref.mean(), tol)
        verdict.record(loss=out, reference_inference_loss=ref.mean(), training_mode_loss=alt)
        verdict.conclude(ok, f"loss {out:.6f} vs inference-mode reference {ref.mean():.6f} (bound {tol:.1e}); "
                             f"training mode would give {alt:.6f}")
        return
    ok = verdict.within("logits_vs_inference_reference", out - ref_logits, bound)
    verdict.conclude(ok, "max |logits - inference-mode reference| = "
                         f"{probes.value_text(verdict, 'logits_vs_inference_reference')} (worst ratio to its bound "
                         f"{probes.ratio_text(verdict, 'logits_vs_inference_reference')}); training mode would differ by "
                         f"{probes.value_text(verdict, 'training_mode_alternative', '.2f')}")


@pytest.mark.claim("N05")
@pytest.mark.parametrize("kind", ["functional", "subclassed"])
@pytest.mark.parametrize("entry", probes.INFERENCE_ENTRIES)
def test_hardcoded_training_flag_wins(verdict, keras, rng, batch, entry, kind):
    """Inference entry points on single examples of the hard-coded model: statistics, and outputs vs both modes."""
    model = _model(keras, rng, kind=kind, hardcoded_training=True)
    x, y = batch[0][:SINGLES], batch[1][:SINGLES]
    hard = _hardcoded(model)  # the notebook hard-coded its 2nd and 3rd BN layers
    # state before any call: an inference entry never changes gamma, beta or the kernels, and the
    # inference reference is only used when the moving statistics are found bitwise unchanged
    inf_logits, inf_bound, col_logits, col_bound = _mode_references(verdict, model, x)
    moving_before = probes.moving_state(hard)
    outs = [probes.run_entry(model, entry, x[i : i + 1], y[i : i + 1]) for i in range(SINGLES)]
    hard_unchanged = verdict.equal("hardcoded_layers_moving_unchanged", moving_before, probes.moving_state(hard))
    if entry in probes.OUTPUT_ENTRIES:
        logits = np.concatenate(outs)
        collapsed = verdict.within("logits_vs_collapsed_reference", logits - col_logits, col_bound)
        as_inference = verdict.within("logits_vs_inference_reference", logits - inf_logits, inf_bound)
        verdict.record(distinct_classes=len(set(np.asarray(logits).argmax(axis=1).tolist())))
        what = "logits"
    else:  # evaluate / test_on_batch return the loss of each single-example batch
        losses = np.asarray(outs, np.float64)
        col_rows = np.repeat(col_logits, SINGLES, axis=0)  # the collapsed logits, the same for every example
        col_loss, col_tol = _single_losses(col_rows, np.broadcast_to(col_bound, col_rows.shape), y)
        inf_loss, inf_tol = _single_losses(inf_logits, inf_bound, y)
        verdict.power("inference_vs_collapsed_loss", inf_loss - col_loss, inf_tol + col_tol, measured=True)  # both bounds
        collapsed = verdict.within("loss_vs_collapsed_reference", losses - col_loss, col_tol)
        as_inference = verdict.within("loss_vs_inference_reference", losses - inf_loss, inf_tol)
        what = "losses"
    verdict.mechanism("hardcoded_layer_in_inference", hard_unchanged and as_inference,
                      f"hard-coded layers' moving statistics {'bitwise unchanged' if hard_unchanged else 'moved'}; "
                      f"{what} {'equal' if as_inference else 'do not equal'} the inference-mode reference within its bound")
    verdict.conclude(not hard_unchanged and collapsed,
                     f"{kind}, {entry} on {SINGLES} single examples: hard-coded layers' moving statistics "
                     f"{'bitwise unchanged' if hard_unchanged else 'moved'}; {what} "
                     f"{'collapse to' if collapsed else 'do not collapse to'} the training-mode reference "
                     f"(collapse bound {col_bound.max():.1e}) and {'equal' if as_inference else 'do not equal'} "
                     "the inference-mode reference")


@pytest.mark.claim("N07")
@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_hardcoded_model_ignores_training_argument(verdict, keras, rng, batch, kind):
    """model(x, training=True) vs training=False on single examples of the hard-coded model, against both modes."""
    model = _model(keras, rng, kind=kind, hardcoded_training=True)
    hard = _hardcoded(model)
    x = batch[0][:SINGLES]
    col_logits, col_bound = probes.collapsed_logits(model), probes.collapse_bound(model)
    on, off, inf, inf_b, before, after = [], [], [], [], [], []
    for i in range(SINGLES):
        # the inference reference from the state right before this example's training=False call
        # (the training=True calls move the moving statistics)
        ref, b = reference.mlp_inference(x[i : i + 1], probes.mlp_reference_layers(model))
        inf.append(ref), inf_b.append(b), before.append(probes.moving_state(hard))
        off.append(to_numpy(model(x[i : i + 1], training=False), np.float64))
        after.append(probes.moving_state(hard))
        on.append(to_numpy(model(x[i : i + 1], training=True), np.float64))
    on, off, inf, inf_b = (np.concatenate(a) for a in (on, off, inf, inf_b))
    verdict.power("inference_vs_collapsed_reference", inf - col_logits, inf_b + col_bound, measured=True)  # both bounds
    hard_unchanged = verdict.equal("hardcoded_layers_moving_unchanged_by_training_false",
                                   np.concatenate(before), np.concatenate(after))
    agree = verdict.within("training_true_vs_false", on - off, col_bound)
    on_collapsed = verdict.within("training_true_vs_collapsed_reference", on - col_logits, col_bound)
    off_collapsed = verdict.within("training_false_vs_collapsed_reference", off - col_logits, col_bound)
    off_inference = verdict.within("training_false_vs_inference_reference", off - inf, inf_b)
    verdict.mechanism("hardcoded_layer_in_inference", hard_unchanged and off_inference,
                      f"with training=False the hard-coded layers' moving statistics are "
                      f"{'bitwise unchanged' if hard_unchanged else 'moved'} and the logits "
                      f"{'equal' if off_inference else 'do not equal'} the inference-mode reference within its bound")
    # holds only with the mechanism that makes it hold: both calls collapsed (hard-coded layers in training mode)
    verdict.conclude(agree and on_collapsed and off_collapsed and not hard_unchanged,
                     f"{kind}: model(x, training=True) vs training=False on single examples differ by "
                     f"{probes.ratio_text(verdict, 'training_true_vs_false')} x the collapse bound "
                     f"({col_bound.max():.1e}); "
                     f"training=False {'collapses' if off_collapsed else 'does not collapse'} to the training-mode "
                     f"reference and {'equals' if off_inference else 'does not equal'} the inference-mode one")
