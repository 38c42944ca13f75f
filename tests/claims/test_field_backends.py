"""Keras 3 across backends (C03, C05, C13, C14, C19, C20, C21): BN's mode under fit() and torch's
Module flags, the numerics of each backend's moments and inference transform, and gradients.

Every test runs in this process on the backend under test (KERAS_BACKEND=tensorflow|jax|torch, or tf_keras)
through keras.ops, numpy and bnspec.measure.backend; C13 (torch.nn.Module.train/eval) skips on the other backends,
C05's synchronized=True case skips where Keras refuses it (jax, torch: the refusal is checked, as K11). Comparisons are against the numpy
float64 reference (bnspec.reference) with float32 bounds derived beside each test (u = 2^-24, U32), or
bitwise (verdict.equal); a non-finite measurement is an error unless the claim is about non-finite values
(C05 counts NaN outputs)."""

import math

import numpy as np
import pytest

from bnspec import reference
from bnspec.measure.backend import to_numpy
from tests.claims import _kit as probes
from bnspec.measure.verdict import finite
from bnspec.reference import U32


# --------------------------------------------------------------------------- helpers


def _precondition(verdict, ok: bool, why: str) -> None:
    """A check of the experiment's design; failing it is an error of the experiment, not a verdict."""
    if not ok:
        pytest.fail(f"{verdict.claim.id}: the experiment did not run as designed: {why}", pytrace=False)


# C03: a subclassed model that may not forward `training` to its BN

def _subclassed(keras, forward: bool):
    class DenseBN(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)
            self.bn = keras.layers.BatchNormalization(momentum=0.0)

        def call(self, x, training=None):
            h = self.dense(x)
            return self.bn(h, training=training) if forward else self.bn(h)  # the trap: no training= forwarded

    return DenseBN()


# C13: a model torch's train()/eval() reach

def _torch_model(keras, bn, kind: str, features: int):
    if kind == "sequential":
        return keras.Sequential([keras.Input((features,)), bn])

    class Wrapper(keras.Model):  # a subclassed model: its BN is a torch child module, so train()/eval() reach it
        def __init__(self):
            super().__init__()
            self.bn = bn

        def call(self, x, training=None):
            return self.bn(x, training=training)

    return Wrapper()


# C14

SHAPES = {  # name -> (input shape, axis), E02's (less 60x100: 7x3 covers dense inputs, and jax.grad is slow)
    "7x3": ((7, 3), -1),
    "nhwc_axis-1": ((8, 4, 4, 6), -1),
    "nchw_axis1": ((8, 6, 4, 4), 1),
}


# --------------------------------------------------------------------------- C03


