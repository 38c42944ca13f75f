"""Keras' BN conventions against PyTorch's, in numbers (bnspec.convert); torch itself only if installed."""

import numpy as np
import pytest

from bnspec import convert, probes, reference

M, UNITS, STEPS = 60, 8, 200


def _stream(rng):
    scale, shift = rng.uniform(0.5, 3, UNITS), rng.normal(0, 2, UNITS)
    return (rng.normal(0, 1, (STEPS, M, UNITS)) * scale + shift).astype(np.float32)


def _keras_run(keras, tf, batches, momentum):
    layer = keras.layers.BatchNormalization(momentum=momentum)
    layer.build((None, UNITS))
    step = tf.function(lambda b: layer(b, training=True))
    b_mean, b_var = np.zeros(UNITS), np.zeros(UNITS)
    for b in batches:  # accumulate the per-step float32 bounds (damped by the momentum)
        bm, bv = reference.ema_bounds(b, layer.moving_mean.numpy(), layer.moving_variance.numpy(), momentum)
        b_mean, b_var = b_mean * momentum + bm, b_var * momentum + bv
        step(b)
    return np.asarray(layer.moving_mean.numpy(), np.float64), np.asarray(layer.moving_variance.numpy(), np.float64), \
        b_mean, b_var


def _torch_run(batches, momentum):
    mean, var = np.zeros(UNITS), np.ones(UNITS)
    for b in batches:
        mean, var = convert.torch_update(mean, var, b, momentum)
    return mean, var


@pytest.mark.claim("X01")
@pytest.mark.parametrize("keras_momentum", [0.9, 0.99])
def test_momentum_conventions(verdict, keras, tf, rng, keras_momentum):
    batches = _stream(rng)
    k_mean, _, b_mean, _ = _keras_run(keras, tf, batches, keras_momentum)
    t_mean, _ = _torch_run(batches, convert.momentum_keras_to_torch(keras_momentum))
    err = np.abs(k_mean - t_mean)
    wrong, _ = _torch_run(batches, keras_momentum)  # taking the number over unchanged
    verdict.record(max_abs_err=err.max(), bound=b_mean.max(), torch_momentum=convert.momentum_keras_to_torch(keras_momentum),
                   diff_if_momentum_copied=np.abs(k_mean - wrong).max())
    verdict.conclude(bool(np.all(err <= b_mean)),
                     f"Keras {keras_momentum} vs PyTorch {convert.momentum_keras_to_torch(keras_momentum):.2g}: running "
                     f"means differ by {err.max():.1e} (bound {b_mean.max():.1e}) after {STEPS} batches")


@pytest.mark.claim("X02")
def test_running_variance_conventions(verdict, keras, tf, rng):
    batches = _stream(rng)
    _, k_var, _, b_var = _keras_run(keras, tf, batches, 0.9)
    _, t_var = _torch_run(batches, 0.1)
    ratio = t_var / k_var
    want = M / (M - 1)
    # after 200 steps the initial value weighs 0.9^200 ~ 7e-10; the rest is float32 rounding of k_var
    tol = want * (b_var / k_var) + 0.9**STEPS * np.abs(1 - want)
    err = np.abs(ratio - want)
    verdict.record(ratio_min=ratio.min(), ratio_max=ratio.max(), expected=want, max_err=err.max(), tolerance=tol.max())
    verdict.conclude(bool(np.all(err <= tol)),
                     f"PyTorch running_var / Keras moving_variance = {ratio.min():.6f}..{ratio.max():.6f} "
                     f"(m/(m-1) = {want:.6f})")


@pytest.mark.claim("X03")
@pytest.mark.parametrize("batch", [1, 60])
def test_converted_state_same_inference(verdict, keras, rng, batch):
    layer = probes.make_bn(keras, UNITS, rng)
    s = probes.bn_state(layer)
    x = (rng.normal(0, 2, (batch, UNITS)) + 1).astype(np.float32)
    y = np.asarray(layer(x, training=False), np.float64)
    t = convert.keras_to_torch(s)
    y_torch = convert.torch_inference(x, t)
    back = convert.torch_to_keras(t)
    round_trip = max(float(np.abs(back[k] - s[k]).max()) for k in ("gamma", "beta", "mean", "var"))
    bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"]) + 1e-12
    err = np.abs(y - y_torch)
    same_eps = convert.torch_inference(x, dict(t, running_var=s["var"]))  # copying the variance as is
    verdict.record(max_abs_err=err.max(), bound=bound.max(), round_trip_err=round_trip, torch_eps=t["eps"],
                   diff_if_variance_copied_unchanged=np.abs(y - same_eps).max())
    verdict.conclude(bool(np.all(err <= bound)) and round_trip < 1e-12,
                     f"Keras layer vs PyTorch formula on the converted state: {err.max():.1e} (bound {bound.max():.1e}); "
                     f"copying moving_variance unchanged would be off by {np.abs(y - same_eps).max():.1e}")


@pytest.mark.claim("X04")
def test_torch_batchnorm1d_matches(verdict, keras, rng):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch to run this claim)")
    layer = probes.make_bn(keras, UNITS, rng)
    s = probes.bn_state(layer)
    x = (rng.normal(0, 2, (60, UNITS)) + 1).astype(np.float32)
    t = convert.keras_to_torch(s)
    bn = torch.nn.BatchNorm1d(UNITS, eps=t["eps"]).eval()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).copy_(torch.tensor(t[name], dtype=torch.float32))
        y_t = bn(torch.tensor(x)).numpy().astype(np.float64)
    y = np.asarray(layer(x, training=False), np.float64)
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    err = np.abs(y - y_t)
    verdict.record(max_abs_err=err.max(), bound=2 * bound.max(), torch_vs_reference=np.abs(y_t - ref).max())
    verdict.conclude(bool(np.all(err <= 2 * bound)), f"torch.nn.BatchNorm1d vs Keras: {err.max():.1e} (bound {2 * bound.max():.1e})")
