"""Keras' BN conventions against PyTorch's, measured on torch.nn.BatchNorm1d/BatchNorm2d themselves.

Every expected value here comes from torch (CPU, float32); bnspec.convert only moves the state and
the momentum between the frameworks (it is the code under test in X03/X04). Without torch the
claims are unmeasured (skipped with the reason)."""

import numpy as np
import pytest

from bnspec import convert, reference
from tests.claims import _kit as probes
from bnspec.measure.backend import to_numpy


# --------------------------------------------------------------------------- helpers

M, UNITS, STEPS = 60, 8, 200
U = reference.U32
NO_TORCH = ("torch is not installed: X01-X04 compare Keras with torch.nn.BatchNorm1d/2d themselves "
            "(pip install -e '.[torch]')")


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    threads = torch.get_num_threads()
    # one thread: torch's CPU reductions run in a fixed order (the same numbers every run), and torch's
    # thread pool does not compete with TensorFlow's in the same process
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def _stream(rng, steps=STEPS):
    scale, shift = rng.uniform(0.5, 3, UNITS), rng.normal(0, 2, UNITS)
    return (rng.normal(0, 1, (steps, M, UNITS)) * scale + shift).astype(np.float32)


def _torch_bn(torch, ndim, state=None, momentum=convert.TORCH_MOMENTUM, eps=convert.TORCH_EPS):
    """torch.nn.BatchNorm1d (inputs (N, C)) or BatchNorm2d (N, C, H, W), loaded with a PyTorch-convention
    state {weight, bias, running_mean, running_var, eps} (rounded to float32 as torch stores it)."""
    cls = torch.nn.BatchNorm1d if ndim == 2 else torch.nn.BatchNorm2d
    bn = cls(UNITS, eps=state["eps"] if state else eps, momentum=momentum)
    if state:
        with torch.no_grad():
            for name in convert.STATE_TORCH:
                getattr(bn, name).copy_(torch.from_numpy(np.asarray(state[name], np.float32)))
    return bn


