"""The float32 rounding rules of the layers, one function per kind: given a layer's float32 inputs (as Keras
computed them) and the standard deviations of the errors they carry for Keras' evaluation (sk) and the
exported graph's (se), each returns the layer's float64 value, the two outgoing sigmas, and the sigma of
Keras' rounding in the layer alone (what bnspec.audit.bound self-checks). numpy only.

The rounding model is the project's (bnspec.reference.mlp_inference, bnspec.subjects.export.network_bound):
u = 2^-24; rounding errors independent, zero-mean, at most u relative; a dot product of length k has error
sd <= sqrt(k) u sum|w_i x_i|; incoming errors propagate as sqrt((W^2)^T sigma^2). Per layer:

  Dense / Conv1D / Conv2D / DepthwiseConv2D (any stride, padding, dilation; dot products of length k):
      sigma_out^2 = W^2 . sigma_in^2 + (sqrt(k) u (|W| . |x| + |b|))^2
  BatchNormalization, inference (a = gamma/sqrt(var+eps), c = beta - a*mean):
      sigma_out^2 = a^2 sigma_in^2 + bn_bound^2 (reference.bn_bound: the roundings of a*x + c). The export may
      precompute a and c (+ u (R_A|a x| + (R_A+2)|a mean| + |beta|)), or fold BN into the Dense/Conv before it
      (W' = W a, b' = b a + c: + (R_A+1) u |a| |W|.|x| for W', u((R_A+1)|b a| + (R_A+2)|a mean| + |beta|) for b',
      and the dot product over W'), exactly network_bound's terms; the export side carries the union, so the
      bound holds whichever form the converter chose (the census says which).
  BatchNormalization in training mode (a hard-coded training=True; only for the D03 diagnosis): batch
      statistics, bn_bound with the reduction error of n values, and the statistics' dependence on the input
      error, |a| (sigma + mean(sigma) + |x_hat| mean(|x_hat| sigma)) by the triangle inequality.
  Add / Subtract / Average: errors of the branches are correlated (a shortcut carries its input's error), so
      their sigmas add (sd(X+Y) <= sd(X) + sd(Y) for any correlation), plus sqrt(n-1) u sum|x_i| for the sums.
  Multiply: sum_i |prod_{j != i} x_j| sigma_i, plus sqrt(n-1) u |y|. Maximum / Minimum / max pooling: 1-Lipschitz
      and exact: the largest incoming sigma (of the window). ReLU: exact and 1-Lipschitz, sigma unchanged, except
      where Keras' value lies below -LAMBDA (sk + se): the exact value (within LAMBDA sk of it) and the export's
      (within LAMBDA se of the exact) are negative too, all three outputs are 0, and sigma is 0 there.
  Concatenate, padding, cropping, Flatten / Reshape / Permute, Dropout and other inference identities: moved,
      not changed.
  Average pooling / global average pooling over P values: mean(sigma) + sqrt(P) u mean|x| + u |mean|
      (network_bound's form). tanh / sigmoid: 1-Lipschitz, + U_FN |y| (their kernels are approximations of a
      few ulp: see U_FN; network_bound takes u|y|, so on a tanh network this bound is the looser one).
  softmax (y = exp(z - max) / sum): incoming y_i (sigma_i + sum_j y_j sigma_j); own y_i (u |z_i - max| + U_FN +
      u (2 + sqrt(n))): the subtraction's rounding through exp, exp itself (as tanh), the n-term sum, and the
      division (or a reciprocal and a product).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnspec import reference
from bnspec.reference import LAMBDA, U32
from bnspec.subjects.export import R_A

U = U32
# tanh, sigmoid and exp are not correctly rounded in float32 kernels: Eigen's rational tanh (TensorFlow) is
# documented "accurate up to a couple of ulp" (Eigen/src/Core/MathFunctionsImpl.h), and this audit's self-check
# measures 4.5 u|y| for it; MLAS, XNNPACK and OpenVINO's JIT kernels are approximations of the same kind. Taken
# as 4 ulp = 8 u|y| (twice the documented couple). network_bound takes one rounding (u|y|), which the
# self-check of a tanh layer alone shows to be exceeded.
U_FN = 8 * U32
CHUNK_BYTES = 64 * 2**20  # im2col buffers are built per chunk of examples of at most this size


@dataclass
class Op:
    """One layer call of the graph. `inputs`/`output`: tensor ids (keys of the captured values); `p`: what the
    kind needs (weights as float64 arrays); `why`: for kind "unknown", why no float32 model applies."""

    path: str
    cls: str
    kind: str
    p: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    output: int = 0
    why: str = ""


@dataclass
class Out:
    y: np.ndarray  # the layer's float64 value on Keras' float32 inputs
    sk: np.ndarray  # sigma of Keras' evaluation after this layer
    se: np.ndarray  # sigma of the export's evaluation
    own: np.ndarray | float  # sigma of Keras' rounding in this layer alone (the self-check's bound)


def _q(*terms) -> np.ndarray:
    """Quadrature sum of independent standard deviations."""
    return np.sqrt(sum(np.square(t) for t in terms))


def _axis_shape(ndim: int, axis: int) -> list:
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return shape


# --------------------------------------------------------------------------- spatial helpers (channels last)


def _to_nhwc(x, cf: bool, rank: int):
    """x as N,H,W,C (1-D layers get H=1)."""
    if cf:
        x = np.moveaxis(x, 1, -1)
    return x[:, None] if rank == 1 else x


def _from_nhwc(x, cf: bool, rank: int):
    x = x[:, 0] if rank == 1 else x
    return np.moveaxis(x, -1, 1) if cf else x


def _pads(n: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """TensorFlow's 'same' rule (Keras uses it on every backend): out = ceil(n/s), the extra row at the end."""
    if padding == "valid":
        return 0, 0
    total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _windows(x, k, s, d, padding, fill=0.0):
    """N,Ho,Wo,C,kh,kw windows of an N,H,W,C array."""
    pads = [_pads(x.shape[1 + i], k[i], s[i], d[i], padding) for i in range(2)]
    x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=fill)
    ext = tuple((k[i] - 1) * d[i] + 1 for i in range(2))
    w = np.lib.stride_tricks.sliding_window_view(x, ext, axis=(1, 2))
    return w[:, ::s[0], ::s[1], :, ::d[0], ::d[1]]


