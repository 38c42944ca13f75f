"""Field traps: numerical edge cases (C06, C08, C09, C10, C15, C16, C22, C26, C27, C28).

Single-layer experiments on whichever Keras flavour and backend the process tests (keras.ops, numpy and
bnspec.measure.backend only; C28 is about tf_keras' fused kernel and skips elsewhere). Every statistic and output
is compared with the float64 reference (bnspec.reference) within a float32 bound derived beside it, or
bitwise (verdict.equal); claims about NaN/inf count non-finite values (verdict.count_nonfinite), and any
other non-finite measurement is an error of the test.
"""

import warnings

import numpy as np
import pytest

from bnspec import reference
from tests.claims import _kit as probes
from bnspec.measure.verdict import finite
from bnspec.reference import U32


# --------------------------------------------------------------------------- helpers


def _dtype_name(variable) -> str:
    return str(getattr(variable.dtype, "name", variable.dtype))


@pytest.fixture
def tfkeras_only(run):
    if run.family != "tfkeras":
        pytest.skip("tf_keras' fused kernel: TensorFlow-specific (Keras 3 has no fused kernel and no fused/"
                    "virtual_batch_size arguments; K16 covers its biased moving variance)")


def _weighted_stats(x, w):
    """Weighted batch mean/variance per feature (last axis) over every other axis, in float64, and bounds
    on the float32 error of computing them (masked or weighted moments: sums over all n positions).

    Positions with weight 0 are read as 0 (a NaN there must not reach the float64 reference either).
    A float32 sum of n terms errs by <= n*u*sum|terms|; the weights (0, 0.5, 1) multiply exactly and
    sum exactly; one more rounding for the division (Keras 3 divides by count + 1e-7: relative 1e-7/count,
    below u for any count >= 2): d_mean <= (n+2)*u*E_w|x|. The variance (one- or
    two-pass) errs by <= (n+2)*u*E_w[x^2] for the sum of squares, plus the mean's error entering
    2*E_w|x-mean|*d_mean <= 2*(n+2)*u*E_w[x^2] (E|x-mu| <= sqrt(E x^2), E|x| <= sqrt(E x^2)), plus
    (n+2)*u*E_w[x]^2 for a one-pass subtraction: d_var <= 4*(n+2)*u*E_w[x^2]."""
    x = np.asarray(x, np.float64)
    f = x.shape[-1]
    w = np.broadcast_to(np.asarray(w, np.float64)[..., None], x.shape).reshape(-1, f)
    x = np.where(w > 0, x.reshape(-1, f), 0.0)
    n = x.shape[0]
    sw = w.sum(axis=0)
    mean = (w * x).sum(axis=0) / sw
    var = (w * (x - mean) ** 2).sum(axis=0) / sw
    d_mean = (n + 2) * U32 * (w * np.abs(x)).sum(axis=0) / sw
    d_var = 4 * (n + 2) * U32 * (w * x**2).sum(axis=0) / sw
    return mean, var, d_mean, d_var


def _output_bound(x, gamma, beta, mean, var, eps, d_mean, d_var):
    """|float32 training-mode output - exact| when the statistics err by <= d_mean, d_var: the transform's
    own roundings (reference.bn_bound) plus the statistics' errors propagated through
    y = gamma*(x - mean)/sqrt(var + eps) + beta (first order), as in reference.bn_bound(n_reduce=...)."""
    inv = np.abs(gamma) / np.sqrt(var + eps)
    return (reference.bn_bound(x, gamma, beta, mean, var, eps)
            + inv * d_mean + np.abs(np.asarray(x, np.float64) - mean) * inv * d_var / (2 * (var + eps)))


def _ema_bound(old, stat, d_stat, momentum):
    """|float32 moving statistic - exact EMA| after one update moving*momentum + stat*(1 - momentum) (or
    tf_keras' moving - (moving - stat)*(1 - momentum)): <= 4 roundings of terms of size |old| + |stat|,
    plus the batch statistic's own error times (1 - momentum) (as reference.ema_bounds)."""
    return 4 * U32 * (np.abs(old) + np.abs(stat)) + (1 - momentum) * d_stat


# C06: 16-bit variables

C06_STEPS, C06_MOMENTUM, C06_UNITS = 300, 0.99, 8
SIXTEEN_BIT_EPS = {"bfloat16": 2.0**-7, "float16": 2.0**-10}  # spacing of 1.0 (8 / 11 significant bits)
C06_COMPUTE = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}  # mixed policies: float32 variables


def _c06_batch(rng, stream):
    """A fixed 64 x 8 batch exactly representable in bfloat16 and float16 (so that the layer's cast of its
    input to the 16-bit compute dtype changes nothing): 'moderate' mean ~0.3, variance ~1.3 on a 1/64 grid
    with |x| < 4 (bfloat16 spacing in [2, 4) is 1/64); 'wide' variance ~1e5 on multiples of 8 with
    |x| < 2048 (bfloat16 spacing in [1024, 2048) is 8)."""
    z = rng.normal(0, 1, (64, C06_UNITS))
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    if stream == "moderate":
        x = np.clip(np.round((0.3 + np.sqrt(1.3) * z) * 64) / 64, -255 / 64, 255 / 64)
    else:
        x = np.clip(np.round(316.0 * z / 8) * 8, -2040, 2040)
    return x.astype(np.float32)


def _round16(values, dtype):
    """float32 values rounded to nearest (even) in the 16-bit dtype, back as float64 (overflow gives inf)."""
    v = np.asarray(values, np.float32)
    if dtype == "bfloat16":
        import ml_dtypes

        return v.astype(ml_dtypes.bfloat16).astype(np.float64)
    with np.errstate(over="ignore"):
        return v.astype(np.float16).astype(np.float64)


