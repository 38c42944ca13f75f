"""Training vs inference mode of a single BN layer, against the numpy float64 reference.

Every comparison uses bnspec.reference.bn_bound, a worst-case float32 bound: exceeding it means the
layer computed something else, not that it rounded differently."""

import numpy as np
import pytest

from bnspec import probes, reference

UNITS = 100


def _inputs(rng, batch, units=UNITS, offset=2.0):
    # per-feature offsets and scales, so batch and moving statistics differ by O(1)
    return (rng.normal(0, 1, (batch, units)) * rng.uniform(0.5, 3, units) + rng.normal(0, offset, units)).astype(np.float32)


@pytest.mark.claim("K01")
@pytest.mark.parametrize("batch", [2, 60, 600])
def test_training_mode_uses_batch_statistics(verdict, keras, device, rng, batch):
    layer = probes.make_bn(keras, UNITS, rng)
    # small offsets keep E[x^2]/var near 1, so the reduction-error bound stays below the
    # biased-vs-unbiased difference (1/(m-1) relative) even at m = 600
    x = _inputs(rng, batch, offset=0.3)
    s = probes.bn_state(layer)  # before the call updates the moving statistics
    y = np.asarray(layer(x, training=True), np.float64)

    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], s["eps"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=batch)
    err = np.abs(y - ref)
    unbiased = reference.bn_inference(x, s["gamma"], s["beta"], mean, var * batch / (batch - 1), s["eps"])
    moving = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    verdict.record(max_abs_err=err.max(), max_bound=bound.max(), worst_err_over_bound=(err / bound).max(),
                   diff_if_unbiased_variance=np.abs(y - unbiased).max(), diff_if_moving_stats=np.abs(y - moving).max())
    assert np.abs(y - unbiased).max() > bound.max(), "cannot tell biased from unbiased variance here"
    verdict.conclude(bool(np.all(err <= bound)),
                     f"max |y - Alg.1| = {err.max():.2e} (bound {bound.max():.2e}); "
                     f"unbiased variance would differ by {np.abs(y - unbiased).max():.2e}")


@pytest.mark.claim("K02")
@pytest.mark.parametrize("training", [False, None])
@pytest.mark.parametrize("batch", [1, 2, 60])
def test_inference_mode_uses_moving_statistics(verdict, keras, device, rng, batch, training):
    layer = probes.make_bn(keras, UNITS, rng)
    x = _inputs(rng, batch)
    s = probes.bn_state(layer)
    y = np.asarray(layer(x) if training is None else layer(x, training=training), np.float64)

    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    err = np.abs(y - ref)
    verdict.record(max_abs_err=err.max(), max_bound=bound.max(), worst_err_over_bound=(err / bound).max())
    verdict.conclude(bool(np.all(err <= bound)), f"max |y - inference formula| = {err.max():.2e} (bound {bound.max():.2e})")


@pytest.mark.claim("K03")
@pytest.mark.parametrize("momentum", [0.99, 0.9])
@pytest.mark.parametrize("batch", [2, 60])
@pytest.mark.parametrize("training", [True, False])
def test_moving_statistics_update_rule(verdict, keras, rng, batch, momentum, training):
    layer = probes.make_bn(keras, UNITS, rng, momentum=momentum)
    x = _inputs(rng, batch)
    s = probes.bn_state(layer)
    layer(x, training=training)
    after = probes.bn_state(layer)

    if training:
        mean, var = reference.batch_stats(x)
        exp_mean, exp_var = reference.ema(s["mean"], mean, momentum), reference.ema(s["var"], var, momentum)
        b_mean, b_var = reference.ema_bounds(x, s["mean"], s["var"], momentum)
    else:  # inference must not assign at all: bitwise equal
        exp_mean, exp_var, b_mean, b_var = s["mean"], s["var"], 0.0, 0.0
    e_mean, e_var = np.abs(after["mean"] - exp_mean), np.abs(after["var"] - exp_var)
    ok = bool(np.all(e_mean <= b_mean) and np.all(e_var <= b_var))
    verdict.record(max_err_mean=e_mean.max(), max_err_var=e_var.max(), bound_mean=np.max(b_mean),
                   bound_var=np.max(b_var), moving_mean_change=np.abs(after["mean"] - s["mean"]).max())
    verdict.conclude(ok, f"moving mean off by {e_mean.max():.2e} (bound {np.max(b_mean):.2e}), "
                         f"variance by {e_var.max():.2e} (bound {np.max(b_var):.2e})")


@pytest.mark.claim("N06")
@pytest.mark.parametrize("units", [3, 100])
def test_batch_of_one_outputs_beta(verdict, keras, device, rng, units):
    layer = probes.make_bn(keras, units, rng)
    s = probes.bn_state(layer)
    xs = _inputs(rng, 8, units)  # eight different single-example batches
    worst, worst_ratio = 0.0, 0.0
    for row in xs:
        y = np.asarray(layer(row[None, :], training=True), np.float64)[0]
        err = np.abs(y - s["beta"])
        bound = reference.batch_of_one_bound(row, s["gamma"], s["beta"], s["eps"])
        worst, worst_ratio = max(worst, err.max()), max(worst_ratio, (err / bound).max())
    verdict.record(max_abs_diff_from_beta=worst, worst_err_over_bound=worst_ratio, inputs=len(xs),
                   input_spread=float(np.ptp(xs, axis=0).max()))
    verdict.conclude(worst_ratio <= 1.0, f"max |y - beta| = {worst:.2e} over {len(xs)} different inputs "
                                         f"(<= {worst_ratio:.2f} x its float32 bound)")