def _chunks(n: int, per_example: int):
    step = max(1, CHUNK_BYTES // max(per_example * 8, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _conv(pairs, p, depthwise: bool):
    """For each (N,H,W,C array, kernel) pair: the convolution (or depthwise convolution: kernel kh,kw,C,M; output
    channel c*M + m, Keras' order) with the layer's strides, dilation and padding, in float64, built from
    im2col windows per chunk of examples."""
    kh, kw = pairs[0][1].shape[:2]
    k, s, d = (kh, kw), p["strides"], p["dilation"]
    probe = _windows(pairs[0][0][:1], k, s, d, p["padding"])
    outs = [[] for _ in pairs]
    for sl in _chunks(len(pairs[0][0]), int(np.prod(probe.shape[1:]))):
        for j, (a, W) in enumerate(pairs):
            win = _windows(a[sl], k, s, d, p["padding"])
            if depthwise:
                outs[j].append(np.einsum("nhwcuv,uvcm->nhwcm", win, W).reshape(*win.shape[:3], -1))
            else:
                cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * W.shape[2])
                outs[j].append((cols @ W.reshape(-1, W.shape[3])).reshape(*win.shape[:3], W.shape[3]))
    return [np.concatenate(o) for o in outs]


def _linear(x, sk, se, p):
    """(z, A = |W|.|x|, |b| broadcast, propagated Keras sigma^2, propagated export sigma^2, k) of a dense, conv
    or depthwise layer."""
    W, b = p["W"], p["b"]
    if p["kind"] == "dense":
        z, A, pk, pe, k = x @ W, np.abs(x) @ np.abs(W), sk**2 @ W**2, se**2 @ W**2, W.shape[0]
        shape = [-1]
    else:
        cf, rank = p["cf"], p["rank"]
        pairs = [(_to_nhwc(t, cf, rank), w) for t, w in ((x, W), (np.abs(x), np.abs(W)), (sk**2, W**2), (se**2, W**2))]
        z, A, pk, pe = (_from_nhwc(t, cf, rank) for t in _conv(pairs, p, p["kind"] == "depthwise"))
        k = W.shape[0] * W.shape[1] * (1 if p["kind"] == "depthwise" else W.shape[2])
        shape = _axis_shape(z.ndim, 1 if cf else -1)
    absb = 0.0
    if b is not None:
        z = z + b.reshape(shape)
        absb = np.abs(b).reshape(shape)
    return z, A, absb, pk, pe, k