@pytest.mark.claim("C03")
@pytest.mark.parametrize("forwarding", ("none", "explicit"))
def test_fit_trains_an_unforwarded_bn(verdict, keras, rng, forwarding):
    """Moving statistics after fit() with `training` forwarded to BN or not, vs dense(x)'s batch statistics."""
    n, k = 16, 4
    x = (3.0 + rng.normal(0, 1, (n, k))).astype(np.float32)  # mean 3: the batch mean of dense(x) is far from 0
    y = rng.normal(0, 1, (n, 3)).astype(np.float32)
    model = _subclassed(keras, forwarding == "explicit")
    model(x[:2], training=False)  # build (inference: nothing moves)
    bn = model.bn
    # seeded Dense weights (Keras' initialisers are not seeded here): the same numbers every run
    model.dense.kernel.assign(rng.normal(0, 1, (k, 3)).astype(np.float32))
    model.dense.bias.assign(rng.normal(0, 1, 3).astype(np.float32))
    w0, b0 = probes.f64(model.dense.kernel), probes.f64(model.dense.bias)
    mm0, mv0 = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    loss = float(model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0).history["loss"][0])
    # learning rate 0: w - 0*g is w bitwise, so dense(x) during fit() is recomputable from the final weights
    _precondition(verdict, verdict.equal("kernel_unchanged", w0, probes.f64(model.dense.kernel))
                  and verdict.equal("bias_unchanged", b0, probes.f64(model.dense.bias)), "SGD(0.0) changed the Dense layer")
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)

    # dense(x) in float64 and the float32 layer's error: a length-k dot product and the bias add round at most
    # k + 1 times, |dh| <= (k+1) u (|x| @ |W| + |b|) (Higham 3.1, recursive summation)
    h = x.astype(np.float64) @ w0 + b0
    dh = (k + 1) * U32 * (np.abs(x.astype(np.float64)) @ np.abs(w0) + np.abs(b0))
    mean, var = reference.batch_stats(h)
    b_mean, b_var = reference.ema_bounds(h, mm0, mv0, 0.0)  # the momentum-0 update's own rounding
    # the statistics of h + d with |d| <= dh: the mean moves by <= mean(dh); the variance by
    # |2 cov(h, d) + var(d)| <= 2 mean(|h - mean| dh) + mean(dh^2)
    b_mean = b_mean + dh.mean(axis=0)
    b_var = b_var + 2 * (np.abs(h - mean) * dh).mean(axis=0) + (dh**2).mean(axis=0)
    ok = verdict.within("moving_mean_vs_batch_mean", mm - mean, b_mean)
    ok &= verdict.within("moving_var_vs_batch_var", mv - var, b_var)
    # the alternative (BN left in inference mode): statistics still 0 and 1 (exact)
    verdict.power("inference_mode_alternative", mean - mm0, b_mean)

    # mechanism of the refutation: BN ran in inference mode under fit(): its statistics are bitwise the
    # initial ones, and fit()'s loss is the MSE of the inference-mode output (moving mean 0, variance 1)
    unchanged = verdict.equal("moving_mean_unchanged", mm0, mm) & verdict.equal("moving_var_unchanged", mv0, mv)
    eps = float(bn.epsilon)
    y_inf = reference.bn_inference(h, 1.0, 0.0, mm0, mv0, eps)
    # output error: the transform's rounding (reference.bn_bound) plus dh scaled by inv = 1/sqrt(1 + eps)
    d_y = reference.bn_bound(h, 1.0, 0.0, mm0, mv0, eps) + dh / np.sqrt(mv0 + eps)
    r = y_inf - y
    loss_inf = float(np.mean(r**2))
    # |mean((r+e)^2) - mean(r^2)| <= mean(2|r||e| + e^2); the float32 squares, the 48-term mean and the loss
    # tracker's total/count round at most 48 + 4 times: (n*3 + 4) u * loss
    b_loss = float(np.mean(2 * np.abs(r) * d_y + d_y**2)) + (n * 3 + 4) * U32 * loss_inf
    inference_loss = verdict.within("fit_loss_vs_inference_mode_mse", loss - loss_inf, b_loss)
    y_train = reference.bn_train(h, 1.0, 0.0, eps)[0]
    verdict.record(fit_loss=loss, training_mode_mse=float(np.mean((y_train - y) ** 2)), inference_mode_mse=loss_inf)
    verdict.mechanism("moving_unchanged", unchanged and inference_loss,
                      f"moving statistics bitwise unchanged: {unchanged}; fit() loss {loss:.6g} vs inference-mode "
                      f"MSE {loss_inf:.6g} (bound {b_loss:.2g}): {inference_loss}")
    verdict.conclude(ok, f"forwarding={forwarding}: moving mean {probes.ratio_text(verdict, 'moving_mean_vs_batch_mean')} "
                         "x its bound from the batch mean of dense(x) "
                         f"({probes.value_text(verdict, 'inference_mode_alternative', '.3g')} from the initial 0); fit() "
                         f"loss {loss:.4g}, inference-mode MSE {loss_inf:.4g}")


# --------------------------------------------------------------------------- C05


