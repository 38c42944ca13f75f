"""The paper's own statements (Ioffe & Szegedy 2015, §3-§3.3, Algorithms 1 and 2), measured on
Keras' layer against the float64 reference."""

import numpy as np
import pytest

from bnspec import probes, reference

LAMBDA = reference.LAMBDA  # statistical checks use +/- 6 standard deviations


def _x(rng, batch, units, scale=None):
    scale = rng.uniform(0.02, 3.0, units) if scale is None else scale
    return (rng.normal(0, 1, (batch, units)) * scale + rng.normal(0, 2, units)).astype(np.float32)


@pytest.mark.claim("P01")
@pytest.mark.parametrize("batch", [2, 60, 600])
def test_normalised_moments(verdict, keras, device, rng, batch):
    units = 40
    layer = keras.layers.BatchNormalization()  # gamma = 1, beta = 0: the output is x_hat itself
    layer.build((None, units))
    x = _x(rng, batch, units)  # scales down to 0.02, where sigma^2/(sigma^2+eps) is far below 1
    y = np.asarray(layer(x, training=True), np.float64)
    mean, var = reference.batch_stats(x)
    eps = float(layer.epsilon)
    bound = reference.bn_bound(x, np.ones(units), np.zeros(units), mean, var, eps, n_reduce=batch)
    want_var = var / (var + eps)
    got_mean, got_var = y.mean(0), y.var(0)
    x_hat = np.abs(reference.bn_inference(x, 1, 0, mean, var, eps))
    # mean of y is off by at most mean(bound); var(y) = mean((x_hat + e)^2) - mean^2 moves by
    # <= 2*mean(|x_hat|*bound) + mean(bound^2) + (mean bound)^2, plus float64 rounding (negligible)
    b_mean = bound.mean(0)
    b_var = 2 * (x_hat * bound).mean(0) + (bound**2).mean(0) + b_mean**2 + 1e-12
    e_mean, e_var = np.abs(got_mean), np.abs(got_var - want_var)
    verdict.record(max_abs_mean=e_mean.max(), mean_bound=b_mean.max(), max_var_err=e_var.max(),
                   var_bound=b_var.max(), smallest_expected_var=want_var.min(), largest_expected_var=want_var.max())
    verdict.conclude(bool(np.all(e_mean <= b_mean) and np.all(e_var <= b_var)),
                     f"batch {batch}: |mean| <= {e_mean.max():.1e}, variance off sigma^2/(sigma^2+eps) by "
                     f"{e_var.max():.1e} (bound {b_var.max():.1e}); expected variances range "
                     f"{want_var.min():.3f}..{want_var.max():.3f}")


@pytest.mark.claim("P02")
def test_batch_of_two_keeps_only_the_sign(verdict, keras, device, rng):
    units = 50
    layer = probes.make_bn(keras, units, rng)
    s = probes.bn_state(layer)
    worst, signs_ok = 0.0, True
    for _ in range(8):
        x = _x(rng, 2, units)
        y = np.asarray(layer(x, training=True), np.float64)
        half = (x[0].astype(np.float64) - x[1]) / 2
        dev = s["gamma"] * np.abs(half) / np.sqrt(half**2 + s["eps"])
        want = np.stack([s["beta"] + np.sign(half) * dev, s["beta"] - np.sign(half) * dev])
        mean, var = reference.batch_stats(x)
        bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=2)
        worst = max(worst, float((np.abs(y - want) / bound).max()))
        signs_ok &= bool(np.all(np.sign(y[0] - s["beta"]) == np.sign(half * s["gamma"])))
    verdict.record(worst_err_over_bound=worst, signs_match=signs_ok, pairs=8)
    verdict.conclude(worst <= 1.0 and signs_ok,
                     f"8 pairs: outputs = beta +/- gamma*s/sqrt(s^2+eps) within {worst:.2f} x the float32 bound")


