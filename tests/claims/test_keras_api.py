"""What Keras' documentation promises about BatchNormalization's arguments: defaults, dtype
policies, masks, `synchronized`, `renorm` and `axis`. Each output is compared with the numpy
float64 reference (bnspec.reference) within a float32 rounding bound, and each case shows that it
could tell the claim from its alternative (`verdict.power`)."""

import numpy as np
import pytest

from bnspec import reference
from tests.claims import _kit as probes
from bnspec.measure.backend import to_numpy
from bnspec.measure.verdict import not_applicable


# --------------------------------------------------------------------------- helpers

F16_MAX = float(np.finfo(np.float16).max)  # 65504

AXIS_CASES = {  # layout -> (input shape, axis)
    "dense_axis-1": ((60, 12), -1),
    "dense_axis1": ((60, 12), 1),
    "nhwc_axis-1": ((8, 5, 5, 6), -1),
    "nhwc_axis3": ((8, 5, 5, 6), 3),
    "nchw_axis1": ((8, 6, 5, 5), 1),
}


def _float16_alternative(x16, gamma, beta, mean, var, eps):
    """What a float16 computation (no float32 upcast) would return, evaluated in numpy float16 (each
    operation rounded to float16) in TensorFlow's order: inv = gamma * rsqrt(var + eps),
    y = x * inv + (beta - mean * inv); the statistics arrive rounded to float16."""
    f = np.float16
    x, m, v = np.asarray(x16, f), np.asarray(mean, f), np.asarray(var, f)
    inv = (np.asarray(gamma, f) / np.sqrt(v + f(eps))).astype(f)
    return (x * inv + (np.asarray(beta, f) - m * inv)).astype(np.float64)


@pytest.mark.claim("K08")
@pytest.mark.parametrize("units", [3, 100])
def test_initial_state_and_defaults(verdict, keras, units):
    """A new layer's gamma, beta, moving mean and variance (bitwise 1, 0, 0, 1), momentum 0.99, epsilon 1e-3."""
    layer = keras.layers.BatchNormalization()
    layer.build((None, units))
    s = probes.bn_state(layer)
    found = {"gamma": s["gamma"], "beta": s["beta"], "moving_mean": s["mean"], "moving_variance": s["var"]}
    wanted = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}
    # the initial values are exact constants: bitwise equality (a list, so that every variable is recorded)
    same = [verdict.equal(f"initial_{k}", v, np.full(units, wanted[k])) for k, v in found.items()]
    momentum, eps = float(layer.momentum), float(layer.epsilon)
    verdict.record(momentum=momentum, epsilon=eps)
    verdict.conclude(all(same) and momentum == 0.99 and eps == 1e-3,
                     f"gamma/beta/mean/var start at {[float(v[0]) for v in found.values()]}, "
                     f"momentum {momentum}, epsilon {eps}")


