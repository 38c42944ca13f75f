"""ExplicitBatchNorm: Batch Normalization written out from the paper (Ioffe & Szegedy 2015,
Algorithms 1 and 2) with elementwise ops and reductions only (`keras.ops` on Keras 3, so it runs on
the TensorFlow, JAX and PyTorch backends; the same few TensorFlow ops on tf_keras), no call into
Keras' BatchNormalization, ops.batch_normalization, tf.nn.batch_normalization or a fused kernel. A drop-in for keras.layers.BatchNormalization:

    from bnspec.layers import ExplicitBatchNorm
    x = ExplicitBatchNorm(momentum=0.99, epsilon=1e-3)(x)

Contract (the same as Keras 3's layer):
- constructor: axis, momentum, epsilon, center, scale and the four initializers; weights gamma,
  beta, moving_mean, moving_variance in that order, so get_weights()/set_weights() move state
  between this layer and Keras' own;
- training mode (training=True and trainable): normalise with the batch mean and the biased batch
  variance (two-pass), y = gamma * (x - mean) / sqrt(var + eps) + beta, and, with
  population="ema", update moving = moving * momentum + batch * (1 - momentum);
- inference mode (training False/None, or trainable=False whatever `training` says): normalise
  with the moving statistics;
- float16/bfloat16 inputs are computed in float32 and the result cast back (mixed precision);
- `mask` (broadcastable to the input without the feature axis) leaves masked positions out of the
  batch statistics;
- population="algorithm2": training does not touch the moving statistics; call
  bnspec.popstats.recompute(model, batches) after training to set them to Algorithm 2's
  population statistics (mean of batch means, m/(m-1) x mean of batch variances);
- paper_gradient=True: the backward pass is the paper's chain rule (bnspec.reference.bn_backward,
  written in the same ops) through the backend's custom-gradient mechanism (keras.ops.custom_gradient:
  tf.custom_gradient, jax.custom_vjp, torch.autograd.Function; tf.custom_gradient on tf_keras) instead
  of automatic differentiation.

The layer is built on the Keras of the flavour and backend under test (bnspec.flavours): importing
this module imports that backend.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from bnspec import flavours

keras = flavours.keras_module()
POPULATION = ("ema", "algorithm2")
_KERAS3 = flavours.FAMILY[flavours.current()] == "keras3"


def _tf_ops():
    """The handful of keras.ops the layer uses, for tf_keras (Keras 2 has no keras.ops)."""
    tf = flavours.tensorflow()

    def custom_gradient(f):
        def wrapped(*args):
            y, grad = f(*args)
            return y, lambda dy: grad(dy)

        return tf.custom_gradient(wrapped)

    return SimpleNamespace(
        mean=lambda x, axis, keepdims=False: tf.reduce_mean(x, axis, keepdims=keepdims),
        sum=lambda x, axis, keepdims=False: tf.reduce_sum(x, axis, keepdims=keepdims),
        square=tf.square, rsqrt=tf.math.rsqrt, cast=tf.cast, reshape=tf.reshape, shape=tf.shape,
        broadcast_to=tf.broadcast_to, convert_to_tensor=tf.convert_to_tensor, ones_like=tf.ones_like,
        custom_gradient=custom_gradient,
    )


ops = keras.ops if _KERAS3 else _tf_ops()
# What this Keras lets the layer do. Older Keras 3 releases lack them (3.0's add_weight has no
# `autocast`, its keras.ops no custom_gradient); the cases that need them are not applicable there.
AUTOCAST_OPT_OUT = (not _KERAS3) or "autocast" in inspect.signature(keras.layers.Layer.add_weight).parameters
CUSTOM_GRADIENT = hasattr(ops, "custom_gradient")


def _dtype(x) -> str:
    d = x.dtype
    if _KERAS3:
        return keras.backend.standardize_dtype(d)
    return getattr(d, "name", str(d))


def _register(cls):
    saving = getattr(keras, "saving", None)
    register = getattr(saving, "register_keras_serializable", None) or keras.utils.register_keras_serializable
    return register(package="bnspec")(cls)


def _paper_forward(x, gamma, beta, mean, var, axes, eps):
    """Algorithm 1 with the paper's backward formulas as the gradient. `mean` and `var` are x's batch
    statistics, computed once by the caller (who also feeds them to the moving averages). They enter
    the custom-gradient function as inputs (JAX forbids closing over traced values) whose gradients
    are returned as zeros: their contribution to dl/dx is already in the paper's formula for dx."""

    @ops.custom_gradient
    def bn(x, gamma, beta, mean, var):
        xc = x - mean
        inv_std = ops.rsqrt(var + eps)
        x_hat = xc * inv_std
        y = gamma * x_hat + beta
        m = 1.0
        for a in axes:
            m *= x.shape[a]

        def grad(*args, upstream=None):  # TF/JAX pass the upstream gradient first; torch as `upstream`
            dy = upstream if upstream is not None else args[0]
            d_xhat = dy * gamma
            d_var = ops.sum(d_xhat * xc, axes, keepdims=True) * -0.5 * inv_std * inv_std * inv_std
            d_mean = ops.sum(-d_xhat * inv_std, axes, keepdims=True) + \
                d_var * ops.sum(-2.0 * xc, axes, keepdims=True) / m
            d_x = d_xhat * inv_std + d_var * 2.0 * xc / m + d_mean / m
            d_gamma = ops.reshape(ops.sum(dy * x_hat, axes), ops.shape(gamma))
            d_beta = ops.reshape(ops.sum(dy, axes), ops.shape(beta))
            return d_x, d_gamma, d_beta, mean * 0.0, var * 0.0

        return y, grad

    return bn(x, gamma, beta, mean, var)