@pytest.mark.claim("C05")
@pytest.mark.parametrize("synchronized", (False, True))
@pytest.mark.parametrize("ratio", (10, 100, 1000, 10000))
def test_batch_variance_accurate_for_large_means(verdict, keras, backend_name, rng, ratio, synchronized):
    """Batch variance of inputs with |mean|/std up to 10^4 vs the two-pass float32 bound; non-finite outputs."""
    if synchronized:  # TensorFlow-only: skipped only where Keras refuses it (as K11)
        probes.skip_if_synchronized_refused(keras, backend_name)
    n, features = 64, 32
    x = (ratio + rng.normal(0, 1, (n, features))).astype(np.float32)  # |mean| / std = ratio
    bn = keras.layers.BatchNormalization(momentum=0.0, synchronized=synchronized)
    y = bn(x, training=True)
    v = probes.f64(bn.moving_variance)  # momentum 0: exactly the batch variance (0*old + 1*var)
    x64 = x.astype(np.float64)
    mean, var = reference.batch_stats(x64)
    # two-pass in float32 (recursive sums, Higham 1.9 / 3.1): the mean is n roundings off, dm <= n u mean|x|;
    # the deviations, their squares, the n-1 additions and the division add (n + 2) u relative on
    # mean((x - m')^2) = var + (m - m')^2
    dm = n * U32 * np.abs(x64).mean(axis=0)
    b_two = (n + 2) * U32 * var + (1 + (n + 2) * U32) * dm**2
    two_pass = verdict.within("variance_vs_two_pass_bound", v - var, b_two)
    bad = verdict.count_nonfinite("nonfinite_outputs", to_numpy(y))  # the claim is about NaN outputs too
    ok = two_pass and bad == 0
    # the alternative: numpy's float32 one-pass E[x^2] - E[x]^2 on the same data must be outside the bound
    one_pass = np.mean(np.square(x), axis=0, dtype=np.float32) - np.square(np.mean(x, axis=0, dtype=np.float32))
    verdict.power("numpy_one_pass_alternative", one_pass.astype(np.float64) - var, b_two, measured=True)  # float32
    # mechanism: the error is one-pass cancellation. E[x^2] rounds (n + 1) times, E[x]^2 carries
    # 2n u m^2 + u m^2, the subtraction u var (a clamp at 0 moves the result by < its error): with m^2, var
    # <= E[x^2], |err| <= (3n + 3) u E[x^2]
    b_one = (3 * n + 3) * U32 * (x64**2).mean(axis=0)
    cancellation = verdict.within("variance_vs_one_pass_bound", v - var, b_one)
    verdict.mechanism("one_pass_cancellation", cancellation and not two_pass,
                      f"variance error within the one-pass bound: {cancellation}, beyond the two-pass bound "
                      f"({probes.ratio_text(verdict, 'variance_vs_two_pass_bound')} x)")
    rel = np.abs(finite("moving_variance", v) - var) / var
    verdict.record(max_relative_error=float(np.max(rel)), min_variance=float(np.min(v)))
    verdict.conclude(ok, f"|mean|/std = {ratio}: variance off by {np.max(rel):.3g} relative "
                         f"({probes.ratio_text(verdict, 'variance_vs_two_pass_bound')} x the two-pass bound), "
                         f"{bad} non-finite outputs")


# --------------------------------------------------------------------------- C13