@pytest.mark.claim("K09")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_mixed_precision_computes_in_float32(verdict, keras, device, rng, dtype, training):
    """Output and variable dtypes, and the output vs the float32 computation's reference, float32 and mixed."""
    units, batch = 16, 60
    layer = probes.make_bn(keras, units, rng, dtype=dtype)
    layer.moving_mean.assign((200 + rng.normal(0, 1, units)).astype(np.float32))
    x = (200 + rng.normal(0, 3, (batch, units))).astype(np.float32)
    s = probes.bn_state(layer)
    y = to_numpy(layer(x, training=training))
    out_dtype, var_dtypes = str(y.dtype), sorted({str(np.dtype(getattr(w.dtype, "name", w.dtype))) for w in layer.weights})
    y = y.astype(np.float64)
    mixed = dtype == "mixed_float16"
    xin = x.astype(np.float16).astype(np.float64) if mixed else x.astype(np.float64)  # the layer casts inputs
    if training:
        ref, mean, var = reference.bn_train(xin, s["gamma"], s["beta"], s["eps"])
        bound = reference.bn_bound(xin, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=batch)
    else:
        mean, var = s["mean"], s["var"]
        ref = reference.bn_inference(xin, s["gamma"], s["beta"], mean, var, s["eps"])
        bound = reference.bn_bound(xin, s["gamma"], s["beta"], mean, var, s["eps"])
    if mixed:  # one final rounding of the float32 result to float16
        bound = reference.float16_output_bound(ref, bound)
        # the alternative the claim rules out: the same formula evaluated in float16 (numpy float16: the
        # alternative's own rounding is in it, 1x)
        verdict.power("float16_computation_alternative",
                      _float16_alternative(xin, s["gamma"], s["beta"], mean, var, s["eps"]) - ref, bound, measured=True)
    ok = verdict.within("output_err", y - ref, bound)
    if mixed and not training:
        # the mechanism of older Keras 3 releases (seen on 3.0.5): under the mixed policy the float32
        # variables (moving statistics, gamma, beta) are read through autocast, i.e. rounded to float16,
        # before the float32 computation
        g16, b16_, m16, v16 = (np.asarray(a, np.float32).astype(np.float16).astype(np.float64)
                               for a in (s["gamma"], s["beta"], mean, var))
        ref16 = reference.bn_inference(xin, g16, b16_, m16, v16, s["eps"])
        b16 = reference.float16_output_bound(ref16, reference.bn_bound(xin, g16, b16_, m16, v16, s["eps"]))
        verdict.mechanism("variables_read_as_float16",
                          verdict.within("output_vs_float16_variables", y - ref16, b16),
                          "outputs vs the reference with gamma, beta and the moving statistics rounded to float16")
    with np.errstate(over="ignore", invalid="ignore"):  # what a float16 sum of x^2 would do (the claim's note)
        sumsq16 = np.sum(xin.astype(np.float16) ** 2, axis=0, dtype=np.float16)
    overflows = bool(not np.all(np.isfinite(sumsq16)))
    verdict.record(output_dtype=out_dtype, variable_dtypes=var_dtypes,
                   float16_sum_of_squares_overflows=overflows,
                   sum_of_squares_float64=float(np.max(np.sum(xin**2, axis=0))), float16_max=F16_MAX)
    want_out = "float16" if mixed else "float32"
    verdict.conclude(ok and out_dtype == want_out and var_dtypes == ["float32"],
                     f"{dtype}: output {out_dtype}, variables {var_dtypes}, worst |y - float32 reference| "
                     f"{probes.within_text(verdict, 'output_err', bound_spec='.2e')}; a float16 sum of x^2 "
                     f"{'overflows' if overflows else 'does not overflow'}")


@pytest.mark.claim("K10")
@pytest.mark.parametrize("mask_via", ["argument", "masking_layer"])
def test_mask_excludes_steps_from_statistics(verdict, keras, rng, mask_via):
    """Training-mode outputs at the unmasked steps vs BN with the statistics of the unmasked steps only."""
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
    y = to_numpy(y, np.float64)[mask]
    kept = x[mask]  # (n_unmasked, units)
    ref, mean, var = reference.bn_train(kept, s["gamma"], s["beta"], s["eps"])
    # n_reduce: every step of the batch, an upper bound on the unmasked ones the statistics sum
    bound = reference.bn_bound(kept, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=x.shape[0] * steps)
    unmasked_ref = reference.bn_train(x.reshape(-1, units), s["gamma"], s["beta"], s["eps"])[0].reshape(x.shape)[mask]
    verdict.power("mask_ignored_alternative", unmasked_ref - ref, bound)
    ok = verdict.within("output_err", y - ref, bound)
    verdict.record(masked_fraction=float(1 - mask.mean()))
    verdict.conclude(ok, "unmasked steps vs statistics over unmasked steps only: worst err "
                         f"{probes.within_text(verdict, 'output_err')}; with the mask ignored they would differ by "
                         f"{probes.value_text(verdict, 'mask_ignored_alternative', '.2f')}")