@_register
class ExplicitBatchNorm(keras.layers.Layer):
    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", population="ema", paper_gradient=False, **kwargs):
        super().__init__(**kwargs)
        if population not in POPULATION:
            raise ValueError(f"population must be one of {POPULATION}, not {population!r}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], not {momentum!r}")
        if float(epsilon) < 0:
            raise ValueError(f"epsilon must be >= 0, not {epsilon!r}")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)
        self.population = population
        self.paper_gradient = bool(paper_gradient)
        self.update_moving = population == "ema"  # bnspec.popstats.recompute switches it on
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        self._axis = self.axis % rank
        features = input_shape[self._axis]
        if features is None:
            raise ValueError(f"the feature axis {self.axis} of input shape {tuple(input_shape)} must be known")
        shape = (int(features),)
        self.gamma = self._weight("gamma", shape, self.gamma_initializer, True) if self.scale else None
        self.beta = self._weight("beta", shape, self.beta_initializer, True) if self.center else None
        self.moving_mean = self._weight("moving_mean", shape, self.moving_mean_initializer, False)
        self.moving_variance = self._weight("moving_variance", shape, self.moving_variance_initializer, False)
        self._reduce = tuple(i for i in range(rank) if i != self._axis)
        self._bshape = [1] * rank
        self._bshape[self._axis] = int(features)
        self.built = True

    def _weight(self, name, shape, initializer, trainable):
        # float32 variables that stay float32 when read under a mixed policy (no autocast)
        # (without AUTOCAST_OPT_OUT they autocast like any other variable: mixed precision is not supported)
        no_autocast = ({"autocast": False} if AUTOCAST_OPT_OUT else {}) if _KERAS3 else {"experimental_autocast": False}
        return self.add_weight(name=name, shape=shape, initializer=initializer, trainable=trainable,
                               dtype="float32", **no_autocast)

    def _param(self, var, default, like):
        if var is None:
            return ops.cast(ops.ones_like(like[(0,) * len(self._bshape)]) * default, "float32")
        return ops.reshape(ops.convert_to_tensor(var), self._bshape)

    def _moments(self, x, mask):
        axes = self._reduce
        if mask is None:
            mean = ops.mean(x, axes, keepdims=True)
            return mean, ops.mean(ops.square(x - mean), axes, keepdims=True)
        w = ops.cast(mask, "float32")
        while len(w.shape) < len(x.shape):
            w = ops.reshape(w, tuple(ops.shape(w)) + (1,))
        w = ops.broadcast_to(w, ops.shape(x))
        count = ops.sum(w, axes, keepdims=True)
        mean = ops.sum(w * x, axes, keepdims=True) / count
        return mean, ops.sum(w * ops.square(x - mean), axes, keepdims=True) / count

    def call(self, inputs, training=None, mask=None):
        in_dtype = _dtype(inputs)
        x = ops.cast(inputs, "float32") if in_dtype in ("float16", "bfloat16") else inputs
        gamma, beta = self._param(self.gamma, 1.0, x), self._param(self.beta, 0.0, x)
        if bool(training) and self.trainable:
            mean, var = self._moments(x, mask)
            if self.paper_gradient and mask is None:
                y = _paper_forward(x, gamma, beta, mean, var, self._reduce, self.epsilon)
            else:
                y = gamma * (x - mean) * ops.rsqrt(var + self.epsilon) + beta
            if self.update_moving:
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + ops.reshape(mean, (-1,)) * (1.0 - m))
                self.moving_variance.assign(self.moving_variance * m + ops.reshape(var, (-1,)) * (1.0 - m))
        else:
            mean, var = self._param(self.moving_mean, 0.0, x), self._param(self.moving_variance, 1.0, x)
            y = gamma * (x - mean) * ops.rsqrt(var + self.epsilon) + beta
        return ops.cast(y, in_dtype) if _dtype(y) != in_dtype else y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        ser = keras.initializers.serialize
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": ser(self.beta_initializer), "gamma_initializer": ser(self.gamma_initializer),
                "moving_mean_initializer": ser(self.moving_mean_initializer),
                "moving_variance_initializer": ser(self.moving_variance_initializer),
                "population": self.population, "paper_gradient": self.paper_gradient}