@pytest.mark.claim("C13")
@pytest.mark.parametrize("kind", ("sequential", "subclassed"))
@pytest.mark.parametrize("switch", ("train", "eval"))
def test_torch_module_mode_is_ignored(verdict, keras, backend_name, rng, switch, kind):
    """After torch's model.train() or eval(): outputs and statistics follow Keras' `training`, not torch's flag."""
    if backend_name != "torch":
        pytest.skip(f"torch.nn.Module.train()/eval(): torch-specific (this run's backend is {backend_name})")
    momentum, features = 0.5, 5
    bn = probes.make_bn(keras, features, rng, momentum=momentum)
    model = _torch_model(keras, bn, kind, features)
    s = probes.bn_state(bn)
    x = (rng.normal(0, 1, (32, features)) * 2 + 1).astype(np.float32)
    # the opposite flag first, so that the switch really changes what torch records
    (model.eval if switch == "train" else model.train)()
    getattr(model, switch)()
    flag = switch == "train"
    # the design: the model's torch flag is set; in a subclassed model it reaches the BN layer too (a Sequential
    # keeps its layers inside a Functional that torch does not recurse into: recorded, the BN's flag then stays)
    _precondition(verdict, model.training is flag and (kind == "sequential" or bn.training is flag),
                  f"model.{switch}() did not set the torch flag (model {model.training}, BN {bn.training})")
    verdict.record(bn_torch_flag=bool(bn.training), model_torch_flag=bool(model.training))
    y = probes.f64(model(x)) if switch == "train" else probes.f64(model(x, training=True))
    g, b, eps = s["gamma"], s["beta"], s["eps"]
    inf_ref = reference.bn_inference(x, g, b, s["mean"], s["var"], eps)
    inf_bound = reference.bn_bound(x, g, b, s["mean"], s["var"], eps)
    tr_ref, bmean, bvar = reference.bn_train(x, g, b, eps)
    tr_bound = reference.bn_bound(x, g, b, bmean, bvar, eps, n_reduce=len(x))
    # the claim: train() + model(x) -> inference mode; eval() + training=True -> training mode
    ref, bound, other = (inf_ref, inf_bound, tr_ref) if switch == "train" else (tr_ref, tr_bound, inf_ref)
    verdict.power("other_mode_reference", other - ref, bound)
    ok = verdict.within("output_vs_keras_mode_reference", y - ref, bound)
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)
    if switch == "train":
        ok &= verdict.equal("moving_mean_unchanged", s["mean"], mm) & verdict.equal("moving_var_unchanged", s["var"], mv)
    else:
        b_m, b_v = reference.ema_bounds(x, s["mean"], s["var"], momentum)
        ok &= verdict.within("moving_mean_vs_ema", mm - reference.ema(s["mean"], bmean, momentum), b_m)
        ok &= verdict.within("moving_var_vs_ema", mv - reference.ema(s["var"], bvar, momentum), b_v)
    verdict.conclude(ok, f"{kind} model.{switch}() (BN's torch flag {bn.training}): output "
                         f"{probes.ratio_text(verdict, 'output_vs_keras_mode_reference', '.2g')} x the bound of the "
                         f"{'inference' if switch == 'train' else 'training'}-mode reference, the other mode "
                         f"{probes.value_text(verdict, 'other_mode_reference', '.2g')} away")


# --------------------------------------------------------------------------- C14


@pytest.mark.claim("C14")
@pytest.mark.parametrize("shape", list(SHAPES))
def test_gradients_follow_the_paper(B, verdict, keras, rng, shape):
    """dx, dgamma and dbeta of Keras' layer (the backend's autodiff) vs the paper's chain rule, in float64."""
    dims, axis = SHAPES[shape]
    bn = probes.make_bn(keras, dims[axis], rng, input_shape=(None,) + dims[1:], axis=axis)
    s = probes.bn_state(bn)
    x, dy = probes.feature_inputs(rng, dims, axis), rng.normal(0, 1, dims).astype(np.float32)
    ops = probes.ops(keras)
    dy_t = ops.convert_to_tensor(dy)
    gx, (gg, gb) = B.gradients(lambda xt: ops.sum(bn(xt, training=True) * dy_t), x, [bn.gamma, bn.beta])
    ref = reference.bn_backward(dy, x, s["gamma"], s["eps"], axis=axis)
    bound = reference.bn_backward_bound(dy, x, s["gamma"], s["eps"], axis=axis)
    ok = True
    for part, g in (("x", gx), ("gamma", gg), ("beta", gb)):
        ok &= verdict.within(f"d{part}_vs_paper", np.asarray(g, np.float64) - ref[part], bound[part])
    # the alternative (torch before Keras 3.0.5): mean and variance detached, dx = gamma dy / sqrt(var + eps)
    _, var = reference.batch_stats(x, axis)
    detached = reference.bn_inference(dy, s["gamma"], 0.0, 0.0, var, s["eps"], axis=axis)
    verdict.power("detached_statistics_alternative", detached - ref["x"], bound["x"])
    worst = max(probes.ratio(verdict, f"d{p}_vs_paper") for p in ("x", "gamma", "beta"))
    verdict.conclude(ok, f"{shape} on {B.name}: worst gradient error / float32 bound = {worst:.2g}; the detached "
                         f"gradient is {probes.value_text(verdict, 'detached_statistics_alternative', '.2g')} away")


