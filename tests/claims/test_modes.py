"""Training vs inference mode of a single BN layer, against the numpy float64 reference.

Every comparison uses bnspec.reference.bn_bound, a worst-case float32 bound: exceeding it means the
layer computed something else, not that it rounded differently. Each test also shows its power: the
alternative (the other mode, the other variance formula) must differ from the claim's prediction by
more than 2x the bound somewhere, since a float32 implementation of the alternative may itself sit
one bound away from its exact value, and must still fall outside the claim's bound: every alternative
here is computed exactly (float64), so each case passes its own bound to `verdict.power`, which applies
that rule (bnspec.measure.verdict.Verdict.power).

Backend-neutral (Keras 3 on TensorFlow, JAX and PyTorch; tf_keras): outputs are read through
bnspec.measure.backend.to_numpy, state through tests.claims._kit."""

import numpy as np
import pytest

from bnspec import reference
from tests.claims import _kit as probes
from bnspec.measure.backend import to_numpy


# --------------------------------------------------------------------------- helpers

UNITS = 100


def _inputs(rng, batch, units=UNITS, offset=2.0):
    # per-feature offsets and scales, so batch and moving statistics differ by O(1)
    return (rng.normal(0, 1, (batch, units)) * rng.uniform(0.5, 3, units) + rng.normal(0, offset, units)).astype(np.float32)


@pytest.mark.claim("K01")
@pytest.mark.parametrize("batch", [2, 60, 600])
def test_training_mode_uses_batch_statistics(verdict, keras, device, rng, batch):
    """Training-mode output vs Algorithm 1 (batch mean, biased batch variance) within its float32 bound."""
    layer = probes.make_bn(keras, UNITS, rng)
    # small offsets keep E[x^2]/var near 1, so the reduction-error bound stays below the
    # biased-vs-unbiased difference (1/(m-1) relative) even at m = 600
    x = _inputs(rng, batch, offset=0.3)
    s = probes.bn_state(layer)  # before the call updates the moving statistics
    y = to_numpy(layer(x, training=True), np.float64)

    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], s["eps"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=batch)
    unbiased = reference.bn_inference(x, s["gamma"], s["beta"], mean, var * batch / (batch - 1), s["eps"])
    moving = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    verdict.power("unbiased_variance_alternative", unbiased - ref, bound)
    verdict.power("moving_statistics_alternative", moving - ref, bound)
    ok = verdict.within("output_vs_algorithm1", y - ref, bound)
    verdict.conclude(ok, f"max |y - Alg.1| = {probes.value_text(verdict, 'output_vs_algorithm1')} (worst ratio to its "
                         f"bound {probes.ratio_text(verdict, 'output_vs_algorithm1')}); unbiased variance would differ "
                         f"by {probes.value_text(verdict, 'unbiased_variance_alternative')}")


@pytest.mark.claim("K02")
@pytest.mark.parametrize("training", [False, None])
@pytest.mark.parametrize("batch", [1, 2, 60])
def test_inference_mode_uses_moving_statistics(verdict, keras, device, rng, batch, training):
    """Output with training=False or unset vs the moving-statistics formula within its float32 bound."""
    layer = probes.make_bn(keras, UNITS, rng)
    x = _inputs(rng, batch)
    s = probes.bn_state(layer)
    y = to_numpy(layer(x) if training is None else layer(x, training=training), np.float64)

    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    batch_mode = reference.bn_train(x, s["gamma"], s["beta"], s["eps"])[0]  # training mode's output
    verdict.power("batch_statistics_alternative", batch_mode - ref, bound)
    ok = verdict.within("output_vs_inference_formula", y - ref, bound)
    verdict.conclude(ok, f"max |y - inference formula| = {probes.value_text(verdict, 'output_vs_inference_formula')} "
                         f"(worst ratio to its bound {probes.ratio_text(verdict, 'output_vs_inference_formula')})")


@pytest.mark.claim("K03")
@pytest.mark.parametrize("momentum", [0.99, 0.9])
@pytest.mark.parametrize("batch", [2, 60])
@pytest.mark.parametrize("training", [True, False])
def test_moving_statistics_update_rule(verdict, keras, rng, batch, momentum, training):
    """Moving statistics after one call: one EMA step towards the biased batch statistics, or bitwise unchanged."""
    layer = probes.make_bn(keras, UNITS, rng, momentum=momentum)
    x = _inputs(rng, batch)
    s = probes.bn_state(layer)
    layer(x, training=training)
    after = probes.bn_state(layer)

    mean, var = reference.batch_stats(x)
    upd_mean, upd_var = reference.ema(s["mean"], mean, momentum), reference.ema(s["var"], var, momentum)
    b_mean, b_var = reference.ema_bounds(x, s["mean"], s["var"], momentum)
    if training:
        # the alternatives: no update at all, and an update with the unbiased m/(m-1) variance
        verdict.power("no_update_alternative", s["mean"] - upd_mean, b_mean)
        unbiased_var = reference.ema(s["var"], var * batch / (batch - 1), momentum)
        verdict.power("unbiased_variance_alternative", unbiased_var - upd_var, b_var)
        ok_mean = verdict.within("moving_mean_vs_rule", after["mean"] - upd_mean, b_mean)
        ok_var = verdict.within("moving_variance_vs_rule", after["var"] - upd_var, b_var)
    else:  # inference must not assign at all: finite and bitwise equal
        verdict.power("update_alternative", upd_mean - s["mean"], b_mean)
        ok_mean = verdict.equal("moving_mean_unchanged", s["mean"], after["mean"])
        ok_var = verdict.equal("moving_variance_unchanged", s["var"], after["var"])
    m_key, v_key = ("moving_mean_vs_rule", "moving_variance_vs_rule") if training else \
        ("moving_mean_unchanged", "moving_variance_unchanged")
    verdict.conclude(ok_mean and ok_var,
                     f"training={training}: moving mean off by {probes.within_text(verdict, m_key, bound_spec='.2e')}, "
                     f"variance by {probes.within_text(verdict, v_key, bound_spec='.2e')}")


@pytest.mark.claim("N06")
@pytest.mark.parametrize("units", [3, 100])
def test_batch_of_one_outputs_beta(verdict, keras, device, rng, units):
    """Training-mode outputs of eight single-example batches vs beta, within the batch-of-one rounding bound."""
    layer = probes.make_bn(keras, units, rng)
    s = probes.bn_state(layer)
    xs = _inputs(rng, 8, units)  # eight different single-example batches
    ys = np.stack([to_numpy(layer(row[None, :], training=True), np.float64)[0] for row in xs])
    bounds = np.stack([reference.batch_of_one_bound(row, s["gamma"], s["beta"], s["eps"]) for row in xs])
    # the alternative: a layer that normalised single examples with its moving statistics
    inference = reference.bn_inference(xs, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    verdict.power("moving_statistics_alternative", inference - s["beta"], bounds)
    ok = verdict.within("output_minus_beta", ys - s["beta"], bounds)  # all 8 x units at once: NaN-safe
    verdict.record(inputs=len(xs), input_spread=float(np.ptp(xs, axis=0).max()))
    verdict.conclude(ok, f"max |y - beta| = {probes.value_text(verdict, 'output_minus_beta')} over {len(xs)} different "
                         f"inputs (worst ratio to its float32 bound {probes.ratio_text(verdict, 'output_minus_beta')})")