@pytest.mark.claim("K11")
@pytest.mark.parametrize("training", [True, False])
def test_synchronized_single_replica_equals_plain(verdict, keras, backend_name, rng, training):
    """synchronized=True on one replica vs a plain layer with the same state: outputs and moving statistics."""
    probes.skip_if_synchronized_refused(keras, backend_name)  # TensorFlow-only, where Keras refuses it
    units, batch, momentum = 32, 60, 0.9
    plain = probes.make_bn(keras, units, rng, momentum=momentum)
    synced = keras.layers.BatchNormalization(momentum=momentum, synchronized=True)
    synced.build((None, units))
    s = probes.bn_state(plain)
    probes.set_bn_state(synced, s)
    x = (rng.normal(0, 2, (batch, units)) + rng.normal(0, 1, units)).astype(np.float32)
    y_plain, y_sync = (to_numpy(layer(x, training=training), np.float64) for layer in (plain, synced))
    if training:
        ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], s["eps"])
        bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=batch)
    else:
        ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
        bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    # both are within the bound of the exact result, so of each other within twice the bound; the
    # synchronized layer is also compared with the reference of the mode, so that two equally wrong
    # layers cannot make the claim hold
    ok = verdict.within("output_synchronized_vs_plain", y_sync - y_plain, 2 * bound)
    ok &= verdict.within("output_synchronized_vs_reference", y_sync - ref, bound)
    moving = {}
    for name, attr in (("moving_mean", "moving_mean"), ("moving_variance", "moving_variance")):
        moving[name] = tuple(to_numpy(getattr(lyr, attr), np.float64) for lyr in (plain, synced))
    if training:
        b_mean, b_var = reference.ema_bounds(x, s["mean"], s["var"], momentum)
        exp_mean, exp_var = reference.ema(s["mean"], mean, momentum), reference.ema(s["var"], var, momentum)
        for name, b, exp in (("moving_mean", b_mean, exp_mean), ("moving_variance", b_var, exp_var)):
            p, q = moving[name]
            ok &= verdict.within(f"{name}_synchronized_vs_plain", q - p, 2 * b)
            ok &= verdict.within(f"{name}_synchronized_vs_reference", q - exp, b)
    else:  # inference never touches the moving statistics: bitwise what both layers started with
        ok &= verdict.equal("moving_mean_synchronized_vs_plain", moving["moving_mean"][1], moving["moving_mean"][0])
        ok &= verdict.equal("moving_variance_synchronized_vs_plain", moving["moving_variance"][1],
                            moving["moving_variance"][0])
        ok &= verdict.equal("moving_mean_unchanged", moving["moving_mean"][1], s["mean"])
    verdict.conclude(ok, f"synchronized vs plain (training={training}): outputs differ by "
                         f"{probes.within_text(verdict, 'output_synchronized_vs_plain')}; moving statistics "
                         f"{'within their EMA bounds' if training else 'bitwise equal'} where ok")


@pytest.mark.claim("K12")
@pytest.mark.parametrize("training", [False, None])
def test_renorm_inference_equals_plain(verdict, keras, rng, training):
    """A renorm=True layer in inference vs the plain inference formula and a plain layer with the same state."""
    units, batch = 32, 60
    plain = probes.make_bn(keras, units, rng)
    renorm = probes.bn_layer(keras, renorm=True)
    renorm.build((None, units))
    s = probes.bn_state(plain)
    probes.set_bn_state(renorm, s)
    x = (rng.normal(0, 2, (batch, units)) + rng.normal(0, 1, units)).astype(np.float32)
    call = (lambda lyr: lyr(x)) if training is None else (lambda lyr: lyr(x, training=training))  # noqa: E731
    y, y_plain = (to_numpy(call(lyr), np.float64) for lyr in (renorm, plain))
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    # the alternative: renorm in training mode (batch statistics) in this call
    verdict.power("batch_statistics_alternative", reference.bn_train(x, s["gamma"], s["beta"], s["eps"])[0] - ref, bound)
    ok = verdict.within("output_err", y - ref, bound)
    ok &= verdict.within("renorm_vs_plain", y - y_plain, 2 * bound)  # each within `bound` of the same exact result
    ok &= verdict.equal("moving_mean_unchanged", to_numpy(renorm.moving_mean), s["mean"])
    verdict.record(renorm_variables=[probes.variable_name(w) for w in renorm.weights])
    verdict.conclude(ok, "renorm layer in inference: worst |y - plain inference formula| "
                         f"{probes.within_text(verdict, 'output_err')}")