# --------------------------------------------------------------------------- C19


@pytest.mark.claim("C19")
@pytest.mark.parametrize("momentum", (0.0, 0.9))
@pytest.mark.parametrize("rank", (2, 4))
def test_biased_moving_variance_and_keras_ema(verdict, keras, rng, rank, momentum):
    """Moving statistics after 1-3 calls vs Keras' EMA (momentum on the old value) of the biased batch variance."""
    features = 5
    dims = (8, features) if rank == 2 else (2, 2, 2, features)  # m = 8 per feature: m/(m-1) = 8/7
    m = int(np.prod(dims[:-1]))
    bn = probes.make_bn(keras, features, rng, input_shape=(None,) + dims[1:], momentum=momentum)
    s = probes.bn_state(bn)
    steps = 1 if momentum == 0.0 else 3
    mean, var = s["mean"], s["var"]
    var_u, mean_sw, var_sw = var, mean, var  # unbiased alternative; swapped convention (1-momentum on the old)
    b_mean = b_var = b_var_u = 0.0
    for _ in range(steps):
        x = probes.feature_inputs(rng, dims, -1)
        bm, bv = reference.ema_bounds(x, mean, var, momentum)
        # errors carried from earlier steps shrink by momentum, and each step adds its own (reference.ema_bounds)
        b_mean, b_var = b_mean * momentum + bm, b_var * momentum + bv
        b_var_u = b_var_u * momentum + m / (m - 1) * reference.ema_bounds(x, mean, var_u, momentum)[1]
        bmean, bvar = reference.batch_stats(x)
        mean, var = reference.ema(mean, bmean, momentum), reference.ema(var, bvar, momentum)
        var_u = reference.ema(var_u, bvar * m / (m - 1), momentum)
        mean_sw, var_sw = reference.ema(mean_sw, bmean, 1 - momentum), reference.ema(var_sw, bvar, 1 - momentum)
        bn(x, training=True)
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)
    ok = verdict.within("moving_mean_vs_keras_ema", mm - mean, b_mean)
    ok &= verdict.within("moving_var_vs_biased_keras_ema", mv - var, b_var)
    # the unbiased EMA's own float32 error is b_var_u: the bound sums both computations' bounds
    verdict.power("unbiased_alternative", var_u - var, b_var + b_var_u, measured=True)
    verdict.power("swapped_momentum_alternative", mean_sw - mean, b_mean)
    unbiased = verdict.within("moving_var_vs_unbiased_ema", mv - var_u, b_var_u)
    verdict.mechanism("unbiased_moving_variance", unbiased,
                      f"moving variance {probes.value_text(verdict, 'moving_var_vs_unbiased_ema', '.2g')} from the EMA "
                      f"of m/(m-1) = {m / (m - 1):.4f} times the batch variances (bound "
                      f"{probes.bound_text(verdict, 'moving_var_vs_unbiased_ema', '.2g')})")
    verdict.record(steps=steps, elements_per_feature=m)
    verdict.conclude(ok, f"rank {rank}, momentum {momentum}, {steps} call(s): moving mean "
                         f"{probes.ratio_text(verdict, 'moving_mean_vs_keras_ema', '.2g')} x, variance "
                         f"{probes.ratio_text(verdict, 'moving_var_vs_biased_keras_ema', '.2g')} x the bound from the "
                         f"biased Keras EMA; unbiased alternative {probes.value_text(verdict, 'unbiased_alternative', '.2g')} away")


# --------------------------------------------------------------------------- C20