def _replay_16bit(start, stat, momentum, steps, dtype):
    """The EMA as Keras 3 runs it into a 16-bit variable: the stored value read as float32, the update
    moving*momentum + stat*(1 - momentum) in float32 (numpy float32 rounds each operation like the
    backends), the result rounded into the 16-bit dtype, `steps` times."""
    s = np.asarray(start, np.float64)
    m32, d32, t32 = np.float32(momentum), np.float32(1.0 - momentum), np.asarray(stat, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            s = _round16(s.astype(np.float32) * m32 + t32 * d32, dtype)
    return s


def _spacing16(values, dtype):
    """One ulp of the 16-bit dtype at each (finite) value: 2^floor(log2|v|) * eps (normal numbers)."""
    v = np.maximum(np.abs(np.asarray(values, np.float64)), 2.0**-14)
    return 2.0 ** np.floor(np.log2(v)) * SIXTEEN_BIT_EPS[dtype]


# C08: one value per channel

C08_SHAPES = {  # case -> (input shape, axis)
    "nhwc_1x1x1": ((1, 1, 1, 8), -1),
    "nchw_1x1x1": ((1, 8, 1, 1), 1),
    "ndhwc_1x1x1x1": ((1, 1, 1, 1, 8), -1),
    "dense_1": ((1, 8), -1),
}


# C09: epsilon for every rank

C09_LAYOUTS = {"dense": ((16, 3), -1), "nhwc": ((4, 2, 2, 3), -1), "nchw": ((4, 3, 2, 2), 1)}
C09_EPS, CUDNN_MIN_EPS = 1e-8, 1.001e-5


# C10: NaN in a batch, the two parts of the test

def _c10_nan_example(verdict, keras, rng):
    """(a) one NaN example: the NaN pattern of each stage, and the finite parts against the reference."""
    layer = probes.make_bn(keras, 4, rng)
    s, m = probes.bn_state(layer), float(layer.momentum)
    x = rng.normal(0, 1, (32, 4)).astype(np.float32)
    x[3, 0] = np.nan
    others = np.ones(x.shape, bool)
    others[3, 0] = False

    y_inf = probes.f64(layer(x, training=False), keras)
    counts = {"inference_nonfinite_at_the_nan": verdict.count_nonfinite("inference_nonfinite_at_the_nan", y_inf[3, 0]),
              "inference_nonfinite_elsewhere": verdict.count_nonfinite("inference_nonfinite_elsewhere", y_inf[others])}
    y_tr = probes.f64(layer(x, training=True), keras)
    counts["training_nonfinite_feature_0"] = verdict.count_nonfinite("training_nonfinite_feature_0", y_tr[:, 0])
    counts["training_nonfinite_features_1_3"] = verdict.count_nonfinite("training_nonfinite_features_1_3", y_tr[:, 1:])
    mm, mv = probes.f64(layer.moving_mean, keras), probes.f64(layer.moving_variance, keras)
    counts["moving_nonfinite_feature_0"] = verdict.count_nonfinite("moving_nonfinite_feature_0", [mm[0], mv[0]])
    counts["moving_nonfinite_features_1_3"] = verdict.count_nonfinite("moving_nonfinite_features_1_3",
                                                                      np.concatenate([mm[1:], mv[1:]]))
    clean = np.where(np.isnan(x), 0.0, x).astype(np.float32)  # the same batch, the NaN replaced by 0
    y_after = probes.f64(layer(clean, training=False), keras)
    counts["later_inference_nonfinite_feature_0"] = verdict.count_nonfinite("later_inference_nonfinite_feature_0",
                                                                            y_after[:, 0])
    counts["later_inference_nonfinite_features_1_3"] = verdict.count_nonfinite(
        "later_inference_nonfinite_features_1_3", y_after[:, 1:])
    want = {"inference_nonfinite_at_the_nan": 1, "inference_nonfinite_elsewhere": 0,
            "training_nonfinite_feature_0": 32, "training_nonfinite_features_1_3": 0,
            "moving_nonfinite_feature_0": 2, "moving_nonfinite_features_1_3": 0,
            "later_inference_nonfinite_feature_0": 32, "later_inference_nonfinite_features_1_3": 0}
    ok = counts == want
    if ok:  # the finite parts are what the reference of each mode gives (not garbage)
        ref = reference.bn_inference(clean, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
        bound = reference.bn_bound(clean, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
        ok &= verdict.within("inference_finite_outputs", (y_inf - ref)[others], bound[others])
        g, b = s["gamma"][1:], s["beta"][1:]
        ref_tr, mean, var = reference.bn_train(x[:, 1:], g, b, s["eps"])
        ok &= verdict.within("training_outputs_features_1_3", y_tr[:, 1:] - ref_tr,
                             reference.bn_bound(x[:, 1:], g, b, mean, var, s["eps"], n_reduce=32))
        b_mean, b_var = reference.ema_bounds(x[:, 1:], s["mean"][1:], s["var"][1:], m)
        ok &= verdict.within("moving_mean_features_1_3", mm[1:] - reference.ema(s["mean"][1:], mean, m), b_mean)
        ok &= verdict.within("moving_variance_features_1_3", mv[1:] - reference.ema(s["var"][1:], var, m), b_var)
        ref_after = reference.bn_inference(clean[:, 1:], g, b, mm[1:], mv[1:], s["eps"])
        ok &= verdict.within("later_inference_features_1_3", y_after[:, 1:] - ref_after,
                             reference.bn_bound(clean[:, 1:], g, b, mm[1:], mv[1:], s["eps"]))
    verdict.conclude(ok, "one NaN in x[3, 0]: non-finite outputs " + ", ".join(f"{k} {v}" for k, v in counts.items())
                         + ("; finite parts within their float32 bounds" if ok and counts == want else ""))


def _c10_masked_nan(verdict, keras, rng):
    """(b) NaN at masked steps (features 0 and 2), 50.0 at masked steps of features 1 and 3."""
    batch, steps, units = 8, 10, 4
    x = (rng.normal(0, 1, (batch, steps, units)) * 2 + 1).astype(np.float32)
    mask = rng.random((batch, steps)) > 0.3
    mask[:, 0] = True
    x[~mask, 0], x[~mask, 2] = np.nan, np.nan
    x[~mask, 1], x[~mask, 3] = 50.0, 50.0
    layer = probes.make_bn(keras, units, rng, input_shape=(None, steps, units))
    s, m = probes.bn_state(layer), float(layer.momentum)
    y = probes.f64(layer(x, training=True, mask=mask), keras)
    mm, mv = probes.f64(layer.moving_mean, keras), probes.f64(layer.moving_variance, keras)
    n_nan_feats = verdict.count_nonfinite("moving_nonfinite_features_0_2", np.concatenate([mm[[0, 2]], mv[[0, 2]]]))
    n_other = verdict.count_nonfinite("moving_nonfinite_features_1_3", np.concatenate([mm[[1, 3]], mv[[1, 3]]]))
    n_out = verdict.count_nonfinite("nonfinite_unmasked_outputs", y[mask])

    mean, var, d_mean, d_var = _weighted_stats(x, mask)  # the statistics of the unmasked steps
    n_sum = batch * steps
    b_mean, b_var = _ema_bound(s["mean"], mean, d_mean, m), _ema_bound(s["var"], var, d_var, m)
    # the test's power: for features 1 and 3, statistics over every step (mask ignored) differ from the
    # unmasked ones by more than the bound
    all_mean, all_var = reference.batch_stats(x.reshape(-1, units)[:, [1, 3]])
    verdict.power("mask_ignored_alternative", reference.ema(s["mean"][[1, 3]], all_mean, m)
                  - reference.ema(s["mean"][[1, 3]], mean[[1, 3]], m), b_mean[[1, 3]])
    # features 1 and 3 (no NaN anywhere) follow the unmasked statistics: checked whatever happens to 0 and 2
    others_ok = n_other == 0
    if others_ok:
        others_ok &= verdict.within("moving_mean_features_1_3", mm[[1, 3]] - reference.ema(s["mean"], mean, m)[[1, 3]],
                                    b_mean[[1, 3]])
        others_ok &= verdict.within("moving_variance_features_1_3",
                                    mv[[1, 3]] - reference.ema(s["var"], var, m)[[1, 3]], b_var[[1, 3]])
    ok = others_ok and n_nan_feats == 0 and n_out == 0
    if ok:
        ok &= verdict.within("moving_mean_features_0_2", mm[[0, 2]] - reference.ema(s["mean"], mean, m)[[0, 2]],
                             b_mean[[0, 2]])
        ok &= verdict.within("moving_variance_features_0_2", mv[[0, 2]] - reference.ema(s["var"], var, m)[[0, 2]],
                             b_var[[0, 2]])
        kept = np.where(mask[..., None], x, 0.0)[mask]
        ref = reference.bn_inference(kept, s["gamma"], s["beta"], mean, var, s["eps"])
        ok &= verdict.within("unmasked_outputs", y[mask] - ref,
                             _output_bound(kept, s["gamma"], s["beta"], mean, var, s["eps"], d_mean, d_var))
    verdict.record(masked_fraction=float(1 - mask.mean()), summed_positions=n_sum)
    verdict.mechanism("masked_nan_propagates", n_nan_feats == 4 and others_ok,
                      f"{n_nan_feats} of 4 moving statistics of the features with masked NaNs are non-finite; "
                      f"the features without NaN {'follow' if others_ok else 'do not follow'} the unmasked statistics")
    verdict.conclude(ok, f"NaN at {int((~mask).sum())} masked steps of features 0 and 2: {n_nan_feats} non-finite "
                         f"moving statistics there, {n_other} in features 1 and 3, {n_out} non-finite unmasked outputs"
                         + ("; statistics = those of the unmasked steps within their bounds" if ok else ""))


# C16: a constant feature

C16_SHAPES = {"dense": (32, 4), "nhwc": (4, 3, 3, 4)}
C16_STEPS, C16_MOMENTUM, C16_VALUE, C16_DEVIATION = 150, 0.9, 2.0, 0.1


# C22: renorm's moving variance

C22_STEPS, C22_MOMENTUM, C22_STD = 50, 0.9, (0.5, 2.0)


# C28: tf_keras' Bessel correction

NHWC = ((8, 3, 3, 4), -1)
C28_CONFIGS = {  # case -> (constructor arguments, (input shape, axis))
    "default_nhwc": ({}, NHWC),
    "default_nchw": ({"axis": 1}, ((8, 4, 3, 3), 1)),
    "fused_true": ({"fused": True}, NHWC),
    "mixed_float16": ({"dtype": "mixed_float16"}, NHWC),
    "fused_false": ({"fused": False}, NHWC),
    "float64": ({"dtype": "float64"}, NHWC),
    "renorm": ({"renorm": True}, NHWC),
    "virtual_batch_size": ({"virtual_batch_size": 2}, NHWC),
    "dense": ({}, ((72, 4), -1)),
}
C28_COMPUTE = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}  # a mixed policy's compute dtype


def _fused_by_the_rules(kwargs: dict, ndim: int, axis: int) -> dict[str, bool]:
    """The claim's own eligibility rules for tf_keras' fused kernel, each evaluated on the case's arguments and
    input (never read from the layer): 4-D/5-D input, one axis that is the channel axis (1 or the last), a
    float16/bfloat16/float32 compute dtype, no renorm, no virtual_batch_size, no adjustment, fused not False."""
    dtype = kwargs.get("dtype", "float32")
    return {
        "rank_4_or_5": ndim in (4, 5),
        "single_channel_axis": isinstance(axis, int) and axis % ndim in (1, ndim - 1),
        "16_or_32_bit_compute": C28_COMPUTE.get(dtype, dtype) in ("float16", "bfloat16", "float32"),
        "no_renorm": not kwargs.get("renorm", False),
        "no_virtual_batch_size": not kwargs.get("virtual_batch_size"),
        "no_adjustment": kwargs.get("adjustment") is None,
        "fused_not_false": kwargs.get("fused") is not False,
    }


# --------------------------------------------------------------------------- C06: 16-bit variables


@pytest.mark.claim("C06")
@pytest.mark.parametrize("stream", ["moderate", "wide"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "mixed_bfloat16", "mixed_float16"])
def test_16bit_policy_moving_statistics_converge(B, verdict, keras, rng, dtype, stream):
    """Moving statistics after 300 calls under a pure or mixed 16-bit policy vs the float32 EMA (16-bit rounding,
    overflow)."""
    m = C06_MOMENTUM
    x = _c06_batch(rng, stream)
    layer = keras.layers.BatchNormalization(dtype=dtype, momentum=m)
    layer.build((None, C06_UNITS))
    start_mean, start_var = probes.f64(layer.moving_mean, keras), probes.f64(layer.moving_variance, keras)
    step = B.function(lambda xb: layer(xb, training=True))
    for _ in range(C06_STEPS):
        step(x)
    got_mean, got_var = probes.f64(layer.moving_mean, keras), probes.f64(layer.moving_variance, keras)
    var_dtype = _dtype_name(layer.moving_variance)

    # the exact EMA of a stationary stream: target + (start - target) * m^n
    t_mean, t_var = reference.batch_stats(x)
    decay = m**C06_STEPS
    ema_mean, ema_var = t_mean + (start_mean - t_mean) * decay, t_var + (start_var - t_var) * decay
    # float32 bound: the EMA stays between its start and its target, so every step adds at most
    # reference.ema_bounds evaluated with |old| = max(|start|, |target|); earlier errors are multiplied by
    # m at each step, so the total is at most one step's bound times sum(m^k) <= 1 / (1 - m)
    b_mean, b_var = reference.ema_bounds(x, np.maximum(np.abs(start_mean), np.abs(t_mean)),
                                         np.maximum(start_var, t_var), m)
    b_mean, b_var = b_mean / (1 - m), b_var / (1 - m)
    # the test's power: the exact EMA has left its start by more than twice the bound (a stalled layer, exact
    # at its start, shows)
    verdict.power("ema_left_its_start", np.concatenate([ema_mean - start_mean, ema_var - start_var]),
                  np.concatenate([b_mean, b_var]))

    n_bad = verdict.count_nonfinite("nonfinite_moving_statistics", np.concatenate([got_mean, got_var]))
    ok = n_bad == 0
    if ok:
        ok &= verdict.within("moving_mean_vs_float32_ema", got_mean - ema_mean, b_mean)
        ok &= verdict.within("moving_variance_vs_float32_ema", got_var - ema_var, b_var)

    # the mechanism: the same EMA with every update rounded into the 16-bit variable. Rounding is monotone
    # and a one-ulp difference is multiplied by m < 1 before the next rounding, so a replay whose float32
    # inputs differ by less than an ulp stays within one ulp of the layer; 2 ulps also cover a value on a
    # binade boundary (the ulp above is twice the one below)
    # the 16-bit dtype the average may have been rounded to: the variables' own, or under a mixed policy with
    # float32 variables the compute dtype (Keras 3.0's layer averaged in the compute dtype and stored the
    # 16-bit result: its float32 variables hold only 16-bit numbers)
    r16 = var_dtype if var_dtype in SIXTEEN_BIT_EPS else C06_COMPUTE.get(dtype)
    replayed = exceeded = False
    if r16:
        rep_mean = _replay_16bit(start_mean, t_mean, m, C06_STEPS, r16)
        rep_var = _replay_16bit(start_var, t_var, m, C06_STEPS, r16)
        got, rep = np.concatenate([got_mean, got_var]), np.concatenate([rep_mean, rep_var])
        inf_where = verdict.equal("infinite_positions_layer_vs_16bit_replay", np.isposinf(got).astype(float),
                                  np.isposinf(rep).astype(float))
        fin = np.isfinite(rep)
        replayed = inf_where and bool(np.all(np.isfinite(got) == fin)) and verdict.within(
            "layer_vs_16bit_replay", got[fin] - rep[fin], 2 * _spacing16(rep[fin], r16))
        exceeded = r16 == "float16" and verdict.beyond(
            "exact_ema_variance_vs_float16_max", np.where(np.isposinf(rep_var), ema_var, 0.0),
            float(np.finfo(np.float16).max))
    how = (f"variables {var_dtype}: the layer {'matches' if replayed else 'does not match'} the EMA replayed with "
           f"every update rounded to {r16} (within 2 ulps)" if r16 else f"variables {var_dtype}: no 16-bit rounding")
    verdict.mechanism("rounded_16bit_ema", replayed and n_bad == 0 and not ok, how + ", which misses the float32 EMA")
    verdict.mechanism("float16_overflow", r16 == "float16" and replayed and n_bad > 0
                      and bool(np.all(np.isfinite(got_mean))) and exceeded,
                      f"{n_bad} moving statistic(s) +inf; {how}; the exact EMA "
                      f"{'exceeds' if exceeded else 'stays below'} float16's maximum 65504 there")
    if n_bad == 0:  # a stall is a fixed point: one more call leaves the statistics bitwise as they are
        before = np.concatenate([got_mean, got_var])
        step(x)
        after = np.concatenate([probes.f64(layer.moving_mean, keras), probes.f64(layer.moving_variance, keras)])
        verdict.record(one_more_call_bitwise_unchanged=bool(np.array_equal(before, after)))
    verdict.record(variable_dtype=var_dtype, steps=C06_STEPS, momentum=m,
                   target_mean=float(np.mean(t_mean)), target_variance=float(np.mean(t_var)),
                   exact_ema_mean=float(np.mean(ema_mean)), exact_ema_variance=float(np.mean(ema_var)))
    if n_bad == 0:
        verdict.record(final_moving_mean=float(np.mean(got_mean)), final_moving_variance=float(np.mean(got_var)))
    low = C06_COMPUTE.get(dtype)
    if low and var_dtype not in SIXTEEN_BIT_EPS and n_bad == 0:
        # context, not checked: a mixed policy's float32 variables holding only 16-bit numbers would say the
        # average ran in the 16-bit compute dtype (keras-core before PR #412)
        got = np.concatenate([got_mean, got_var])
        verdict.record(context_stored_values_all_16bit=bool(np.array_equal(_round16(got, low), got)))
    verdict.conclude(ok, f"{dtype} policy, {stream} stream: variables {var_dtype}; after {C06_STEPS} calls "
                         + (f"moving variance +inf in {n_bad} feature(s)" if n_bad else
                            "max |moving mean - float32 EMA| "
                            f"{probes.within_text(verdict, 'moving_mean_vs_float32_ema', '.3g')}, variance "
                            f"{probes.within_text(verdict, 'moving_variance_vs_float32_ema', '.3g')}"))


# --------------------------------------------------------------------------- C08: one value per channel


@pytest.mark.claim("C08")
@pytest.mark.parametrize("shape", list(C08_SHAPES))
def test_one_value_per_channel_keeps_moving_variance_finite(verdict, keras, device, rng, shape):
    """Statistics and outputs after a training call with one value per channel: finite, batch variance 0's EMA."""
    dims, axis = C08_SHAPES[shape]
    layer = probes.make_bn(keras, 8, rng, input_shape=(None,) + dims[1:], axis=axis)
    s, m = probes.bn_state(layer), float(layer.momentum)
    x = rng.normal(1, 2, dims).astype(np.float32)
    y = probes.f64(layer(x, training=True), keras)
    got_mean, got_var = probes.f64(layer.moving_mean, keras), probes.f64(layer.moving_variance, keras)
    n_var = verdict.count_nonfinite("nonfinite_moving_variance", got_var)
    n_mean = verdict.count_nonfinite("nonfinite_moving_mean", got_mean)
    verdict.mechanism("nonfinite_moving_variance", n_var == got_var.size,
                      f"{n_var} of {got_var.size} moving variances non-finite")
    x1 = np.moveaxis(x, axis, -1).reshape(1, 8)  # the one value of each channel
    exp_mean, exp_var = reference.ema(s["mean"], x1[0], m), reference.ema(s["var"], 0.0, m)
    b_mean, b_var = reference.ema_bounds(x1, s["mean"], s["var"], m)
    # power: the update moved the variance (to momentum x old) by far more than its bound
    verdict.power("update_moved_variance", exp_var - s["var"], b_var)
    n_out = verdict.count_nonfinite("nonfinite_outputs", y)
    ok = n_var == 0 and n_mean == 0 and n_out == 0
    if ok:
        ok &= verdict.within("moving_variance_vs_momentum_x_old", got_var - exp_var, b_var)
        ok &= verdict.within("moving_mean_vs_ema", got_mean - exp_mean, b_mean)
        # the batch statistics of one value: mean = x, variance 0, so the output is beta up to rounding
        y1 = np.moveaxis(y, axis, -1).reshape(1, 8)
        ok &= verdict.within("output_vs_beta", y1 - s["beta"],
                             reference.batch_of_one_bound(x1, s["gamma"], s["beta"], s["eps"]))
    verdict.record(fused=str(getattr(layer, "fused", "no fused kernel")),
                   moving_variance_over_old=float(np.mean(got_var / s["var"])) if n_var == 0 else "non-finite")
    verdict.conclude(ok, f"{shape} on {device}: {n_var} non-finite moving variance(s), {n_mean} non-finite moving "
                         f"mean(s); " + (f"moving variance / old = "
                                         f"{probes.value_text(verdict, 'moving_variance_over_old', '.6f')} (momentum {m})"
                                         if n_var == 0 else "the statistics are lost"))


# --------------------------------------------------------------------------- C09: epsilon for every rank


@pytest.mark.claim("C09")
@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("layout", list(C09_LAYOUTS))
def test_epsilon_is_used_as_given(verdict, keras, device, rng, layout, mode):
    """Output with epsilon=1e-8 and variances near 1e-6 vs the reference with that epsilon, not with 1.001e-5."""
    dims, axis = C09_LAYOUTS[layout]
    layer = keras.layers.BatchNormalization(epsilon=C09_EPS, axis=axis)
    layer.build((None,) + dims[1:])
    gamma, beta = rng.uniform(0.5, 2.0, 3), rng.normal(0, 1, 3)
    probes.set_bn_state(layer, {"gamma": gamma, "beta": beta, "mean": np.zeros(3), "var": np.full(3, 1e-6)})
    s = probes.bn_state(layer)
    if mode == "inference":  # x ~ 1e-3 against a moving variance of 1e-6
        x = (1e-3 * (1 + 0.5 * rng.normal(0, 1, dims))).astype(np.float32)
        y = probes.f64(layer(x, training=False), keras)
        ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], C09_EPS, axis)
        bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], C09_EPS, axis)
        clamped = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], CUDNN_MIN_EPS, axis)
    else:  # a batch whose variance (~1e-6) is far below the clamped epsilon
        x = (1e-3 * rng.normal(0, 1, dims)).astype(np.float32)
        y = probes.f64(layer(x, training=True), keras)
        ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], C09_EPS, axis)
        n = x.size // 3
        bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, C09_EPS, axis, n_reduce=n)
        clamped = reference.bn_train(x, s["gamma"], s["beta"], CUDNN_MIN_EPS, axis)[0]
    # the alternative the reports describe: epsilon silently raised to 1.001e-5
    verdict.power("clamped_epsilon_alternative", clamped - ref, bound)
    ok = verdict.within("output_vs_epsilon_1e-8", y - ref, bound)
    verdict.record(layer_epsilon=float(layer.epsilon), fused=str(getattr(layer, "fused", "no fused kernel")))
    verdict.conclude(ok, f"{layout}, {mode} on {device}: max |y - reference with epsilon 1e-8| "
                         f"{probes.within_text(verdict, 'output_vs_epsilon_1e-8')}; epsilon 1.001e-5 would move the "
                         f"output by {probes.value_text(verdict, 'clamped_epsilon_alternative', '.3f')}")