@pytest.mark.claim("K15")
@pytest.mark.parametrize("layout", list(AXIS_CASES))
def test_axis_is_the_feature_axis(verdict, keras, device, rng, layout):
    """Training-mode output and moving mean for each `axis` vs BN with statistics per feature along that axis."""
    shape, axis = AXIS_CASES[layout]
    features = shape[axis]
    layer = probes.make_bn(keras, features, rng, input_shape=(None,) + shape[1:], axis=axis)
    s = probes.bn_state(layer)
    bshape = [1] * len(shape)
    bshape[axis] = features
    x = probes.feature_inputs(rng, shape, axis)
    y = to_numpy(layer(x, training=True), np.float64)
    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], s["eps"], axis=axis)
    m = x.size // features
    bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, s["eps"], axis=axis, n_reduce=m)
    # alternatives with the wrong reduction axes: statistics pooled over every axis (features mixed),
    # and for 4-D inputs per activation (over the batch axis only, not shared over locations)
    g, b = (np.asarray(v, np.float64).reshape(bshape) for v in (s["gamma"], s["beta"]))
    xd = x.astype(np.float64)
    verdict.power("pooled_statistics_alternative", g * (xd - xd.mean()) / np.sqrt(xd.var() + s["eps"]) + b - ref, bound)
    if len(shape) == 4:
        mu, v = xd.mean(axis=0, keepdims=True), xd.var(axis=0, keepdims=True)
        verdict.power("per_activation_alternative", g * (xd - mu) / np.sqrt(v + s["eps"]) + b - ref, bound)
    ok = verdict.within("output_err", y - ref, bound)
    moved = to_numpy(layer.moving_mean, np.float64)
    exp_moved = reference.ema(s["mean"], mean, float(layer.momentum))
    b_mean, _ = reference.ema_bounds(x, s["mean"], s["var"], float(layer.momentum), axis=axis)
    ok &= verdict.within("moving_mean_err", moved - exp_moved, b_mean)
    verdict.record(features=features, reduced_over=m)
    verdict.conclude(ok, f"{layout}: {features} features, statistics over {m} values each; "
                         f"worst err {probes.within_text(verdict, 'output_err')}")