@pytest.mark.claim("C20")
@pytest.mark.parametrize("rank", (2, 4))
@pytest.mark.parametrize("offset", (0, 100, 10000, 100000))
def test_inference_error_independent_of_offset(verdict, keras, rng, offset, rank):
    """Inference output error with a moving mean of 0 to 1e5 vs the shift-safe rounding bound, flat in the mean."""
    features = 4
    dims = (256, features) if rank == 2 else (16, 4, 4, features)
    bn = keras.layers.BatchNormalization()  # gamma 1, beta 0, epsilon 1e-3 (no fused-kernel clamp)
    bn.build((None,) + dims[1:])
    c = np.full(features, offset, np.float32)
    v = np.full(features, 1e-4, np.float32)
    bn.moving_mean.assign(c)
    bn.moving_variance.assign(v)
    x = (offset + 0.01 * rng.normal(0, 1, dims)).astype(np.float32)
    y = probes.f64(bn(x, training=False))
    eps, one, zero = float(bn.epsilon), np.ones(features), np.zeros(features)
    c64, v64, x64 = c.astype(np.float64), v.astype(np.float64), x.astype(np.float64)
    ref = reference.bn_inference(x64, one, zero, c64, v64, eps)
    inv = 1.0 / np.sqrt(v64 + eps)
    # shift-safe order (x - mean) * (gamma * rsqrt(var + eps)) + beta: x - mean rounds once (exactly when x and
    # mean are within a factor 2, Sterbenz), the scale var+eps -> rsqrt (<= 2 ulp) -> *gamma carries <= 4u, the
    # product one more u: <= 6u |x - mean| inv; the final add u |y|, doubled for the computed y and 2nd order
    b_safe = U32 * (6 * np.abs(x64 - c64) * inv + 2 * np.abs(ref))
    ok = verdict.within("error_vs_shift_safe_bound", y - ref, b_safe)
    # the other order, x*inv + (beta - mean*inv): reference.bn_bound is its rounding bound (grows with |mean|)
    b_prod = reference.bn_bound(x64, one, zero, c64, v64, eps)
    in_prod = verdict.within("error_vs_product_order_bound", y - ref, b_prod)
    if offset:  # at c = 0 both orders round the same products: a control, nothing to tell apart
        x32, inv32 = x, np.float32(1.0) / np.sqrt(v + np.float32(eps))  # numpy float32, the product order
        y_prod = x32 * inv32 + (np.float32(0.0) - c * inv32)
        verdict.power("product_order_alternative", y_prod.astype(np.float64) - ref, b_safe, measured=True)  # float32
    verdict.mechanism("product_cancellation", in_prod and not ok,
                      f"error within the x*inv + (beta - mean*inv) bound: {in_prod}; beyond the shift-safe bound "
                      f"({probes.ratio_text(verdict, 'error_vs_shift_safe_bound')} x)")
    err = np.abs(y - ref)
    verdict.record(max_abs_error=float(np.max(err)), output_std=float(np.std(ref)),
                   error_over_product_term=float(np.max(err) / (offset * float(inv[0]) * U32)) if offset else 0.0)
    verdict.conclude(ok, f"c = {offset:g}, rank {rank}: max |y - ref| = {np.max(err):.3g} "
                         f"({probes.ratio_text(verdict, 'error_vs_shift_safe_bound')} x the shift-safe bound, "
                         f"{probes.ratio_text(verdict, 'error_vs_product_order_bound')} x the product-order bound)")


# --------------------------------------------------------------------------- C21


