"""What Keras' documentation promises about BatchNormalization's arguments: defaults, dtype
policies, masks, `synchronized`, `renorm` and `axis`. Each output is compared with the numpy
float64 reference (bnspec.reference) within a float32 rounding bound."""

import numpy as np
import pytest

from bnspec import probes, reference


@pytest.mark.claim("K08")
@pytest.mark.parametrize("units", [3, 100])
def test_initial_state_and_defaults(verdict, keras, units):
    layer = keras.layers.BatchNormalization()
    layer.build((None, units))
    s = probes.bn_state(layer)
    found = {"gamma": s["gamma"], "beta": s["beta"], "moving_mean": s["mean"], "moving_variance": s["var"]}
    wanted = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}
    off = {k: float(np.abs(v - wanted[k]).max()) for k, v in found.items()}
    momentum, eps = float(layer.momentum), float(layer.epsilon)
    verdict.record(momentum=momentum, epsilon=eps, **{f"max_dev_{k}": v for k, v in off.items()})
    verdict.conclude(all(v == 0.0 for v in off.values()) and momentum == 0.99 and eps == 1e-3,
                     f"gamma/beta/mean/var start at {[float(v[0]) for v in found.values()]}, "
                     f"momentum {momentum}, epsilon {eps}")


@pytest.mark.claim("K09")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_mixed_precision_computes_in_float32(verdict, keras, device, rng, dtype, training):
    units, batch = 16, 60
    layer = probes.make_bn(keras, units, rng, dtype=dtype)
    layer.moving_mean.assign((200 + rng.normal(0, 1, units)).astype(np.float32))
    x = (200 + rng.normal(0, 3, (batch, units))).astype(np.float32)
    s = probes.bn_state(layer)
    y = layer(x, training=training)
    out_dtype, var_dtypes = str(np.dtype(y.dtype.name if hasattr(y.dtype, "name") else y.dtype)), \
        sorted({str(np.dtype(getattr(w.dtype, "name", w.dtype))) for w in layer.weights})
    y = np.asarray(y, np.float64)
    mixed = dtype == "mixed_float16"
    xin = x.astype(np.float16).astype(np.float64) if mixed else x.astype(np.float64)  # the layer casts inputs
    if training:
        ref, mean, var = reference.bn_train(xin, s["gamma"], s["beta"], s["eps"])
        bound = reference.bn_bound(xin, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=batch)
    else:
        ref = reference.bn_inference(xin, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
        bound = reference.bn_bound(xin, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    if mixed:  # one final rounding of the float32 result to float16
        bound = reference.float16_output_bound(ref, bound)
    err = np.abs(y - ref)
    with np.errstate(over="ignore", invalid="ignore"):  # what a float16 computation would do: overflow
        sumsq16 = float(np.sum(xin.astype(np.float16) ** 2, axis=0, dtype=np.float16).max())
    want_out = "float16" if mixed else "float32"
    verdict.record(output_dtype=out_dtype, variable_dtypes=var_dtypes, max_abs_err=err.max(), max_bound=bound.max(),
                   float16_sum_of_squares=sumsq16)
    verdict.conclude(bool(np.all(err <= bound)) and out_dtype == want_out and var_dtypes == ["float32"],
                     f"{dtype}: output {out_dtype}, variables {var_dtypes}, max |y - float32 reference| "
                     f"{err.max():.2e} (bound {bound.max():.2e}; float16 sum of x^2 would be {sumsq16})")


@pytest.mark.claim("K10")
@pytest.mark.parametrize("mask_via", ["argument", "masking_layer"])
def test_mask_excludes_steps_from_statistics(verdict, keras, rng, mask_via):
    batch, steps, units = 8, 10, 4
    x = (rng.normal(0, 1, (batch, steps, units)) * 2 + 1).astype(np.float32)
    mask = rng.random((batch, steps)) > 0.3
    mask[:, 0] = True
    x[~mask] = 0.0 if mask_via == "masking_layer" else 50.0  # masked steps far off: they would shift the mean
    layer = probes.make_bn(keras, units, rng, input_shape=(None, steps, units))
    s = probes.bn_state(layer)
    if mask_via == "argument":
        y = layer(x, training=True, mask=mask)
    else:
        model = keras.Sequential([keras.Input(shape=(steps, units)), keras.layers.Masking(mask_value=0.0), layer])
        y = model(x, training=True)
    y = np.asarray(y, np.float64)[mask]
    kept = x[mask]  # (n_unmasked, units)
    ref, mean, var = reference.bn_train(kept, s["gamma"], s["beta"], s["eps"])
    bound = reference.bn_bound(kept, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=x.shape[0] * steps)
    unmasked_ref = reference.bn_train(x.reshape(-1, units), s["gamma"], s["beta"], s["eps"])[0].reshape(x.shape)[mask]
    err = np.abs(y - ref)
    verdict.record(max_abs_err=err.max(), max_bound=bound.max(), masked_fraction=float(1 - mask.mean()),
                   diff_if_mask_ignored=np.abs(y - unmasked_ref).max())
    verdict.conclude(bool(np.all(err <= bound)),
                     f"unmasked steps vs statistics over unmasked steps only: max err {err.max():.2e} "
                     f"(bound {bound.max():.1e}); with the mask ignored they would differ by "
                     f"{np.abs(unmasked_ref - ref).max():.2f}")


@pytest.mark.claim("K11")
@pytest.mark.parametrize("training", [True, False])
def test_synchronized_single_replica_equals_plain(verdict, keras, rng, training):
    units, batch, momentum = 32, 60, 0.9
    plain = probes.make_bn(keras, units, rng, momentum=momentum)
    synced = keras.layers.BatchNormalization(momentum=momentum, synchronized=True)
    synced.build((None, units))
    s = probes.bn_state(plain)
    probes.set_bn_state(synced, s)
    x = (rng.normal(0, 2, (batch, units)) + rng.normal(0, 1, units)).astype(np.float32)
    y_plain, y_sync = (np.asarray(layer(x, training=training), np.float64) for layer in (plain, synced))
    if training:
        mean, var = reference.batch_stats(x)
        bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=batch)
        b_mean, b_var = reference.ema_bounds(x, s["mean"], s["var"], momentum)
    else:
        bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
        b_mean = b_var = np.zeros(units)
    # both are within the bound of the exact result, so of each other within twice the bound
    d_out = np.abs(y_plain - y_sync)
    d_mean = np.abs(plain.moving_mean.numpy() - synced.moving_mean.numpy())
    d_var = np.abs(plain.moving_variance.numpy() - synced.moving_variance.numpy())
    ok = bool(np.all(d_out <= 2 * bound) and np.all(d_mean <= 2 * b_mean) and np.all(d_var <= 2 * b_var))
    verdict.record(max_output_diff=d_out.max(), output_bound=2 * bound.max(), max_moving_mean_diff=d_mean.max(),
                   max_moving_var_diff=d_var.max())
    verdict.conclude(ok, f"synchronized vs plain: outputs differ by {d_out.max():.2e} (bound {2 * bound.max():.1e}), "
                         f"moving mean by {d_mean.max():.2e}, variance by {d_var.max():.2e}")


@pytest.mark.claim("K12")
@pytest.mark.parametrize("training", [False, None])
def test_renorm_inference_equals_plain(verdict, keras, rng, training):
    units = 32
    plain = probes.make_bn(keras, units, rng)
    renorm = keras.layers.BatchNormalization(renorm=True)
    renorm.build((None, units))
    s = probes.bn_state(plain)
    probes.set_bn_state(renorm, s)
    x = (rng.normal(0, 2, (60, units)) + rng.normal(0, 1, units)).astype(np.float32)
    y = np.asarray(renorm(x) if training is None else renorm(x, training=training), np.float64)
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    err = np.abs(y - ref)
    verdict.record(max_abs_err=err.max(), max_bound=bound.max(),
                   renorm_variables=[getattr(w, "path", None) or w.name for w in renorm.weights])
    verdict.conclude(bool(np.all(err <= bound)),
                     f"renorm layer in inference: max |y - plain inference formula| {err.max():.2e} (bound {bound.max():.1e})")


AXIS_CASES = {  # layout -> (input shape, axis)
    "dense_axis-1": ((60, 12), -1),
    "dense_axis1": ((60, 12), 1),
    "nhwc_axis-1": ((8, 5, 5, 6), -1),
    "nhwc_axis3": ((8, 5, 5, 6), 3),
    "nchw_axis1": ((8, 6, 5, 5), 1),
}


@pytest.mark.claim("K15")
@pytest.mark.parametrize("layout", list(AXIS_CASES))
def test_axis_is_the_feature_axis(verdict, keras, device, rng, layout):
    shape, axis = AXIS_CASES[layout]
    features = shape[axis]
    layer = probes.make_bn(keras, features, rng, input_shape=(None,) + shape[1:], axis=axis)
    s = probes.bn_state(layer)
    bshape = [1] * len(shape)
    bshape[axis] = features
    x = (rng.normal(0, 1, shape) * rng.uniform(0.5, 3, bshape) + rng.normal(0, 2, bshape)).astype(np.float32)
    y = np.asarray(layer(x, training=True), np.float64)
    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], s["eps"], axis=axis)
    m = x.size // features
    bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, s["eps"], axis=axis, n_reduce=m)
    err = np.abs(y - ref)
    moved = np.asarray(layer.moving_mean.numpy(), np.float64)
    exp_moved = reference.ema(s["mean"], mean, float(layer.momentum))
    b_mean, _ = reference.ema_bounds(x, s["mean"], s["var"], float(layer.momentum), axis=axis)
    ok = bool(np.all(err <= bound) and np.all(np.abs(moved - exp_moved) <= b_mean))
    verdict.record(features=features, reduced_over=m, max_abs_err=err.max(), max_bound=bound.max(),
                   moving_mean_err=np.abs(moved - exp_moved).max())
    verdict.conclude(ok, f"{layout}: {features} features, statistics over {m} values each; "
                         f"max err {err.max():.2e} (bound {bound.max():.1e})")


