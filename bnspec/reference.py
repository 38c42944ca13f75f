"""Batch Normalization in numpy float64 (no TensorFlow), and float32 error bounds for comparing to it.

Notation follows Ioffe & Szegedy (2015), Algorithm 1: over a mini-batch B = {x_1..m},
    mu_B = mean(x),  sigma2_B = mean((x - mu_B)^2)  (biased),
    x_hat = (x - mu_B) / sqrt(sigma2_B + eps),  y = gamma * x_hat + beta.
Inference uses fixed statistics instead of (mu_B, sigma2_B).

Error bounds. TensorFlow evaluates BN in float32 (unit roundoff u = 2^-24) as
    inv = gamma * rsqrt(var + eps);  y = x * inv + (beta - mean * inv)
and computes mean/var by reductions over n elements. `bn_bound` is a first-order worst-case bound on
|y_float32 - y_exact| from that evaluation order: a few roundings per term, plus the effect of the
reduction errors of mean (<= n*u*mean|x|) and of var (<= 2*(n+2)*u*mean(x^2), which also covers
Keras 3's E[x^2] - E[x]^2 formula). These are bounds, not estimates: a comparison that exceeds
one is a real difference, not rounding noise.
"""

from __future__ import annotations

import numpy as np

U32 = 2.0**-24  # float32 unit roundoff
U16 = 2.0**-11  # float16 unit roundoff


def _axes(x: np.ndarray, axis: int) -> tuple[int, ...]:
    axis = axis % x.ndim
    return tuple(i for i in range(x.ndim) if i != axis)


