"""Which Keras entry points run BN in training mode, and which change the model's state.

Models are the notebook's architecture (bnspec.model), untrained but with randomised BN state
(bnspec.probes.randomise_bn), fed seeded random inputs: what is measured is the mode and the
state changes, not accuracy. "Unchanged" is bitwise: an inference call assigns no variable."""

import numpy as np
import pytest

from bnspec import probes, reference
from bnspec.model import KINDS, ModelSpec, bn_layers, build, compile_model

BATCH = 60


@pytest.fixture
def batch(rng):
    x = rng.normal(0, 1, (BATCH, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, BATCH)]
    return x, y


def _model(keras, rng, **spec):
    model = compile_model(build(ModelSpec(**spec), keras), keras)
    probes.randomise_model_bn(model, rng)
    return model


def _run(model, entry, x, y):
    before = probes.snapshot(model)
    out = probes.run_entry(model, entry, x, y)
    return out, probes.grouped_changes(model, before, probes.snapshot(model))


@pytest.mark.claim("M01")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", probes.INFERENCE_ENTRIES)
def test_inference_entry_points_change_nothing(verdict, keras, rng, batch, entry, kind):
    _, delta = _run(_model(keras, rng, kind=kind), entry, *batch)
    verdict.record(**{f"max_change_{k}": v for k, v in delta.items()})
    verdict.conclude(all(v == 0.0 for v in delta.values()),
                     f"largest change: moving {delta['moving']:.2e}, gamma/beta {delta['gamma_beta']:.2e}, "
                     f"kernels {delta['kernels']:.2e}")


@pytest.mark.claim("M02")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", probes.TRAINING_ENTRIES)
def test_training_entry_points_change_state(verdict, keras, rng, batch, entry, kind):
    _, delta = _run(_model(keras, rng, kind=kind), entry, *batch)
    kernels_must_move = entry != "call_training_true"
    ok = delta["moving"] > 0 and (delta["kernels"] > 0 or not kernels_must_move)
    verdict.record(**{f"max_change_{k}": v for k, v in delta.items()})
    verdict.conclude(ok, f"moving statistics changed by {delta['moving']:.2e}, kernels by {delta['kernels']:.2e}")


@pytest.mark.claim("N02")
@pytest.mark.parametrize("entry", ["predict", "call"])
@pytest.mark.parametrize("batch_size", [1, 60])
def test_inference_updates_moving_statistics_when_trainable(verdict, keras, rng, batch, entry, batch_size):
    model = _model(keras, rng)
    assert all(layer.trainable for layer in bn_layers(model))
    x, y = batch
    _, delta = _run(model, entry, x[:batch_size], y[:batch_size])
    verdict.record(max_change_moving=delta["moving"])
    verdict.conclude(delta["moving"] > 0, f"moving statistics changed by {delta['moving']:.2e} (trainable=True)")


@pytest.mark.claim("N04")
@pytest.mark.parametrize("entry", [e for e in probes.INFERENCE_ENTRIES if e != "call_training_false"]
                         + ["fit", "train_on_batch"])