# --------------------------------------------------------------------------- C10: NaN in a batch


@pytest.mark.claim("C10")
@pytest.mark.parametrize("part", ["nan_example", "masked_nan"])
def test_nan_example_poisons_batch_masked_nan_does_not(verdict, keras, rng, part):
    """Where one NaN example spreads (outputs, statistics); whether NaNs at masked steps stay out of them."""
    (_c10_nan_example if part == "nan_example" else _c10_masked_nan)(verdict, keras, rng)


# --------------------------------------------------------------------------- C15: fully masked batch


@pytest.mark.claim("C15")
@pytest.mark.parametrize("mask_via", ["argument", "masking_layer"])
def test_fully_masked_batch_leaves_moving_statistics(verdict, keras, rng, mask_via):
    """Moving statistics after a training call on a fully masked batch: bitwise unchanged, or pulled to 0."""
    batch, steps, units = 4, 6, 3
    layer = probes.make_bn(keras, units, rng, input_shape=(None, steps, units))
    s, m = probes.bn_state(layer), float(layer.momentum)
    if mask_via == "argument":
        x = rng.normal(3, 2, (batch, steps, units)).astype(np.float32)
        y = layer(x, training=True, mask=np.zeros((batch, steps), bool))
    else:  # every step equals the mask value: the Masking layer masks them all
        x = np.zeros((batch, steps, units), np.float32)
        model = keras.Sequential([keras.Input(shape=(steps, units)), keras.layers.Masking(mask_value=0.0), layer])
        y = model(x, training=True)
    y = probes.f64(y, keras)
    mm, mv = probes.f64(layer.moving_mean, keras), probes.f64(layer.moving_variance, keras)
    same = verdict.equal("moving_mean_unchanged", mm, s["mean"])
    same &= verdict.equal("moving_variance_unchanged", mv, s["var"])
    # the mechanism: batch statistics 0 and 0, so moving <- momentum * old: one product and one sum with
    # an exact 0 (Keras 3), or old - old*(1 - momentum) (tf_keras, 3 roundings): <= 4u|old|
    b_mean, b_var = 4 * U32 * np.abs(s["mean"]), 4 * U32 * s["var"]
    # "unchanged" is bitwise (bound 0): the bound is the pulled update's own float32 error alone
    verdict.power("pull_alternative", (1 - m) * np.concatenate([s["mean"], s["var"]]), np.concatenate([b_mean, b_var]),
                  measured=True)
    pulled = verdict.within("moving_mean_vs_momentum_x_old", mm - m * s["mean"], b_mean)
    pulled &= verdict.within("moving_variance_vs_momentum_x_old", mv - m * s["var"], b_var)
    verdict.mechanism("pulled_toward_zero", pulled,
                      f"moving mean and variance {'are' if pulled else 'are not'} momentum x old within 4u")
    n_out = verdict.count_nonfinite("nonfinite_outputs", y)
    if n_out == 0:
        verdict.record(max_abs_output=float(np.max(np.abs(finite("outputs", y)))))
    verdict.conclude(same, f"fully masked ({mask_via}): moving statistics "
                           + ("bitwise unchanged" if same else
                              f"changed: mean/old = {float(np.mean(mm / s['mean'])):.6f}, variance/old = "
                              f"{float(np.mean(mv / s['var'])):.6f} (momentum {m})"))