def _bcast(v: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return np.asarray(v, dtype=np.float64).reshape(shape)


def batch_stats(x, axis: int = -1):
    """(mean, biased variance) over every axis but `axis`, in float64."""
    x = np.asarray(x, dtype=np.float64)
    axes = _axes(x, axis)
    return x.mean(axis=axes), x.var(axis=axes)


def bn_inference(x, gamma, beta, mean, var, eps: float, axis: int = -1) -> np.ndarray:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, in float64."""
    x = np.asarray(x, dtype=np.float64)
    b = lambda v: _bcast(v, x, axis)  # noqa: E731
    return b(gamma) * (x - b(mean)) / np.sqrt(b(var) + eps) + b(beta)


def bn_train(x, gamma, beta, eps: float, axis: int = -1):
    """Algorithm 1: returns (y, batch mean, biased batch variance)."""
    mean, var = batch_stats(x, axis)
    return bn_inference(x, gamma, beta, mean, var, eps, axis), mean, var


def ema(moving, batch_value, momentum: float):
    """Keras' moving-statistics update: moving * momentum + batch * (1 - momentum)."""
    return np.asarray(moving, np.float64) * momentum + np.asarray(batch_value, np.float64) * (1.0 - momentum)


def ema_bounds(x, old_mean, old_var, momentum: float, axis: int = -1):
    """Worst-case float32 error of one moving-statistics update on batch x: ~4 roundings of the EMA
    terms, plus the batch statistics' reduction error times (1 - momentum)."""
    x = np.asarray(x, np.float64)
    axes = _axes(x, axis)
    n = x.size // x.shape[axis % x.ndim]
    mean, var = batch_stats(x, axis)
    ax = np.abs(x)
    b_mean = 4 * U32 * (np.abs(old_mean) + np.abs(mean)) + (1 - momentum) * n * U32 * ax.mean(axis=axes)
    b_var = 4 * U32 * (np.abs(old_var) + var) + (1 - momentum) * 2 * (n + 2) * U32 * (ax**2).mean(axis=axes)
    return b_mean, b_var


def bn_bound(x, gamma, beta, mean, var, eps: float, axis: int = -1, n_reduce: int = 0) -> np.ndarray:
    """Elementwise worst-case |float32 BN - exact BN| (see module doc).

    `n_reduce` is the number of elements each statistic was reduced over (0 for inference with
    given statistics, whose only errors are the transform's own roundings)."""
    x = np.asarray(x, dtype=np.float64)
    b = lambda v: _bcast(v, x, axis)  # noqa: E731
    inv = np.abs(b(gamma)) / np.sqrt(b(var) + eps)
    y = bn_inference(x, gamma, beta, mean, var, eps, axis)
    # rsqrt, *gamma, x*inv, mean*inv, beta-(.), final add: <= 4 roundings on each product path
    bound = U32 * (4 * (np.abs(x) + np.abs(b(mean))) * inv + 2 * np.abs(b(beta)) + np.abs(y))
    if n_reduce:
        axes = _axes(x, axis)
        d_mean = n_reduce * U32 * np.abs(x).mean(axis=axes)
        d_var = 2 * (n_reduce + 2) * U32 * (x**2).mean(axis=axes)
        bound = bound + inv * b(d_mean) + np.abs(x - b(mean)) * inv * b(d_var) / (2 * (b(var) + eps))
    return bound


def float16_output_bound(ref, bound) -> np.ndarray:
    """Mixed precision: the float32 result (within `bound` of the exact `ref`) is rounded once more,
    to float16, which adds at most U16 relative to what is rounded."""
    return bound + U16 * (np.abs(ref) + bound)


def batch_of_one_bound(x, gamma, beta, eps: float) -> np.ndarray:
    """|y - beta| bound for a batch of ONE in training mode: mean = x and var = 0 exactly, so
    y = x*inv + (beta - x*inv) with inv = gamma/sqrt(eps) differs from beta only by the rounding of
    the products, about |x|*|gamma|/sqrt(eps)*2^-24 (we allow 4 roundings)."""
    x = np.asarray(x, dtype=np.float64)
    return U32 * (4 * np.abs(x) * np.abs(gamma) / np.sqrt(eps) + 2 * np.abs(beta))


# --------------------------------------------------------------------------- the notebook's MLP


def mlp_training(x, layers, activation: str = "tanh") -> np.ndarray:
    """The same network with every BN layer in training mode (batch statistics), float64, no bound:
    the alternative a mode test must be able to tell apart from `mlp_inference`."""
    act = np.tanh if activation == "tanh" else (lambda z: 1.0 / (1.0 + np.exp(-z)))
    h = np.asarray(x, dtype=np.float64)
    for layer in layers:
        if "kernel" in layer:
            h = h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        else:
            h = act(bn_train(h, layer["gamma"], layer["beta"], layer["eps"])[0])
    return h


LAMBDA = 6.0  # probabilistic bounds hold with probability >= 1 - 2*exp(-LAMBDA^2/2) ~ 1 - 3e-8 each


def mlp_inference(x, layers, activation: str = "tanh"):
    """Forward pass of Dense -> BN(inference) -> act ... -> Dense in float64, with a float32
    rounding-error bound for a whole network.

    `layers` is a list of dicts in model order: {"kernel", "bias"} for Dense and
    {"gamma", "beta", "mean", "var", "eps"} for BN (the activation follows each BN; in a network
    without BN it follows each Dense but the last).

    A worst-case bound compounds |W|^T through every layer and grows far beyond the errors seen in
    practice (it assumes every rounding error has the sign of its weight). Here rounding errors are
    modelled as independent, zero-mean and at most u relative (Higham & Mary 2019, "A new approach to
    probabilistic rounding error analysis"): a dot product of length k has error standard deviation
    <= sqrt(k)*u*sum|w_i x_i|; errors carried in propagate as sqrt((W^2)^T sigma^2); BN scales them
    by |inv| and adds its own rounding (bn_bound); tanh/sigmoid are 1-Lipschitz. Returns
    (logits, LAMBDA * sigma) elementwise."""
    act = np.tanh if activation == "tanh" else (lambda z: 1.0 / (1.0 + np.exp(-z)))
    h = np.asarray(x, dtype=np.float64)
    var = np.zeros_like(h)  # variance of the accumulated float32 error
    plain = not any("gamma" in layer for layer in layers)  # no BN: the activation follows each hidden Dense
    for i, layer in enumerate(layers):
        if "kernel" in layer:
            w, bias = np.asarray(layer["kernel"], np.float64), np.asarray(layer["bias"], np.float64)
            k = w.shape[0]
            own = np.sqrt(k) * U32 * (np.abs(h) @ np.abs(w) + np.abs(bias))
            var = var @ (w**2) + own**2
            h = h @ w + bias
            if plain and i < len(layers) - 1:
                h = act(h)
                var = var + (U32 * np.abs(h)) ** 2
        else:
            g, be, m, v, eps = (layer[n] for n in ("gamma", "beta", "mean", "var", "eps"))
            inv = np.abs(np.asarray(g, np.float64)) / np.sqrt(np.asarray(v, np.float64) + eps)
            var = var * inv**2 + bn_bound(h, g, be, m, v, eps) ** 2
            h = act(bn_inference(h, g, be, m, v, eps))
            var = var + (U32 * np.abs(h)) ** 2
    return h, LAMBDA * np.sqrt(var)


def softmax_cross_entropy(logits, onehot) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return -(np.asarray(onehot, np.float64) * (z - np.log(np.exp(z).sum(axis=1, keepdims=True)))).sum(axis=1)


# --------------------------------------------------------------------------- backward pass (Algorithm 1)


def bn_backward(dy, x, gamma, eps: float, axis: int = -1) -> dict[str, np.ndarray]:
    """The paper's chain rule for training-mode BN (Ioffe & Szegedy 2015, §3, after Algorithm 1),
    term by term, in float64. Sums run over the m elements that share a feature (every axis but
    `axis`). Returns dl/dx_hat, dl/dvar, dl/dmean, dl/dx, dl/dgamma, dl/dbeta."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    axes = _axes(x, axis)
    m = x.size // x.shape[axis % x.ndim]
    b = lambda v: _bcast(v, x, axis)  # noqa: E731
    mean, var = batch_stats(x, axis)
    xc = x - b(mean)
    std = np.sqrt(b(var) + eps)
    x_hat = xc / std
    d_xhat = dy * b(gamma)
    d_var = (d_xhat * xc).sum(axis=axes) * -0.5 * (var + eps) ** -1.5
    d_mean = (d_xhat * -1.0 / std).sum(axis=axes) + d_var * (-2.0 * xc).sum(axis=axes) / m
    d_x = d_xhat / std + b(d_var) * 2.0 * xc / m + b(d_mean) / m
    return {"x_hat": d_xhat, "var": d_var, "mean": d_mean, "x": d_x,
            "gamma": (dy * x_hat).sum(axis=axes), "beta": dy.sum(axis=axes)}


# --------------------------------------------------------------------------- population statistics


def population_stats(batches, axis: int = -1, unbiased: bool = True):
    """Algorithm 2, steps 8-10: E[x] = mean of the batch means; Var[x] = m/(m-1) * mean of the biased
    batch variances (each batch weighs the same; m = elements per feature in a batch)."""
    stats = [batch_stats(b, axis) for b in batches]
    first = np.asarray(batches[0])
    m = first.size // first.shape[axis % first.ndim]
    mean = np.mean([s[0] for s in stats], axis=0)
    var = np.mean([s[1] for s in stats], axis=0)
    return mean, var * (m / (m - 1) if unbiased else 1.0)


def ema_stream(batches, momentum: float, init_mean=0.0, init_var=1.0, axis: int = -1):
    """Keras' moving statistics after a stream of training-mode batches (biased batch variance)."""
    mean, var = np.float64(init_mean), np.float64(init_var)
    for b in batches:
        bm, bv = batch_stats(b, axis)
        mean, var = ema(mean, bm, momentum), ema(var, bv, momentum)
    return mean, var


def fold_into_dense(kernel, bias, gamma, beta, mean, var, eps: float):
    """§3.1: inference BN is one affine map y = a*z + c with a = gamma/sqrt(var+eps) and
    c = beta - a*mean, so Dense(z = xW + b) followed by BN is the Dense layer (W*a, b*a + c)."""
    a = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    c = np.asarray(beta, np.float64) - a * np.asarray(mean, np.float64)
    return np.asarray(kernel, np.float64) * a, np.asarray(bias, np.float64) * a + c


def bn_backward_bound(dy, x, gamma, eps: float, axis: int = -1) -> dict[str, np.ndarray]:
    """First-order worst-case float32 error of the training-mode gradients (dl/dx, dl/dgamma,
    dl/dbeta) however they are evaluated (autodiff of a float32 forward or the paper's formulas).

    Exact: dx = gamma/s * (dy - mean(dy) - x_hat*mean(dy*x_hat)), s = sqrt(var+eps). Errors come from
    (1) the batch statistics (mean off by <= m*u*mean|x|, var by <= 2(m+2)*u*mean(x^2), as in
    bn_bound), which move x_hat by d_xhat and 1/s by a relative d_var/(2 s^2); (2) the two length-m
    reductions of dy and dy*x_hat (<= (m+4)*u times their absolute sums); (3) a few roundings in
    the final combination (covered by the +4 in m+4)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    axes = _axes(x, axis)
    m = x.size // x.shape[axis % x.ndim]
    b = lambda v: _bcast(v, x, axis)  # noqa: E731
    mean, var = batch_stats(x, axis)
    s = np.sqrt(var + eps)
    x_hat = (x - b(mean)) / b(s)
    d_mean = m * U32 * np.abs(x).mean(axis=axes)
    d_var = 2 * (m + 2) * U32 * (x**2).mean(axis=axes)
    d_xhat = b(d_mean / s) + np.abs(x_hat) * b(d_var / (2 * s**2)) + 3 * U32 * np.abs(x_hat)
    a_dy, a_dyx = np.abs(dy).mean(axis=axes), np.abs(dy * x_hat).mean(axis=axes)
    g = np.abs(b(gamma)) / b(s)
    dx = g * (dy - b(dy.mean(axis=axes)) - x_hat * b((dy * x_hat).mean(axis=axes)))
    b_x = g * ((m + 4) * U32 * (np.abs(dy) + b(a_dy) + np.abs(x_hat) * b(a_dyx))
               + d_xhat * b(a_dyx) + np.abs(x_hat) * b((np.abs(dy) * d_xhat).mean(axis=axes))) \
        + np.abs(dx) * b(d_var / (2 * s**2) + 2 * U32)
    b_gamma = (np.abs(dy) * d_xhat).sum(axis=axes) + (m + 4) * U32 * np.abs(dy * x_hat).sum(axis=axes)
    b_beta = (m + 4) * U32 * np.abs(dy).sum(axis=axes)
    return {"x": b_x, "gamma": b_gamma, "beta": b_beta}