@pytest.mark.claim("P03")
def test_population_variance_is_unbiased(verdict, keras, tf, rng):
    units, m, n_batches, momentum = 100, 60, 2000, 0.99
    sigma2 = rng.uniform(0.5, 4.0, units)
    batches = (rng.normal(0, 1, (n_batches, m, units)) * np.sqrt(sigma2) + rng.normal(0, 1, units)).astype(np.float32)
    layer = keras.layers.BatchNormalization(momentum=momentum)
    layer.build((None, units))
    step = tf.function(lambda b: layer(b, training=True))
    for b in batches:
        step(b)
    ema = np.asarray(layer.moving_variance.numpy(), np.float64)
    _, alg2 = reference.population_stats(list(batches), unbiased=True)
    ratio = alg2 / ema
    got = float(ratio.mean())
    # spread of the ratio per feature: the EMA of biased batch variances has relative variance
    # (1-momentum)/(1+momentum) * 2(m-1)/m^2; Algorithm 2's mean over N batches 2/(N(m-1));
    # the 100 features are independent, so the mean ratio's sd is that / sqrt(100)
    rel_var = (1 - momentum) / (1 + momentum) * 2 * (m - 1) / m**2 + 2 / (n_batches * (m - 1))
    sd = float(np.sqrt(rel_var / units)) * m / (m - 1)
    want = m / (m - 1)
    assert abs(1.0 - want) > 2 * LAMBDA * sd, "the stream is too short to tell m/(m-1) from 1"
    verdict.record(mean_ratio=got, expected=want, sd=sd, tolerance=LAMBDA * sd, batches=n_batches, momentum=momentum,
                   ema_over_true_variance=float((ema / sigma2).mean()))
    verdict.conclude(abs(got - want) <= LAMBDA * sd,
                     f"Algorithm 2 / Keras moving variance = {got:.4f} averaged over {units} features "
                     f"(expected {want:.4f} = 60/59 +/- {LAMBDA * sd:.4f}; 1.0 would mean no bias)")


@pytest.mark.claim("P04")
@pytest.mark.parametrize("bn", ["keras", "explicit"])
def test_inference_bn_folds_into_dense(verdict, request, keras, mnist, bn):
    from bnspec.model import ModelSpec, build, dense_layers

    model = request.getfixturevalue("trained" if bn == "keras" else "trained_explicit").model
    layers = probes.mlp_reference_layers(model)
    folded_layers = []
    for layer in layers:
        if "kernel" in layer:
            folded_layers.append(dict(layer))
        else:
            dense = folded_layers[-1]
            w, b = reference.fold_into_dense(dense["kernel"], dense["bias"], layer["gamma"], layer["beta"],
                                             layer["mean"], layer["var"], layer["eps"])
            dense["kernel"], dense["bias"] = w.astype(np.float32), b.astype(np.float32)
    plain = build(ModelSpec(batchnorm=False), keras)
    for target, src in zip(dense_layers(plain), folded_layers):
        target.set_weights([src["kernel"], src["bias"]])
    x = mnist.x_test[:2000]
    a = np.asarray(model.predict(x, batch_size=500, verbose=0), np.float64)
    b = np.asarray(plain.predict(x, batch_size=500, verbose=0), np.float64)
    _, bound_bn = reference.mlp_inference(x, layers)
    plain_layers = [{"kernel": d["kernel"], "bias": d["bias"]} for d in folded_layers]
    _, bound_folded = reference.mlp_inference(x, plain_layers)
    # the folded weights are rounded to float32 once more: that doubles the variance of each
    # product's rounding, so the folded network's bound grows by sqrt(2)
    bound = bound_bn + np.sqrt(2) * bound_folded
    diff = np.abs(a - b)
    agree = float((a.argmax(1) == b.argmax(1)).mean())
    verdict.record(max_abs_diff=diff.max(), max_bound=bound.max(), worst_diff_over_bound=(diff / bound).max(),
                   label_agreement=agree, examples=len(x))
    verdict.conclude(bool(np.all(diff <= bound)),
                     f"BN folded into the Dense layers: logits differ by <= {diff.max():.2e} "
                     f"(bound {bound.max():.1e}) on {len(x)} test images; labels agree {agree:.2%}")


SCALES = [2.0**-3, 2.0, 2.0**4, 2.0**10]  # powers of two: a*W and a*(Wu) are exact in float32


def _dense_bn(tf, layer, u, w):
    return layer(tf.matmul(u, w), training=True)