def _torch_run(torch, bn, x, channels_last=False):
    """bn(x) without autograd; x in Keras' layout (channels last when `channels_last`), float64 out."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1) if channels_last else x))
    with torch.no_grad():
        y = bn(t).numpy()
    return np.asarray(np.moveaxis(y, 1, -1) if channels_last else y, np.float64)


def _torch_state(bn) -> dict:
    out = {name: np.asarray(getattr(bn, name).detach().numpy(), np.float64) for name in convert.STATE_TORCH}
    return dict(out, eps=float(bn.eps))


def _keras_stream(B, keras, batches, momentum):
    """Keras' moving statistics after training-mode calls on `batches`, with the float32 bounds of the
    EMA accumulated step by step (reference.ema_bounds, damped by the momentum)."""
    layer = keras.layers.BatchNormalization(momentum=momentum)
    layer.build((None, UNITS))
    step = B.function(lambda b: layer(b, training=True))
    b_mean, b_var = np.zeros(UNITS), np.zeros(UNITS)
    for b in batches:
        bm, bv = reference.ema_bounds(b, to_numpy(layer.moving_mean), to_numpy(layer.moving_variance), momentum)
        b_mean, b_var = b_mean * momentum + bm, b_var * momentum + bv
        step(b)
    return probes.bn_state(layer), b_mean, b_var


def _torch_stream(torch, batches, momentum):
    """torch.nn.BatchNorm1d in train() on the same batches; also the float32 bound of its unbiased
    running variance: the Keras-style EMA bound scaled by m/(m-1) (every term of torch's update is the
    biased one times m/(m-1), with the same number of roundings)."""
    bn = _torch_bn(torch, 2, momentum=momentum).train()
    want = M / (M - 1)
    b_var = np.zeros(UNITS)
    for b in batches:
        old = _torch_state(bn)
        b_var = b_var * (1 - momentum) + want * reference.ema_bounds(b, old["running_mean"], old["running_var"],
                                                                     1 - momentum)[1]
        _torch_run(torch, bn, b)
    return _torch_state(bn), b_var


LAYOUTS = {"dense": (2, -1), "nchw": (4, 1), "nhwc": (4, -1)}  # rank, Keras axis


def _x(rng, batch, layout, loc=1.0):
    rank, axis = LAYOUTS[layout]
    shape = (batch, UNITS) if rank == 2 else (batch, UNITS, 4, 4) if axis == 1 else (batch, 4, 4, UNITS)
    return (rng.normal(0, 2, shape) + loc).astype(np.float32)


def _inference_bound(x, s, axis):
    """|Keras - torch| for the same exact function: each side's float32 bound (reference.bn_bound) plus
    torch's running_var stored as float32(var + eps_K - eps_T): a relative rounding of var + eps, which
    moves the output by at most u/2 * |gamma (x - mean)| / sqrt(var + eps) (we allow u)."""
    t = convert.keras_to_torch(s)
    b_k = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"], axis=axis)
    b_t = reference.bn_bound(x, t["weight"], t["bias"], t["running_mean"], t["running_var"], t["eps"], axis=axis)
    spread = np.abs(reference.bn_inference(x, s["gamma"], 0.0, s["mean"], s["var"], s["eps"], axis=axis))
    return b_k + b_t + U * spread


def _state_effect(x, s, d_mean, d_var):
    """First-order bound on how much an inference output moves when the state's mean moves by d_mean and
    its variance by d_var: |gamma|/sqrt(var+eps) * (d_mean + |x - mean| * d_var / (2 (var+eps)))."""
    inv = np.abs(s["gamma"]) / np.sqrt(s["var"] + s["eps"])
    return inv * d_mean + np.abs(x - s["mean"]) * inv * d_var / (2 * (s["var"] + s["eps"]))


@pytest.mark.claim("X01")
@pytest.mark.parametrize("keras_momentum", [0.9, 0.99])
def test_momentum_conventions(verdict, B, keras, torch, rng, keras_momentum):
    """Keras' moving mean vs torch's BatchNorm1d running mean after 200 batches, torch's momentum 1 - Keras'."""
    batches = _stream(rng)
    k, b_mean, _ = _keras_stream(B, keras, batches, keras_momentum)
    p = convert.momentum_keras_to_torch(keras_momentum)
    t, _ = _torch_stream(torch, batches, p)
    copied, _ = _torch_stream(torch, batches, keras_momentum)  # the number taken over unchanged
    # each framework is within b_mean (accumulated float32 EMA bound) of the exact EMA: 2*b_mean apart
    bound = 2 * b_mean
    ok = verdict.within("keras_vs_torch_running_mean", k["mean"] - t["running_mean"], bound)
    # power from torch alone (independent of the layer under test): the two momentum readings must be told
    # apart; both are torch's own float32 running means (measured): 1x the bound
    verdict.power("torch_momentum_copied_unchanged", t["running_mean"] - copied["running_mean"], bound, measured=True)
    exact, _ = reference.ema_stream(batches, keras_momentum, init_mean=0.0)
    verdict.record(torch_momentum=p, steps=STEPS, keras_vs_float64=np.max(np.abs(k["mean"] - exact)),
                   torch_vs_float64=np.max(np.abs(t["running_mean"] - exact)))
    verdict.conclude(ok, f"Keras momentum {keras_momentum} vs torch.nn.BatchNorm1d momentum {p:.2g}: running means "
                         f"{probes.value_text(verdict, 'keras_vs_torch_running_mean', '.1e')} apart after {STEPS} "
                         f"batches (bound {probes.bound_text(verdict, 'keras_vs_torch_running_mean')}); torch with "
                         f"momentum {keras_momentum} copied over is "
                         f"{probes.value_text(verdict, 'torch_momentum_copied_unchanged', '.2g')} off")


@pytest.mark.claim("X02")
def test_running_variance_conventions(verdict, B, keras, torch, rng):
    """torch's running_var / Keras' moving_variance after 200 batches vs m/(m-1), within the derived bound."""
    batches = _stream(rng)
    k, _, b_k = _keras_stream(B, keras, batches, 0.9)
    t, b_t = _torch_stream(torch, batches, 0.1)
    want = M / (M - 1)
    ratio = t["running_var"] / k["var"]
    # Exact values: K = c + S, T = c + want*S with c = 0.9^STEPS (the initial variance 1, still in both)
    # and S the EMA of the biased batch variances, so T/K = want - (want-1)*c/K. The float32 values are
    # t = T + dt, k = K + dk (|dt| <= b_t, |dk| <= b_k), and t/k - T/K = dt/k - (T/K)*dk/k exactly, with
    # T/K <= want: |ratio - want| <= (b_t + want*b_k)/k + (want-1)*c/(k - b_k).
    c = 0.9**STEPS
    tol = (b_t + want * b_k) / k["var"] + (want - 1) * c / (k["var"] - b_k)
    ok = verdict.within("ratio_minus_m_over_m_minus_1", ratio - want, tol)
    # a torch tracking the biased variance: ratio 1 exactly (its float32 ratio would itself sit within tol of 1)
    verdict.power("biased_alternative", np.full(UNITS, want - 1.0), tol)
    verdict.record(ratio_min=np.min(ratio), ratio_max=np.max(ratio), expected=want, steps=STEPS)
    verdict.conclude(ok, f"torch.nn.BatchNorm1d running_var / Keras moving_variance = {np.min(ratio):.6f}.."
                         f"{np.max(ratio):.6f} (m/(m-1) = {want:.6f}, tolerance {np.max(tol):.1e})")


@pytest.mark.claim("X03")
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch", [1, 60])
def test_converted_state_same_inference(verdict, keras, torch, rng, batch, layout):
    """Keras' inference output vs torch's BatchNorm1d/2d in eval() on the state convert.keras_to_torch gives."""
    rank, axis = LAYOUTS[layout]
    x = _x(rng, batch, layout)
    layer = probes.make_bn(keras, UNITS, rng, input_shape=(None,) + x.shape[1:], axis=axis)
    s = probes.bn_state(layer)
    y = to_numpy(layer(x, training=False), np.float64)
    t = convert.keras_to_torch(s)
    bn = _torch_bn(torch, rank, t).eval()
    y_torch = _torch_run(torch, bn, x, channels_last=layout == "nhwc")
    bound = _inference_bound(x, s, axis)
    ok = verdict.within("keras_vs_torch", y - y_torch, bound)
    # the alternative: Keras' moving_variance copied as is into torch (eps 1e-5 instead of 1e-3)
    same_var = _torch_run(torch, _torch_bn(torch, rank, dict(t, running_var=s["var"])).eval(), x,
                          channels_last=layout == "nhwc")
    # power from torch alone (never from the layer under test): the two conversions must be told apart;
    # both are torch's float32 outputs (measured): 1x the bound
    verdict.power("variance_copied_unchanged", y_torch - same_var, bound, measured=True)
    verdict.record(torch_eps=t["eps"], keras_eps=s["eps"], torch_module=type(bn).__name__)
    verdict.conclude(ok, f"{layout}, batch {batch}: Keras vs {type(bn).__name__}.eval() on the converted state "
                         f"{probes.within_text(verdict, 'keras_vs_torch', '.1e')}; copying moving_variance unchanged "
                         f"would be off by {probes.value_text(verdict, 'variance_copied_unchanged', '.1e')}")


@pytest.mark.claim("X04")
@pytest.mark.parametrize("phase", ["inference", "training_step"])
def test_torch_batchnorm1d_matches(verdict, keras, torch, rng, phase):
    """State round trip Keras -> torch -> Keras, then inference or one training step compared across both."""
    k_momentum, m = 0.9, M
    layer = probes.make_bn(keras, UNITS, rng, momentum=k_momentum)
    s = probes.bn_state(layer)
    # Keras -> torch: convert.keras_to_torch and the converted momentum, loaded into torch.nn.BatchNorm1d
    tbn = _torch_bn(torch, 2, convert.keras_to_torch(s), momentum=convert.momentum_keras_to_torch(k_momentum))
    # torch -> Keras: read torch's float32 tensors back and convert them with convert.torch_to_keras
    back = convert.torch_to_keras(_torch_state(tbn))
    clone = keras.layers.BatchNormalization(momentum=convert.momentum_torch_to_keras(tbn.momentum),
                                            epsilon=back["eps"])
    clone.build((None, UNITS))
    probes.set_bn_state(clone, back)
    s2 = probes.bn_state(clone)
    # the state round trip: gamma, beta and mean pass through float32 -> float64 -> float32 bitwise;
    # var + 1e-3 - 1e-5 is rounded to float32 in torch and back in Keras: 2 roundings of (var + eps)
    ok = verdict.equal("round_trip_gamma_beta_mean", np.concatenate([s[n] for n in ("gamma", "beta", "mean")]),
                       np.concatenate([s2[n] for n in ("gamma", "beta", "mean")]))
    d_var0 = 2 * U * (s["var"] + s["eps"])
    ok &= verdict.within("round_trip_variance", s2["var"] - s["var"], d_var0)
    verdict.record(keras_momentum=k_momentum, torch_momentum=tbn.momentum, momentum_back=clone.momentum,
                   eps_back=s2["eps"])
    ok &= clone.momentum == k_momentum and s2["eps"] == s["eps"]
    x = (rng.normal(0, 1, (m, UNITS)) * rng.uniform(0.5, 3, UNITS) + rng.normal(0, 2, UNITS)).astype(np.float32)

    if phase == "inference":
        y = to_numpy(layer(x, training=False), np.float64)
        y_t = _torch_run(torch, tbn.eval(), x)
        y_2 = to_numpy(clone(x, training=False), np.float64)
        b_kt = _inference_bound(x, s, -1)
        b_kk = 2 * reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"]) + \
            _state_effect(x, s, 0.0, d_var0)
        ok &= verdict.within("torch_vs_keras_inference", y_t - y, b_kt)
        ok &= verdict.within("round_trip_vs_keras_inference", y_2 - y, b_kk)
        copied = _torch_run(torch, _torch_bn(torch, 2, dict(convert.keras_to_torch(s), running_var=s["var"])).eval(), x)
        # torch vs torch, both measured float32 outputs: independent of Keras, 1x the bound
        verdict.power("variance_copied_unchanged", copied - y_t, b_kt, measured=True)
        verdict.conclude(ok, f"inference: torch {probes.value_text(verdict, 'torch_vs_keras_inference', '.1e')}, "
                             f"round-tripped Keras {probes.value_text(verdict, 'round_trip_vs_keras_inference', '.1e')} "
                             f"from the original (bounds {probes.bound_text(verdict, 'torch_vs_keras_inference')}, "
                             f"{probes.bound_text(verdict, 'round_trip_vs_keras_inference')})")
        return

    # one training step of each framework on the same batch, from the converted states
    y = to_numpy(layer(x, training=True), np.float64)
    y_t = _torch_run(torch, tbn.train(), x)
    y_2 = to_numpy(clone(x, training=True), np.float64)
    k1, t1, c1 = probes.bn_state(layer), _torch_state(tbn), probes.bn_state(clone)
    bmean, bvar = reference.batch_stats(x)
    eps_k, eps_t = s["eps"], t1["eps"]
    want = m / (m - 1)
    p = 1 - k_momentum
    em, ev = reference.ema_bounds(x, s["mean"], s["var"], k_momentum)  # Keras' float32 EMA bounds
    ev_t = want * reference.ema_bounds(x, s["mean"], s["var"] + eps_k - eps_t, k_momentum)[1]  # torch's, as in X02
    # (1) the same running mean (momentum k <-> 1-k): each within em of the exact EMA
    ok &= verdict.within("running_mean_torch_vs_keras", t1["running_mean"] - k1["mean"], 2 * em)
    # (2) running variances: exactly, torch's converted back (running_var + eps_T - eps_K) minus Keras'
    # = (1-k)*(var_B*m/(m-1) + eps_T) + k*(var + eps_K) - eps_K - [k*var + (1-k)*var_B]
    # = (1-k)*(var_B/(m-1) - (eps_K - eps_T)); float32: both EMA bounds plus torch's initial running_var
    # stored as float32 (u*(var + eps_K), weighted by 1-p = k)
    offset = p * (bvar / (m - 1) - (eps_k - eps_t))
    b_v = ev + ev_t + k_momentum * U * (s["var"] + eps_k)
    ok &= verdict.within("running_var_torch_vs_keras_minus_conventions",
                         (t1["running_var"] + eps_t - eps_k - k1["var"]) - offset, b_v)
    # torch's state differs from Keras' measurably after a step: the offset is exact (float64), the
    # alternative "no offset" (0) too
    verdict.power("conventions_offset", offset, b_v)
    # (3) training-mode outputs: each normalises with the batch variance and its own eps, so exactly
    # y_K - beta = (y_T - beta) * sqrt((var_B + eps_T)/(var_B + eps_K)); float32: each side's bn_bound
    f = np.sqrt((bvar + eps_t) / (bvar + eps_k))
    b_train_k = reference.bn_bound(x, s["gamma"], s["beta"], bmean, bvar, eps_k, n_reduce=m)
    b_train_t = reference.bn_bound(x, s["gamma"], s["beta"], bmean, bvar, eps_t, n_reduce=m)
    ok &= verdict.within("training_output_torch_vs_keras_eps_rescaled", (y - s["beta"]) - (y_t - s["beta"]) * f,
                         b_train_k + f * b_train_t)
    verdict.power("eps_difference_in_training_output", (y_t - s["beta"]) * (1 - f), b_train_k + f * b_train_t)
    # (4) the round-tripped Keras layer trains like the original: same training outputs (gamma/beta are
    # bitwise equal), moving mean, and moving variance apart by k * (initial difference) + 2 EMA bounds
    ok &= verdict.within("round_trip_training_output", y_2 - y, 2 * b_train_k)
    ok &= verdict.within("round_trip_moving_mean", c1["mean"] - k1["mean"], 2 * em)
    d_var1 = k_momentum * d_var0 + 2 * ev
    ok &= verdict.within("round_trip_moving_variance", c1["var"] - k1["var"], d_var1)
    # ... and gives the same inference outputs after the step
    x2 = (rng.normal(0, 1, (m, UNITS)) * 2 + 1).astype(np.float32)
    yi, yi_2 = (to_numpy(lay(x2, training=False), np.float64) for lay in (layer, clone))
    b_inf = 2 * reference.bn_bound(x2, k1["gamma"], k1["beta"], k1["mean"], k1["var"], k1["eps"]) + \
        _state_effect(x2, k1, 2 * em, d_var1)
    ok &= verdict.within("round_trip_inference_after_step", yi_2 - yi, b_inf)
    verdict.conclude(ok, "one training step from the converted states: running means "
                         f"{probes.value_text(verdict, 'running_mean_torch_vs_keras', '.1e')} apart; running variances "
                         "apart by the conventions' (1-k)(var_B/(m-1) - (eps_K - eps_T)) = up to "
                         f"{probes.value_text(verdict, 'conventions_offset', '.1e')}, to "
                         f"{probes.value_text(verdict, 'running_var_torch_vs_keras_minus_conventions', '.1e')}; training "
                         "outputs apart only through eps; the round-tripped Keras layer matches the original in outputs "
                         "(both modes) and moving statistics (variance "
                         f"{probes.value_text(verdict, 'round_trip_moving_variance', '.1e')}, "
                         f"bound {probes.bound_text(verdict, 'round_trip_moving_variance')})")