@pytest.mark.claim("K16")
@pytest.mark.parametrize("layout", ["dense_axis-1", "nhwc_axis-1", "nchw_axis1"])
def test_moving_variance_is_biased_for_every_rank(verdict, keras, rng, layout):
    """Moving variance after one momentum-0 call vs the biased batch variance (not m/(m-1) times it)."""
    shape, axis = AXIS_CASES[layout]
    features = shape[axis]
    layer = probes.make_bn(keras, features, rng, input_shape=(None,) + shape[1:], axis=axis, momentum=0.0)
    s = probes.bn_state(layer)
    x = (rng.normal(0, 2, shape) + 1).astype(np.float32)
    layer(x, training=True)  # momentum 0: the moving variance becomes this batch's variance
    _, var = reference.batch_stats(x, axis)
    m = x.size // features
    k = m / (m - 1)
    _, b_var = reference.ema_bounds(x, s["mean"], s["var"], 0.0, axis=axis)
    # the unbiased variance is the biased one (error <= b_var) times m/(m-1) (rounded: <= 2 more
    # roundings of the result)
    b_unbiased = k * b_var + 2 * reference.U32 * k * var
    got = to_numpy(layer.moving_variance, np.float64)
    # biased and unbiased predictions differ by var/(m-1): where that exceeds b_var + b_unbiased, no
    # value is within both bounds, so the test tells them apart
    verdict.power("biased_vs_unbiased", var / (m - 1), b_var + b_unbiased, measured=True)
    ok = verdict.within("err_biased", got - var, b_var)
    unbiased = verdict.within("err_unbiased", got - var * k, b_unbiased)
    verdict.mechanism("unbiased_moving_variance", unbiased, "moving variance vs m/(m-1) x batch variance: worst err "
                      f"{probes.within_text(verdict, 'err_unbiased', bound_spec='.2e')}")
    ratio = float(np.mean(got / var))
    verdict.record(ratio_to_biased=ratio, unbiased_factor=k, elements_per_feature=m)
    verdict.conclude(ok, f"{layout}: moving variance / biased batch variance = {ratio:.5f} "
                         f"(m/(m-1) = {k:.5f}, bound {float(np.max(b_var / var)):.1e} relative)")


# --------------------------------------------------------------------------- K17: renorm's training output

U32 = reference.U32
RENORM_CLIPPING = {"none": None, "rmax_dmax": {"rmax": 1.5, "rmin": 1 / 1.5, "dmax": 0.5}}