@pytest.mark.claim("P05")
@pytest.mark.parametrize("a", SCALES)
def test_scale_invariance_forward(verdict, keras, tf, rng, a):
    units = 50
    u = rng.normal(0, 1, (60, 30)).astype(np.float32)
    w = (rng.normal(0, 1, (30, units)) * rng.uniform(0.01, 1, units)).astype(np.float32)
    layer = probes.make_bn(keras, units, rng)
    s = probes.bn_state(layer)
    z1, za = u.astype(np.float64) @ w, u.astype(np.float64) @ (a * w)  # exact products in float64
    y1 = np.asarray(_dense_bn(tf, layer, u, w), np.float64)
    ya = np.asarray(_dense_bn(tf, layer, u, (a * w).astype(np.float32)), np.float64)
    r1, m1, v1 = reference.bn_train(z1, s["gamma"], s["beta"], s["eps"])
    ra, ma, va = reference.bn_train(za, s["gamma"], s["beta"], s["eps"])
    # float32 error of each side: BN's own bound plus the matmul's (k*u*|u||W| through BN's 1/sigma)
    k = u.shape[1]
    mm1 = k * reference.U32 * (np.abs(u) @ np.abs(w))
    b1 = reference.bn_bound(z1, s["gamma"], s["beta"], m1, v1, s["eps"], n_reduce=60) + \
        2 * np.abs(s["gamma"]) * mm1 / np.sqrt(v1 + s["eps"])
    ba = reference.bn_bound(za, s["gamma"], s["beta"], ma, va, s["eps"], n_reduce=60) + \
        2 * np.abs(s["gamma"]) * a * mm1 / np.sqrt(va + s["eps"])
    eps_effect = np.abs(ra - r1)  # exact difference that eps > 0 causes
    approx = np.abs(s["gamma"] * (z1 - m1) / np.sqrt(v1 + s["eps"])) * s["eps"] * abs(1 - 1 / a**2) / (2 * v1)
    diff = np.abs(ya - y1)
    ok = bool(np.all(diff <= eps_effect + b1 + ba))
    verdict.record(max_diff=diff.max(), max_eps_effect=eps_effect.max(), closed_form_estimate=approx.max(),
                   max_float_bound=(b1 + ba).max(), a=a)
    verdict.conclude(ok, f"a = {a:g}: |BN(aWu) - BN(Wu)| <= {diff.max():.2e}; eps explains {eps_effect.max():.2e} "
                         f"(closed form {approx.max():.2e}), rounding {(b1 + ba).max():.1e}")


@pytest.mark.claim("P06")
@pytest.mark.parametrize("a", SCALES)
def test_scale_invariance_gradients(verdict, keras, tf, rng, a):
    units, m, k = 50, 60, 30
    u = rng.normal(0, 1, (m, k)).astype(np.float32)
    w = (rng.normal(0, 1, (k, units)) * rng.uniform(0.1, 1, units)).astype(np.float32)
    c = rng.normal(0, 1, (m, units)).astype(np.float32)  # upstream gradient dl/dy
    layer = probes.make_bn(keras, units, rng)
    s = probes.bn_state(layer)

    def grads(weights):
        uu, ww = tf.constant(u), tf.Variable(weights)
        with tf.GradientTape() as tape:
            tape.watch(uu)
            loss = tf.reduce_sum(c * _dense_bn(tf, layer, uu, ww))
        gu, gw = tape.gradient(loss, [uu, ww])
        return np.asarray(gu, np.float64), np.asarray(gw, np.float64)

    def exact(weights):
        z = u.astype(np.float64) @ weights
        dz = reference.bn_backward(c, z, s["gamma"], s["eps"])["x"]
        _, var = reference.batch_stats(z)
        # float32 bound for dz (two length-m reductions in the chain rule) and for the products
        x_hat = np.abs(reference.bn_inference(z, 1, 0, *reference.batch_stats(z), s["eps"]))
        scale = np.abs(s["gamma"]) / np.sqrt(var + s["eps"])
        b_dz = (2 * m + 20) * reference.U32 * scale * (np.abs(c) + np.abs(c).mean(0) + x_hat * np.abs(c * x_hat).mean(0))
        b_dz = b_dz + (k + 4) * reference.U32 * (np.abs(u) @ np.abs(weights)) * scale * 2 * np.abs(c).max(0)
        gu, gw = dz @ weights.T, u.astype(np.float64).T @ dz
        b_gu = b_dz @ np.abs(weights).T + units * reference.U32 * (np.abs(dz) @ np.abs(weights).T)
        b_gw = np.abs(u).T @ b_dz + m * reference.U32 * (np.abs(u).T @ np.abs(dz))
        return gu, gw, b_gu, b_gw

    w64 = w.astype(np.float64)
    gu1, gw1 = grads(w)
    gua, gwa = grads((a * w).astype(np.float32))
    eu1, ew1, bu1, bw1 = exact(w64)
    eua, ewa, bua, bwa = exact(a * w64)
    d_u, d_w = np.abs(gua - gu1), np.abs(a * gwa - gw1)
    ok_u = bool(np.all(d_u <= np.abs(eua - eu1) + bu1 + bua))
    ok_w = bool(np.all(d_w <= np.abs(a * ewa - ew1) + bw1 + a * bwa))
    verdict.record(max_du_diff=d_u.max(), max_du_scale=np.abs(gu1).max(), max_a_dW_minus_dW=d_w.max(),
                   max_dW_scale=np.abs(gw1).max(), eps_effect_du=np.abs(eua - eu1).max(),
                   autodiff_vs_paper_formulas_du=np.abs(gu1 - eu1).max(), a=a)
    verdict.conclude(ok_u and ok_w,
                     f"a = {a:g}: dl/du changes by {d_u.max():.1e} (of {np.abs(gu1).max():.2f}); "
                     f"a*dl/d(aW) - dl/dW = {d_w.max():.1e} (of {np.abs(gw1).max():.2f})")