@pytest.mark.claim("C21")
def test_large_batch_statistics_float32_accurate(B, verdict, keras, device, rng):
    """Mean and variance of 3.2 million values per channel (momentum 0) vs pairwise-summation float32 bounds."""
    shape = (64, 224, 224, 3)
    x = rng.random(shape, dtype=np.float32) * np.float32(255.0)  # 38.5 MB, uniform [0, 255]
    f = x.reshape(-1, 3)
    m = f.shape[0]  # 3,211,264 elements per channel
    bn = keras.layers.BatchNormalization(momentum=0.0)
    bn(x, training=True)
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)
    # tf_keras' fused kernel stores the Bessel-corrected batch variance (K16): compare like with like
    bessel = m / (m - 1) if getattr(bn, "fused", False) else 1.0
    f64 = f.astype(np.float64)
    mean = f64.mean(axis=0)
    d = f64 - mean
    # float64 two-pass; even summed sequentially its error (<= m * 2^-53 ~ 4e-10 relative) is ~1e-4 of the bounds
    var = np.einsum("ij,ij->j", d, d) / m
    del d
    ex2 = var + mean**2
    mean_abs = np.abs(f64).mean(axis=0)
    del f64
    level = math.ceil(math.log2(m))  # 22: depth of a pairwise summation tree over m terms
    # pairwise summation: |error| <= level * u * sum|x| (Higham 4.2), one more rounding for the division by m
    b_mean = (level + 1) * U32 * mean_abs
    # variance, one-pass or two-pass with pairwise sums: E[x^2] (squares, tree, division: level + 2 roundings),
    # the mean's square (2(level+1) + 1), the subtraction (1); with m^2, var <= E[x^2]: (3 level + 6) u E[x^2];
    # tf_keras' Bessel factor adds 2u
    b_var = ((3 * level + 6) * U32 + 2 * U32 * (bessel != 1.0)) * ex2 * bessel
    ok = verdict.within("mean_vs_pairwise_bound", mm - mean, b_mean)
    ok &= verdict.within("variance_vs_pairwise_bound", mv - var * bessel, b_var)
    # the alternative: sequential (row-by-row) float32 summation of the same data, what numpy#11331 ran into
    seq_mean = np.cumsum(f, axis=0, dtype=np.float32)[-1] / np.float32(m)
    seq_var = np.cumsum(np.square(f - seq_mean), axis=0, dtype=np.float32)[-1] / np.float32(m)
    verdict.power("sequential_sum_alternative", seq_mean.astype(np.float64) - mean, b_mean, measured=True)  # float32
    # mechanisms: Keras 3 on TensorFlow: bitwise the sequential sums (tf.nn.moments' mean, then the mean of
    # squared deviations); tf_keras' fused kernel: beyond the pairwise bound, within recursive summation's
    # (m - 1 additions + the division: m u sum|x| / m for the mean, (3m + 3) u E[x^2] for the variance, as in
    # C05's one-pass bound, + 2u for tf_keras' Bessel factor)
    seq = verdict.equal("mean_is_sequential_sum", seq_mean, to_numpy(bn.moving_mean)) & verdict.equal(
        "variance_is_sequential_sum", seq_var, to_numpy(bn.moving_variance))
    verdict.mechanism("sequential_summation", seq, f"moving mean and variance bitwise the sequential float32 sums: {seq}")
    rec = verdict.within("mean_vs_recursive_bound", mm - mean, m * U32 * mean_abs)
    rec &= verdict.within("variance_vs_recursive_bound", mv - var * bessel, (3 * m + 3 + 2 * (bessel != 1.0)) * U32 * ex2 * bessel)
    verdict.mechanism("non_pairwise_summation", rec and not ok,
                      f"within the recursive-summation bounds: {rec}; beyond the pairwise ones: {not ok}")
    rel_m = np.max(np.abs(mm - mean) / mean)
    rel_v = np.max(np.abs(mv - var * bessel) / (var * bessel))
    verdict.record(elements_per_channel=m, mean_relative_error=float(rel_m), variance_relative_error=float(rel_v),
                   sequential_mean_relative_error=float(np.max(np.abs(seq_mean - mean) / mean)))
    verdict.conclude(ok, f"{m} elements per channel on {B.name}: mean off by {rel_m:.2g}, variance by {rel_v:.2g} "
                         f"relative ({probes.ratio_text(verdict, 'mean_vs_pairwise_bound', '.2g')} x and "
                         f"{probes.ratio_text(verdict, 'variance_vs_pairwise_bound', '.2g')} x the pairwise bounds)")