def _activate(fn: str, z, sigmas, p=None, dead_relu: bool = True):
    """(y, sigmas) after activation `fn`; None when `fn` has no model here. dead_relu=False: ReLU passes every
    sigma on (network_bound's rule), for comparing with it."""
    p = p or {}
    if fn in (None, "linear"):
        return z, sigmas
    if fn in ("relu", "relu6"):  # exact and 1-Lipschitz; no error where every evaluation is clipped
        top = 6.0 if fn == "relu6" else p.get("max_value")
        reach = LAMBDA * (sigmas[0] + sigmas[1])
        live = (z > -reach) & (z < top + reach) if top is not None else z > -reach
        live = live if dead_relu else np.ones(z.shape, bool)
        return np.clip(z, 0.0, top), [np.where(live, s, 0.0) for s in sigmas]
    if fn == "leaky_relu":
        alpha = float(p.get("negative_slope", 0.2))
        y = np.where(z > 0, z, alpha * z)
        own = U * np.abs(y) * (z <= 0)
        return y, [_q(max(1.0, abs(alpha)) * s, own) for s in sigmas]
    if fn in ("tanh", "sigmoid"):
        y = np.tanh(z) if fn == "tanh" else 1.0 / (1.0 + np.exp(-z))
        return y, [_q(s, U_FN * np.abs(y)) for s in sigmas]
    if fn == "softmax":
        axis = p.get("axis", -1)
        m = z.max(axis=axis, keepdims=True)
        e = np.exp(z - m)
        y = e / e.sum(axis=axis, keepdims=True)
        own = y * (U * np.abs(z - m) + U_FN + U * (2 + np.sqrt(z.shape[axis])))
        return y, [_q(y * (s + (y * s).sum(axis=axis, keepdims=True)), own) for s in sigmas]
    return None


def _dense_or_conv(xs, sks, ses, p, fold_out: dict | None, dead_relu: bool = True):
    z, A, absb, pk, pe, k = _linear(xs[0], sks[0], ses[0], p)
    own = np.sqrt(k) * U * (A + absb)
    sk, se = _q(np.sqrt(pk), own), _q(np.sqrt(pe), own)
    if fold_out is not None:  # the export may fold the BN that follows: the folded evaluation needs these
        fold_out.update(A=A, pe=pe, k=k, b=p["b"])
    got = _activate(p.get("activation"), z, [sk, se, own], p, dead_relu)
    if got is None:
        return None
    y, (sk, se, own) = got
    return Out(y, sk, se, own)


def _bn(xs, sks, ses, p, fold: dict | None):
    x, sk, se = xs[0], sks[0], ses[0]
    ax = p["axis"] % x.ndim
    shape = _axis_shape(x.ndim, ax)
    g, beta, mean, var, eps = p["gamma"], p["beta"], p["mean"], p["var"], p["eps"]
    n_reduce = 0
    if p.get("mode") == "batch":
        mean, var = reference.batch_stats(x, ax)
        n_reduce = x.size // x.shape[ax]
    a = g / np.sqrt(var + eps)
    c = beta - a * mean
    y = reference.bn_inference(x, g, beta, mean, var, eps, axis=ax)
    bnb = reference.bn_bound(x, g, beta, mean, var, eps, axis=ax, n_reduce=n_reduce)
    ab = np.abs(a).reshape(shape)
    if n_reduce:
        red = tuple(i for i in range(x.ndim) if i != ax)
        xhat = np.abs(y - beta.reshape(shape)) / np.where(np.abs(g) > 0, np.abs(g), 1.0).reshape(shape)

        def through(s):
            return ab * (s + s.mean(axis=red, keepdims=True) + xhat * (xhat * s).mean(axis=red, keepdims=True))

        return Out(y, _q(through(sk), bnb), _q(through(se), bnb), bnb)
    skn = _q(sk * ab, bnb)
    if fold is None:
        affine = U * (R_A * np.abs(a.reshape(shape) * x) + ((R_A + 2) * np.abs(a * mean) + np.abs(beta)).reshape(shape))
        return Out(y, skn, _q(se * ab, bnb, affine), bnb)
    A, k, b = fold["A"], fold["k"], fold["b"]  # network_bound's folded evaluation (W' = W a, b' = b a + c)
    bias = np.abs(b * a).reshape(shape) if b is not None else 0.0
    fold_w = (R_A + 1) * U * A * ab
    fold_b = U * ((R_A + 1) * bias + ((R_A + 2) * np.abs(a * mean) + np.abs(beta)).reshape(shape))
    shift = np.abs(b * a + c if b is not None else c).reshape(shape)
    own_f = np.sqrt(k) * U * (A * ab + shift)
    return Out(y, skn, _q(np.sqrt(fold["pe"]) * ab, own_f, fold_w, fold_b, bnb), bnb)