# --------------------------------------------------------------------------- C16: a constant feature


@pytest.mark.claim("C16")
@pytest.mark.parametrize("layout", list(C16_SHAPES))
def test_constant_feature_amplified_at_inference(B, verdict, keras, rng, layout):
    """A constant feature's moving variance after 150 steps vs m^n v0; the inference output of a deviation."""
    dims, m, n = C16_SHAPES[layout], C16_MOMENTUM, C16_STEPS
    layer = probes.make_bn(keras, 4, rng, input_shape=(None,) + dims[1:], momentum=m)
    s = probes.bn_state(layer)
    step = B.function(lambda xb: layer(xb, training=True))
    for _ in range(n):
        x = rng.normal(0, 1, dims).astype(np.float32)
        x[..., 0] = C16_VALUE
        step(x)
    mm, mv = probes.f64(layer.moving_mean, keras)[0], probes.f64(layer.moving_variance, keras)[0]
    # exact: the batch variance of a constant is 0, so v_n = m^n v0, mean_n = c + (mean0 - c) m^n
    v_n = m**n * s["var"][0]
    mu_n = C16_VALUE + (s["mean"][0] - C16_VALUE) * m**n
    # float32: each step rounds m (once, relative u), m*v and the sum (tf_keras: v - v*(1 - m), with
    # 1 - m rounded): <= 4 relative roundings per step, so relative 4 n u to first order (4nu = 4e-5 << 1)
    b_v = 4 * n * U32 * v_n
    # the mean stays between mean0 and c: every step adds <= 4u(|old| + |c|) plus the batch mean's own
    # rounding (a sum of exact 2.0s: exact; bounded anyway by (1 - m) * k u |c|, k values per feature),
    # earlier errors shrink by m: total <= step bound / (1 - m)
    k = int(np.prod(dims[:-1]))
    big = max(abs(s["mean"][0]), C16_VALUE)
    b_mu = (4 * U32 * 2 * big + (1 - m) * k * U32 * C16_VALUE) / (1 - m)
    ok = verdict.within("moving_variance_vs_m^n_v0", finite("moving variance", mv) - v_n, b_v)
    ok &= verdict.within("moving_mean_vs_ema", finite("moving mean", mm) - mu_n, b_mu)

    probe = np.zeros((1,) + dims[1:], np.float32)
    probe[..., 0] = C16_VALUE + C16_DEVIATION
    y = probes.f64(layer(probe, training=False), keras).reshape(-1, 4)[:, 0]
    g, b, eps = s["gamma"][0], s["beta"][0], s["eps"]
    xv = float(np.float32(C16_VALUE + C16_DEVIATION))
    pred = g * (xv - mu_n) / np.sqrt(v_n + eps) + b  # the claim's formula with the exact statistics
    # bound: the inference transform's roundings (reference.bn_bound at the exact statistics) plus the
    # statistics' errors through y: |dy/dmean| b_mu + |dy/dvar| b_v (first order)
    inv = abs(g) / np.sqrt(v_n + eps)
    bound = (reference.bn_bound(np.array([[xv]]), [g], [b], [mu_n], [v_n], eps)[0, 0]
             + inv * b_mu + abs(xv - mu_n) * inv * b_v / (2 * (v_n + eps)))
    # power: had the moving variance not decayed, the output would be g*d/sqrt(v0 + eps) + b
    verdict.power("undecayed_variance_alternative",
                  g * (xv - mu_n) / np.sqrt(s["var"][0] + eps) + b - pred, bound)
    ok &= verdict.within("inference_output_vs_formula", y - pred, bound)
    amp = float(np.max(np.abs(y - b)) / (abs(g) * abs(xv - mu_n)))
    verdict.record(moving_variance=float(mv), m_pow_n_v0=float(v_n), amplification=amp,
                   one_over_sqrt_eps=float(1 / np.sqrt(eps)))
    verdict.conclude(ok, f"{layout}: after {n} constant steps moving variance {float(mv):.3e} (m^n v0 = {v_n:.3e}); "
                         f"a deviation of {C16_DEVIATION} is amplified {amp:.2f}x gamma (1/sqrt(eps) = "
                         f"{1 / np.sqrt(eps):.2f})")