@pytest.mark.claim("K16")
@pytest.mark.parametrize("layout", ["dense_axis-1", "nhwc_axis-1", "nchw_axis1"])
def test_moving_variance_is_biased_for_every_rank(verdict, keras, rng, layout):
    shape, axis = AXIS_CASES[layout]
    features = shape[axis]
    layer = probes.make_bn(keras, features, rng, input_shape=(None,) + shape[1:], axis=axis, momentum=0.0)
    s = probes.bn_state(layer)
    x = (rng.normal(0, 2, shape) + 1).astype(np.float32)
    layer(x, training=True)  # momentum 0: the moving variance becomes this batch's variance
    _, var = reference.batch_stats(x, axis)
    m = x.size // features
    _, b_var = reference.ema_bounds(x, s["mean"], s["var"], 0.0, axis=axis)
    got = np.asarray(layer.moving_variance.numpy(), np.float64)
    err_biased, err_unbiased = np.abs(got - var), np.abs(got - var * m / (m - 1))
    assert np.all(np.abs(var / (m - 1)) > 2 * b_var), "cannot tell biased from unbiased here"
    verdict.record(ratio_to_biased=float((got / var).mean()), unbiased_factor=m / (m - 1), max_err_biased=err_biased.max(),
                   max_err_unbiased=err_unbiased.max(), bound=b_var.max(), elements_per_feature=m)
    verdict.conclude(bool(np.all(err_biased <= b_var)),
                     f"{layout}: moving variance / biased batch variance = {(got / var).mean():.5f} "
                     f"(m/(m-1) = {m / (m - 1):.5f}, bound {float((b_var / var).max()):.1e} relative)")