def test_training_flag_is_set_automatically(verdict, keras, rng, batch, entry):
    model = _model(keras, rng)
    x, y = batch
    layers = probes.mlp_reference_layers(model)
    ref_logits, bound = reference.mlp_inference(x, layers)
    alt_logits = reference.mlp_training(x, layers)  # what training mode would give
    # The test must be able to tell the two modes apart, or its verdict means nothing:
    assert np.abs(alt_logits - ref_logits).max() > 2 * bound.max(), "mode test has no power"
    out, delta = _run(model, entry, x, y)
    if entry in ("fit", "train_on_batch"):  # training mode <=> the moving statistics move (claim K03)
        verdict.record(max_change_moving=delta["moving"])
        verdict.conclude(delta["moving"] > 0, f"{entry}: moving statistics changed by {delta['moving']:.2e}")
        return
    if entry in ("evaluate", "test_on_batch"):
        ref = reference.softmax_cross_entropy(ref_logits, y)
        # cross-entropy moves by <= 2*max|dz| per example; + float32 rounding of the loss itself
        tol = 2 * bound.max(axis=1).mean() + 32 * reference.U32 * ref.mean()
        err = abs(out - ref.mean())
        alt = reference.softmax_cross_entropy(alt_logits, y).mean()
        assert abs(alt - ref.mean()) > 2 * tol, "loss test cannot tell the modes apart"
        verdict.record(loss=out, reference_inference_loss=ref.mean(), abs_err=err, bound=tol,
                       training_mode_loss=alt)
        verdict.conclude(err <= tol, f"loss {out:.6f} vs inference-mode reference {ref.mean():.6f} "
                                     f"(|diff| {err:.1e} <= bound {tol:.1e}?)")
        return
    err = np.abs(out - ref_logits)
    verdict.record(max_abs_err=err.max(), max_bound=bound.max(), worst_err_over_bound=(err / bound).max(),
                   diff_to_training_mode=np.abs(out - alt_logits).max())
    verdict.conclude(bool(np.all(err <= bound)),
                     f"max |logits - inference-mode reference| = {err.max():.2e} (bound {bound.max():.2e}); "
                     f"training mode would differ by {np.abs(out - alt_logits).max():.2f}")


@pytest.mark.claim("N05")
@pytest.mark.parametrize("kind", ["functional", "subclassed"])
@pytest.mark.parametrize("entry", probes.INFERENCE_ENTRIES)
def test_hardcoded_training_flag_wins(verdict, keras, rng, batch, entry, kind):
    model = _model(keras, rng, kind=kind, hardcoded_training=True)
    x, y = batch
    hard = bn_layers(model)[1]  # the notebook hard-coded its 2nd and 3rd BN layers
    moving_before = hard.moving_mean.numpy().copy()
    bound = probes.collapse_bound(model)  # before any call updates the statistics
    outs = [probes.run_entry(model, entry, x[i : i + 1], y[i : i + 1]) for i in range(10)]
    moved = float(np.abs(hard.moving_mean.numpy() - moving_before).max())
    evidence = {"moving_mean_change_of_hardcoded_layer": moved}
    training_mode = moved > 0
    collapsed = True
    if entry in probes.OUTPUT_ENTRIES:
        logits = np.concatenate(outs)
        spread = np.abs(logits - logits[0]).max(axis=0)
        collapsed = bool(np.all(spread <= bound))
        evidence |= {"logit_spread_over_10_single_examples": spread.max(), "collapse_bound": bound.max(),
                     "distinct_classes": len(set(logits.argmax(axis=1).tolist()))}
    verdict.record(**evidence)
    summary = f"hard-coded layer's moving mean moved {moved:.2e}"
    if "distinct_classes" in evidence:
        summary += (f"; 10 single examples -> {evidence['distinct_classes']} class(es), "
                    f"logit spread {evidence['logit_spread_over_10_single_examples']:.2e} (collapse bound {bound.max():.1e})")
    verdict.conclude(training_mode and collapsed, summary)


@pytest.mark.claim("N07")
@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_hardcoded_model_ignores_training_argument(verdict, keras, rng, batch, kind):
    model = _model(keras, rng, kind=kind, hardcoded_training=True)
    bound = probes.collapse_bound(model)  # the hard-coded last BN layer makes every single example ~beta
    x = batch[0]
    worst = 0.0
    for i in range(10):
        on = np.asarray(model(x[i : i + 1], training=True), np.float64)
        off = np.asarray(model(x[i : i + 1], training=False), np.float64)
        worst = max(worst, float((np.abs(on - off) / bound).max()))
    verdict.record(worst_diff_over_collapse_bound=worst, collapse_bound=bound.max())
    verdict.conclude(worst <= 1.0, f"{kind}: model(x, training=True) vs training=False on single examples differ by "
                                   f"{worst:.3g} x the collapse bound ({bound.max():.1e})")