# --------------------------------------------------------------------------- C22: renorm's moving variance


@pytest.mark.claim("C22")
def test_renorm_moving_variance_is_ema_of_variances(B, verdict, keras, rng):
    """renorm=True's moving variance after 50 batches vs the EMA of the batch variances, not of their roots."""
    m, units, rows = C22_MOMENTUM, 8, 64
    layer = probes.bn_layer(keras, momentum=m, renorm=True)
    layer.build((None, units))
    eps = float(layer.epsilon)
    v0 = probes.f64(layer.moving_variance, keras)
    step = B.function(lambda xb: layer(xb, training=True))
    # exact EMAs, and their float32 bounds accumulated step by step (e <- m e + this step's error)
    ema_v, ema_s = v0.copy(), np.sqrt(v0)  # moving_stddev starts at sqrt(moving_variance's initial value)
    e_v, e_s = np.zeros(units), np.zeros(units)
    for k in range(C22_STEPS):
        x = rng.normal(0, C22_STD[k % 2], (rows, units)).astype(np.float32)
        step(x)
        _, v = reference.batch_stats(x)
        d_v = 2 * (rows + 2) * U32 * (x.astype(np.float64) ** 2).mean(axis=0)  # the batch variance's error
        std = np.sqrt(v + eps)
        # sqrt(v + eps): the variance's error halves relative to std (d std = d v / (2 std)), plus the
        # roundings of the add and the sqrt (<= 2u std)
        d_std = d_v / (2 * std) + 2 * U32 * std
        e_v = m * e_v + _ema_bound(ema_v, v, d_v, m)
        e_s = m * e_s + _ema_bound(ema_s, std, d_std, m)
        ema_v, ema_s = reference.ema(ema_v, v, m), reference.ema(ema_s, std, m)
    got = finite("moving variance", probes.f64(layer.moving_variance, keras))
    stddev_form = ema_s**2 - eps
    # relu(s*s - eps): the square doubles the relative error of s (2 s e_s), and the product and the
    # subtraction round (<= 3u (s^2 + eps))
    e_form = 2 * ema_s * e_s + 3 * U32 * (ema_s**2 + eps)
    verdict.power("ema_of_stddev_alternative", stddev_form - ema_v, e_v + e_form, measured=True)  # both bounds
    ok = verdict.within("moving_variance_vs_ema_of_variances", got - ema_v, e_v)
    form = verdict.within("moving_variance_vs_ema_of_stddev_squared", got - stddev_form, e_form)
    ratio = probes.ratio_text(verdict, "moving_variance_vs_ema_of_stddev_squared", ".2g")
    verdict.mechanism("ema_of_stddev", form, f"moving variance - ((EMA of sqrt(var + eps))^2 - eps) at {ratio} "
                                             "of its float32 bound")
    verdict.record(moving_variance_mean=float(got.mean()), ema_of_variances_mean=float(ema_v.mean()),
                   stddev_form_mean=float(stddev_form.mean()))
    verdict.conclude(ok, f"after {C22_STEPS} batches of variance 0.25/4 alternating: moving variance "
                         f"{float(got.mean()):.4f} on average, EMA of the variances {float(ema_v.mean()):.4f}, "
                         f"(EMA of the std)^2 - eps {float(stddev_form.mean()):.4f}")