def _clip(v, lo, hi):
    return np.clip(v, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def _renorm_reference(x, s, r_mean, r_std, clipping, floor=True):
    """The claim's renorm training output in float64 and its float32 bound: (y, r, d, bound).

    Exact: sigma_B = sqrt(var_B + eps), sigma_R = max(renorm_stddev, sqrt(eps)) (without the floor when
    `floor` is False: an alternative), r = clip(sigma_B / sigma_R, rmin, rmax), d = clip((mu_B - mu_R) /
    sigma_R, -dmax, dmax), y = gamma * (x_hat * r + d) + beta.

    float32 (first order): the batch statistics err by d_mean <= m u mean|x| and d_var <= 2 (m + 2) u
    mean(x^2) (as reference.bn_bound); sigma_B then relatively by d_var / (2 (var + eps)) + 2u (the add and
    the sqrt), sigma_R by u (sqrt(eps) rounded; renorm_stddev is read exactly), r = sigma_B / sigma_R by
    their sum + u; clipping is 1-Lipschitz and its limits are rounded to float32 (u |r|): dr <= r0 e_r + u r.
    d: the numerator mu_B - mu_R errs by d_mean + u |mu_B - mu_R|, the division adds |d0| (e_sigma_R + u),
    the limits u |d|. Keras composes scale r * gamma (dg <= |gamma| dr + u |r gamma|) and offset d * gamma +
    beta (db <= |gamma| dd + u (2 |d gamma| + |beta|)) and normalises: reference.bn_bound with that scale and
    offset (statistics over m values) plus |x_hat| dg + db."""
    x = np.asarray(x, np.float64)
    m = x.shape[0]
    g, b, eps = s["gamma"], s["beta"], s["eps"]
    mean, var = reference.batch_stats(x)
    sig_b = np.sqrt(var + eps)
    sig_r = np.maximum(r_std, np.sqrt(eps)) if floor else np.asarray(r_std, np.float64)
    clip = clipping or {}
    r0, d0 = sig_b / sig_r, (mean - r_mean) / sig_r
    r = _clip(r0, clip.get("rmin"), clip.get("rmax"))
    dmax = clip.get("dmax")
    d = _clip(d0, None if dmax is None else -dmax, dmax)
    x_hat = (x - mean) / sig_b
    y = g * (x_hat * r + d) + b
    d_mean = m * U32 * np.abs(x).mean(axis=0)
    d_var = 2 * (m + 2) * U32 * (x**2).mean(axis=0)
    e_r0 = d_var / (2 * (var + eps)) + 2 * U32 + U32 + U32
    dr = r0 * e_r0 + U32 * r
    dd = (d_mean + U32 * np.abs(mean - r_mean)) / sig_r + np.abs(d0) * 2 * U32 + U32 * np.abs(d)
    g_eff, b_eff = r * g, d * g + b
    dg = np.abs(g) * dr + U32 * np.abs(g_eff)
    db = np.abs(g) * dd + U32 * (2 * np.abs(d * g) + np.abs(b))
    bound = reference.bn_bound(x, g_eff, b_eff, mean, var, eps, n_reduce=m) + np.abs(x_hat) * dg + db
    return y, r, d, bound


@pytest.mark.claim("K17")
@pytest.mark.parametrize("clipping", list(RENORM_CLIPPING))
def test_renorm_training_output(verdict, keras, rng, clipping):
    """renorm=True in training mode vs gamma * (x_hat * r + d) + beta with r, d from the renorm statistics."""
    units, batch = 8, 32
    kwargs = {"renorm_clipping": RENORM_CLIPPING[clipping]} if RENORM_CLIPPING[clipping] else {}
    layer = probes.bn_layer(keras, renorm=True, momentum=0.9, renorm_momentum=0.9, **kwargs)
    layer.build((None, units))
    probes.randomise_bn(layer, rng)
    # renorm statistics away from the batch's; the last two features' renorm_stddev below sqrt(eps)
    r_mean = rng.normal(0.0, 2.0, units).astype(np.float32)
    r_std = rng.uniform(0.5, 3.0, units).astype(np.float32)
    r_std[-2:] = 0.01
    layer.renorm_mean.assign(r_mean)
    layer.renorm_stddev.assign(r_std)
    s = probes.bn_state(layer)
    x = probes.feature_inputs(rng, (batch, units), -1)
    y = to_numpy(layer(x, training=True), np.float64)
    clip = RENORM_CLIPPING[clipping]
    ref, r, d, bound = _renorm_reference(x, s, r_mean.astype(np.float64), r_std.astype(np.float64), clip)
    ok = verdict.within("output_vs_renorm_reference", y - ref, bound)
    # the alternatives, each exact (float64): plain BN (r = 1, d = 0: the correction not applied), and
    # sigma_R without its sqrt(eps) floor; with clipping, r or d left unclipped
    plain = reference.bn_train(x, s["gamma"], s["beta"], s["eps"])[0]
    verdict.power("plain_bn_alternative", plain - ref, bound)
    if not clip:  # (with clipping, the limits hide the floor: r and d are clipped either way there)
        unfloored = _renorm_reference(x, s, r_mean.astype(np.float64), r_std.astype(np.float64), clip, floor=False)[0]
        verdict.power("unfloored_renorm_stddev_alternative", unfloored - ref, bound)
    else:
        for key, drop in (("r", ("rmin", "rmax")), ("d", ("dmax",))):
            loose = {k: v for k, v in clip.items() if k not in drop}
            alt = _renorm_reference(x, s, r_mean.astype(np.float64), r_std.astype(np.float64), loose)[0]
            verdict.power(f"{key}_unclipped_alternative", alt - ref, bound)
    clip = clip or {}
    verdict.record(r_range=[float(np.min(r)), float(np.max(r))], d_range=[float(np.min(d)), float(np.max(d))],
                   r_clipped=int(np.sum((r == clip.get("rmax", np.inf)) | (r == clip.get("rmin", -np.inf)))),
                   d_clipped=int(np.sum(np.abs(d) == clip.get("dmax", np.inf))))
    verdict.conclude(ok, f"renorm_clipping {clipping}: |y - gamma (x_hat r + d) - beta| "
                         f"{probes.within_text(verdict, 'output_vs_renorm_reference')} (ratio "
                         f"{probes.ratio_text(verdict, 'output_vs_renorm_reference')}); r in "
                         f"[{np.min(r):.3g}, {np.max(r):.3g}], d in [{np.min(d):.3g}, {np.max(d):.3g}]; plain BN would "
                         f"differ by {probes.value_text(verdict, 'plain_bn_alternative', '.3g')}")


# --------------------------------------------------------------------------- K18: float64 layers

U64_OVER_U32 = 2.0**-29  # float64's unit roundoff 2^-53 over float32's 2^-24


def _float64_not_held(keras, backend_name: str) -> None:
    """Not applicable where this Keras cannot hold a float64 value at all (measured, not assumed): JAX without
    jax_enable_x64 gives a keras.Variable(dtype='float64') float32 values. Elsewhere a float32 value is the
    claim's business (the test measures it)."""
    held = str(to_numpy(keras.Variable(np.zeros(2), dtype="float64")).dtype) if hasattr(keras, "Variable") else "float64"
    if held != "float64" and backend_name == "jax":
        not_applicable(f"Keras on JAX holds float64 only with jax_enable_x64: keras.Variable(dtype='float64') holds "
                       f"{held} values here")


@pytest.mark.claim("K18")
@pytest.mark.parametrize("mean", [1.0, 1e4])
@pytest.mark.parametrize("mode", ["training", "inference"])
def test_float64_layer_computes_in_float64(verdict, keras, backend_name, rng, mode, mean):
    """A dtype='float64' layer's output (dtype, values) and moving statistics vs the float64 reference, float64 bounds."""
    _float64_not_held(keras, backend_name)
    units, batch, momentum = 8, 60, 0.9
    layer = keras.layers.BatchNormalization(dtype="float64", momentum=momentum)
    layer.build((None, units))
    gamma, beta = rng.uniform(0.5, 2.0, units), rng.normal(0.0, 1.0, units)
    mov_mean, mov_var = mean + rng.normal(0.0, 1.0, units), rng.uniform(0.5, 4.0, units)  # near the inputs
    for var, value in ((layer.gamma, gamma), (layer.beta, beta), (layer.moving_mean, mov_mean),
                       (layer.moving_variance, mov_var)):
        var.assign(value)  # float64 values: exact in float64 variables
    s = {"gamma": gamma, "beta": beta, "mean": mov_mean, "var": mov_var, "eps": float(layer.epsilon)}
    x = mean + rng.normal(0.0, 1.0, (batch, units)) * rng.uniform(0.5, 2.0, units)  # float64 inputs
    out = to_numpy(layer(x, training=mode == "training"))
    out_dtype = str(out.dtype)
    var_dtypes = sorted({str(to_numpy(w).dtype) for w in layer.weights})
    bad = verdict.count_nonfinite("nonfinite_outputs", out)  # a float64 computation of these inputs has none
    if mode == "training":
        ref, bmean, bvar = reference.bn_train(x, gamma, beta, s["eps"])
        b32 = reference.bn_bound(x, gamma, beta, bmean, bvar, s["eps"], n_reduce=batch)
    else:
        ref = reference.bn_inference(x, gamma, beta, mov_mean, mov_var, s["eps"])
        b32 = reference.bn_bound(x, gamma, beta, mov_mean, mov_var, s["eps"])
    # the float64 bound: reference.bn_bound is first order in the unit roundoff (a sum of terms c * u32), so
    # the same evaluation in float64 is within bn_bound * 2^-29; the numpy float64 reference rounds too (by the
    # same kind of bound): the two are within twice that
    bound = 2 * U64_OVER_U32 * b32
    ok = bad == 0 and out_dtype == "float64" and var_dtypes == ["float64"]
    # the alternative: the same formula evaluated in float32 (numpy float32: measured, its rounding in it)
    x32, g32, be32 = (np.asarray(a, np.float32) for a in (x, gamma, beta))
    if mode == "training":
        m32, v32 = x32.mean(axis=0), x32.var(axis=0)
    else:
        m32, v32 = np.asarray(mov_mean, np.float32), np.asarray(mov_var, np.float32)
    inv32 = g32 / np.sqrt(v32 + np.float32(s["eps"]))
    y32 = x32 * inv32 + (be32 - m32 * inv32)
    verdict.power("float32_computation_alternative", y32.astype(np.float64) - ref, bound, measured=True)
    # the mechanism of a refutation, float32 arithmetic inside: the outputs (where finite; else the moving
    # statistics) within the float32 bound of the reference and beyond the float64 one
    float32_like = False
    if bad == 0:
        out64 = verdict.within("output_vs_float64_reference", out.astype(np.float64) - ref, bound)
        ok &= out64
        float32_like = verdict.within("output_vs_float32_bound", out.astype(np.float64) - ref, b32) and not out64
    if mode == "training":  # one EMA step of the float64 moving statistics, within float64 rounding
        want_m, want_v = reference.ema(mov_mean, bmean, momentum), reference.ema(mov_var, bvar, momentum)
        e_m, e_v = reference.ema_bounds(x, mov_mean, mov_var, momentum)
        got_m, got_v = (to_numpy(v).astype(np.float64) for v in (layer.moving_mean, layer.moving_variance))
        stats64 = verdict.within("moving_mean_vs_float64_ema", got_m - want_m, 2 * U64_OVER_U32 * e_m)
        stats64 &= verdict.within("moving_variance_vs_float64_ema", got_v - want_v, 2 * U64_OVER_U32 * e_v)
        ok &= stats64
        # tf_keras' mechanism: the update moving - (moving - batch) * decay in float64, with decay = 1 - momentum
        # converted to a float32 tensor first (tf.convert_to_tensor of a Python float), then cast to float64
        decay32 = float(np.float32(1.0 - momentum))
        alt_m, alt_v = (old - (old - new) * decay32 for old, new in ((mov_mean, bmean), (mov_var, bvar)))
        rounded = verdict.within("moving_statistics_vs_float32_decay_ema",
                                 np.concatenate([got_m - alt_m, got_v - alt_v]),
                                 2 * U64_OVER_U32 * np.concatenate([e_m, e_v]))
        verdict.mechanism("momentum_rounded_to_float32", rounded and not stats64,
                          f"moving statistics {'equal' if rounded else 'do not equal'} the float64 EMA with 1 - momentum "
                          f"rounded to float32 ({decay32!r}) within float64 rounding")
        stats32 = verdict.within("moving_statistics_vs_float32_bound", np.concatenate([got_m - want_m, got_v - want_v]),
                                 np.concatenate([e_m, e_v]))
        if bad:  # no finite output to judge: the statistics the same computation wrote
            float32_like = stats32 and not stats64
        verdict.record(moving_variance_relative_error=float(np.max(np.abs(got_v - want_v) / want_v)))
    verdict.mechanism("computes_in_float32", float32_like,
                      f"{'moving statistics' if bad else 'outputs'} {'within' if float32_like else 'not within'} the "
                      f"float32 bound of the reference and beyond the float64 one; output {out_dtype}, {bad} non-finite")
    verdict.record(output_dtype=out_dtype, variable_dtypes=var_dtypes)
    verdict.conclude(ok, f"{mode}, input mean {mean:g}: output {out_dtype} ({bad} non-finite), variables {var_dtypes}"
                         + (f"; |y - float64 reference| {probes.within_text(verdict, 'output_vs_float64_reference')}"
                            if bad == 0 else "")
                         + f"; a float32 computation would be {probes.value_text(verdict, 'float32_computation_alternative')}"
                           " off")