def _merge(kind, xs, sks, ses, p):
    xs = np.broadcast_arrays(*xs)
    sks, ses = np.broadcast_arrays(*sks), np.broadcast_arrays(*ses)
    n = len(xs)
    if kind in ("add", "subtract", "average"):
        y = xs[0] - xs[1] if kind == "subtract" else sum(xs)
        own = np.sqrt(max(n - 1, 1)) * U * sum(np.abs(t) for t in xs)
        scale = 1.0 / n if kind == "average" else 1.0
        if kind == "average":
            y = y / n
            own = _q(own / n, U * np.abs(y))
        return Out(y, _q(scale * sum(sks), own), _q(scale * sum(ses), own), own)
    if kind == "multiply":
        y = np.prod(xs, axis=0)
        own = np.sqrt(n - 1) * U * np.abs(y)
        weights = [np.abs(np.prod([t for j, t in enumerate(xs) if j != i], axis=0)) for i in range(n)]
        sk, se = (sum(w * s for w, s in zip(weights, sig)) for sig in (sks, ses))
        return Out(y, _q(sk, own), _q(se, own), own)
    if kind in ("maximum", "minimum"):
        y = np.max(xs, axis=0) if kind == "maximum" else np.min(xs, axis=0)
        return Out(y, np.max(sks, axis=0), np.max(ses, axis=0), 0.0)
    ax = p["axis"]
    return Out(np.concatenate(xs, ax), np.concatenate(sks, ax), np.concatenate(ses, ax), 0.0)


def _pool(kind, x, sk, se, p):
    cf, rank = p["cf"], p["rank"]
    x4, sk4, se4 = (_to_nhwc(t, cf, rank) for t in (x, sk, se))
    if kind in ("gap", "gmp"):
        red = (1, 2)
        if kind == "gmp":
            y, sko, seo, own = x4.max(axis=red), sk4.max(axis=red), se4.max(axis=red), 0.0
        else:
            P = x4.shape[1] * x4.shape[2]
            y = x4.mean(axis=red)
            own = np.sqrt(P) * U * np.abs(x4).mean(axis=red) + U * np.abs(y)
            sko, seo = sk4.mean(axis=red) + own, se4.mean(axis=red) + own
        if p.get("keepdims"):
            y, sko, seo = (_from_nhwc(t[:, None, None, :], cf, 2) for t in (y, sko, seo))
            own = _from_nhwc(own[:, None, None, :], cf, 2) if not np.isscalar(own) else own
        return Out(y, sko, seo, own)
    k, s, pad = p["pool"], p["strides"], p["padding"]
    if kind == "maxpool":
        y = _windows(x4, k, s, (1, 1), pad, fill=-np.inf).max(axis=(4, 5))
        sko, seo = (_windows(t, k, s, (1, 1), pad).max(axis=(4, 5)) for t in (sk4, se4))
        return Out(*(_from_nhwc(t, cf, rank) for t in (y, sko, seo)), 0.0)
    count = _windows(np.ones_like(x4[:1, ..., :1]), k, s, (1, 1), pad).sum(axis=(4, 5))
    y = _windows(x4, k, s, (1, 1), pad).sum(axis=(4, 5)) / count
    own = np.sqrt(count) * U * _windows(np.abs(x4), k, s, (1, 1), pad).sum(axis=(4, 5)) / count + U * np.abs(y)
    sko, seo = (_windows(t, k, s, (1, 1), pad).sum(axis=(4, 5)) / count + own for t in (sk4, se4))
    return Out(*(_from_nhwc(t, cf, rank) for t in (y, sko, seo, own)))


def evaluate(op: Op, xs, sks, ses, fold_in=None, fold_out=None, dead_relu: bool = True) -> Out | None:
    """The layer's float64 value on inputs xs and its rounding (Out), or None when it has no rule. fold_in: the
    pieces of the Dense/Conv a BN may be folded into; fold_out: a dict to fill with them (a linear layer)."""
    kind, p = op.kind, op.p
    if kind in ("dense", "conv", "depthwise"):
        return _dense_or_conv(xs, sks, ses, {**p, "kind": kind}, fold_out, dead_relu)
    if kind == "bn":
        return _bn(xs, sks, ses, p, fold_in)
    if kind == "act":
        got = _activate(p["fn"], xs[0], [sks[0], ses[0], np.zeros_like(xs[0])], p, dead_relu)
        return None if got is None else Out(got[0], *got[1])
    if kind in ("add", "subtract", "average", "multiply", "maximum", "minimum", "concat"):
        return _merge(kind, xs, sks, ses, p)
    if kind in ("maxpool", "avgpool", "gap", "gmp"):
        return _pool(kind, xs[0], sks[0], ses[0], p)
    if kind == "shape":  # padding, cropping, reshaping, inference identities: a numpy function moves every array
        f = p["fn"]
        return Out(f(xs[0]), f(sks[0]), f(ses[0]), 0.0)
    if kind == "rescale":
        scale, offset = p["scale"], p["offset"]
        y = xs[0] * scale + offset
        own = U * (np.abs(xs[0] * scale) + np.abs(y))
        return Out(y, _q(np.abs(scale) * sks[0], own), _q(np.abs(scale) * ses[0], own), own)
    return None