# --------------------------------------------------------------------------- C26: a mask on 4-D inputs


@pytest.mark.claim("C26")
@pytest.mark.parametrize("mask_shape", ["bhw", "bh1"])
def test_mask_is_honoured_for_4d_inputs(verdict, keras, rng, mask_shape):
    """Outputs and statistics under a (B, H, W) or (B, H, 1) mask on 4-D inputs vs the unmasked positions'."""
    dims, units = (8, 5, 5, 4), 4
    x = (rng.normal(0, 1, dims) * 2 + 1).astype(np.float32)
    if mask_shape == "bhw":
        mask = rng.random(dims[:3]) > 0.3
    else:  # (B, H, 1): broadcast over W
        mask = rng.random((dims[0], dims[1], 1)) > 0.3
        mask[:, 0] = True
    full = np.broadcast_to(mask, dims[:3])
    x[~full] = 50.0  # masked positions far off: they would move the statistics
    layer = probes.make_bn(keras, units, rng, input_shape=(None,) + dims[1:], momentum=0.0)
    s = probes.bn_state(layer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = probes.f64(layer(x, training=True, mask=mask), keras)
    mm = finite("moving mean", probes.f64(layer.moving_mean, keras))
    mv = finite("moving variance", probes.f64(layer.moving_variance, keras))
    mean, var, d_mean, d_var = _weighted_stats(x, full)
    kept = x[full]
    ref = reference.bn_inference(kept, s["gamma"], s["beta"], mean, var, s["eps"])
    bound = _output_bound(kept, s["gamma"], s["beta"], mean, var, s["eps"], d_mean, d_var)
    # the alternative: statistics over every position (mask ignored)
    all_mean, all_var, all_dm, all_dv = _weighted_stats(x, np.ones(dims[:3]))
    xs = x.reshape(-1, units)
    all_ref = reference.bn_inference(xs, s["gamma"], s["beta"], all_mean, all_var, s["eps"])
    all_bound = _output_bound(xs, s["gamma"], s["beta"], all_mean, all_var, s["eps"], all_dm, all_dv)
    # the bound sums the claim's and the alternative's own (statistics over every position) bounds
    verdict.power("mask_ignored_alternative", all_ref[full.reshape(-1)] - ref, bound + all_bound[full.reshape(-1)],
                  measured=True)
    ok = verdict.within("unmasked_outputs", y[full] - ref, bound)
    ok &= verdict.within("moving_mean_vs_unmasked_mean", mm - mean, _ema_bound(s["mean"], mean, d_mean, 0.0))
    ok &= verdict.within("moving_variance_vs_unmasked_variance", mv - var, _ema_bound(s["var"], var, d_var, 0.0))
    ignored = verdict.within("outputs_vs_all_positions", y.reshape(-1, units) - all_ref, all_bound)
    ignored &= verdict.within("moving_mean_vs_all_positions", mm - all_mean,
                              _ema_bound(s["mean"], all_mean, all_dm, 0.0))
    messages = sorted({str(w.message)[:120] for w in caught if "mask" in str(w.message).lower()})
    verdict.record(warnings=messages, fused=str(getattr(layer, "fused", "no fused kernel")),
                   masked_fraction=float(1 - full.mean()))
    verdict.mechanism("mask_ignored", ignored, "outputs and moving mean " + ("equal" if ignored else "differ from")
                      + " the statistics of every position" + (f"; warned: {messages[0]}" if messages else ""))
    # the mechanism of Keras 3 before the masked-moments broadcast fix (seen on 3.0.5): a (B, H, 1) mask is
    # summed as it is, not broadcast over W first, so the count of kept steps misses the W axis and the
    # (correctly weighted) sum is divided by 1/W of it: the mean comes out W times the unmasked mean
    w_axis = dims[2] if mask_shape == "bh1" else 1
    undercount = w_axis > 1 and verdict.within("moving_mean_vs_w_times_unmasked_mean", mm - w_axis * mean,
                                               w_axis * _ema_bound(s["mean"], mean, d_mean, 0.0))
    verdict.mechanism("mask_count_not_broadcast", undercount,
                      f"moving mean {'equals' if undercount else 'is not'} {w_axis} x the unmasked mean")
    verdict.conclude(ok, f"mask {mask_shape} on 8x5x5x4: unmasked outputs vs unmasked statistics max err "
                         f"{probes.within_text(verdict, 'unmasked_outputs')}; moving mean {float(mm.mean()):.3f} (unmasked "
                         f"{float(mean.mean()):.3f}, all positions {float(all_mean.mean()):.3f})")


# --------------------------------------------------------------------------- C27: a fractional mask


@pytest.mark.claim("C27")
def test_fractional_mask_weights_steps(verdict, keras, rng):
    """Moving statistics and outputs under a mask of 0.5s vs the weighted statistics, not the binarised mask's."""
    dims, units = (4, 6, 2), 2
    x = (rng.normal(0, 1, dims) * 2 + 1).astype(np.float32)
    w = np.ones(dims[:2], np.float32)
    w[:, :3] = 0.5
    w[0, 5] = 0.0
    layer = probes.make_bn(keras, units, rng, input_shape=(None,) + dims[1:], momentum=0.0)
    s = probes.bn_state(layer)
    y = probes.f64(layer(x, training=True, mask=w), keras).reshape(-1, units)
    mm = finite("moving mean", probes.f64(layer.moving_mean, keras))
    mv = finite("moving variance", probes.f64(layer.moving_variance, keras))
    xs = x.reshape(-1, units)
    results = {}
    for name, weights in (("weighted", w), ("binarised", (w > 0).astype(np.float32))):
        mean, var, d_mean, d_var = _weighted_stats(x, weights)
        out = reference.bn_inference(xs, s["gamma"], s["beta"], mean, var, s["eps"])
        bound = _output_bound(xs, s["gamma"], s["beta"], mean, var, s["eps"], d_mean, d_var)
        results[name] = (mean, var, out, bound, _ema_bound(s["mean"], mean, d_mean, 0.0),
                         _ema_bound(s["var"], var, d_var, 0.0))
    wm, wv, wout, wb, wbm, wbv = results["weighted"]
    bm, bv, bout, bb, bbm, bbv = results["binarised"]
    verdict.power("binarised_alternative_mean", bm - wm, wbm + bbm, measured=True)  # both bounds
    ok = mean_weighted = verdict.within("moving_mean_vs_weighted", mm - wm, wbm)
    ok &= verdict.within("moving_variance_vs_weighted", mv - wv, wbv)
    ok &= verdict.within("outputs_vs_weighted", y - wout, wb)
    binarised = verdict.within("moving_mean_vs_binarised", mm - bm, bbm)
    binarised &= verdict.within("moving_variance_vs_binarised", mv - bv, bbv)
    binarised &= verdict.within("outputs_vs_binarised", y - bout, bb)
    verdict.mechanism("mask_binarised", binarised, "statistics and outputs " + ("equal" if binarised else "differ from")
                      + " the unweighted statistics of the steps with a non-zero mask")
    # the mechanism of older Keras 3 releases (seen on 3.0.5): the variance is sum w (w x - mean)^2 / sum w,
    # the weight applied to x a second time inside the square; the mean is the weighted one
    w64 = np.broadcast_to(w.astype(np.float64)[..., None], dims).reshape(-1, units)
    wx = w64 * np.where(w64 > 0, xs.astype(np.float64), 0.0)
    v2 = (w64 * (wx - wm) ** 2).sum(axis=0) / w64.sum(axis=0)
    d_v2 = _weighted_stats(wx.reshape(dims), w)[3] + 2 * np.sqrt(v2) * (wbm)  # the sum's rounding + the mean's error
    twice = verdict.within("moving_variance_vs_weight_twice", mv - v2, _ema_bound(s["var"], v2, d_v2, 0.0))
    verdict.mechanism("mask_weight_twice_in_variance", twice and mean_weighted,
                      f"moving variance {'equals' if twice else 'differs from'} sum w (w x - mean)^2 / sum w")
    verdict.conclude(ok, f"mask with 0.5s: moving mean {np.round(mm, 4).tolist()}, weighted "
                         f"{np.round(wm, 4).tolist()}, binarised {np.round(bm, 4).tolist()}")


# --------------------------------------------------------------------------- C28: tf_keras' Bessel correction


@pytest.mark.claim("C28")
@pytest.mark.parametrize("config", list(C28_CONFIGS))
def test_tfkeras_bessel_correction_exactly_when_fused(tfkeras_only, verdict, keras, rng, config):
    """tf_keras' moving variance (momentum 0) vs the biased and the m/(m-1) batch variance, as the claim's fused-kernel
    rules predict; the layer's `fused` flag is checked against the same rules."""
    kwargs, (dims, axis) = C28_CONFIGS[config]
    rules = _fused_by_the_rules(kwargs, len(dims), axis)
    eligible = all(rules.values())
    layer = keras.layers.BatchNormalization(momentum=0.0, axis=axis, **{k: v for k, v in kwargs.items() if k != "axis"})
    layer.build((None,) + dims[1:])
    old = np.ravel(probes.f64(layer.moving_variance))
    x = (rng.normal(0, 2, dims) + 1).astype(np.float32)
    layer(x, training=True)  # momentum 0: the moving variance becomes this batch's variance
    got = finite("moving variance", np.ravel(probes.f64(layer.moving_variance)))
    xr = x.astype(np.float16).astype(np.float64) if config == "mixed_float16" else x.astype(np.float64)
    xf = np.moveaxis(xr, axis, -1)
    if config == "virtual_batch_size":
        # ghost batches: the input reshaped to (2, 4, ...) and reduced over every axis but the second and
        # the channel, i.e. ghost j = examples {j, 4 + j}; the moving variance is their variances' mean
        ghosts = [xf.reshape((2, 4) + xf.shape[1:])[:, j] for j in range(4)]
        var = np.mean([reference.batch_stats(g)[1] for g in ghosts], axis=0)
        m = ghosts[0].size // 4
        # each ghost's variance within its ema_bounds (momentum 0), then a mean of 4 (<= 4 more roundings)
        b_var = np.max([reference.ema_bounds(g, 0.0, old, 0.0)[1] for g in ghosts], axis=0) + 4 * U32 * var
    else:
        _, var = reference.batch_stats(xf)
        m = xf.size // 4
        b_var = reference.ema_bounds(xf, 0.0, old, 0.0)[1]
    k = m / (m - 1)
    b_unbiased = k * b_var + 2 * U32 * k * var  # as K16: the biased bound scaled, plus 2 roundings
    verdict.power("biased_vs_unbiased", var / (m - 1), b_var + b_unbiased, measured=True)  # both bounds
    biased = verdict.within("err_biased", got - var, b_var)
    unbiased = verdict.within("err_unbiased", got - k * var, b_unbiased)
    fused = bool(layer.fused)
    # the claim: unbiased exactly when the rules make the layer fused, biased otherwise; and the layer's own
    # flag says the same (the statistic is the evidence, the flag is checked against the rules, not trusted)
    follows_rules = unbiased if eligible else biased
    flag_agrees = fused == eligible
    verdict.record(layer_fused=fused, fused_by_the_claims_rules=eligible, rules_failed=[r for r, ok in rules.items()
                   if not ok], flag_agrees_with_rules=flag_agrees, elements_per_channel=m,
                   ratio_to_biased=float(np.mean(got / var)), unbiased_factor=k)
    verdict.conclude(follows_rules and flag_agrees,
                     f"{config}: the rules say {'fused' if eligible else 'not fused'}"
                     + ("" if eligible else f" ({', '.join(r for r, ok in rules.items() if not ok)} fails)")
                     + f"; moving variance / biased = {float(np.mean(got / var)):.5f} (m/(m-1) = {k:.5f}): "
                     + ("unbiased" if unbiased else "biased" if biased else "neither")
                     + f"; layer.fused = {fused}")
