"""ExplicitBatchNorm: Batch Normalization written out from the paper (Ioffe & Szegedy 2015,
Algorithms 1 and 2) with elementwise ops and reductions only (`keras.ops` on Keras 3, so it runs on
the TensorFlow, JAX and PyTorch backends; the same few TensorFlow ops on tf_keras), no call into
Keras' BatchNormalization, ops.batch_normalization, tf.nn.batch_normalization or a fused kernel. A drop-in for keras.layers.BatchNormalization:

    from bnspec.subjects.layers import ExplicitBatchNorm
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
  bnspec.subjects.popstats.recompute(model, batches) after training to set them to Algorithm 2's
  population statistics (mean of batch means, m/(m-1) x mean of batch variances);
- paper_gradient=True: the backward pass is the paper's chain rule (bnspec.reference.bn_backward,
  written in the same ops) through the backend's custom-gradient mechanism (keras.ops.custom_gradient:
  tf.custom_gradient, jax.custom_vjp, torch.autograd.Function; tf.custom_gradient on tf_keras) instead
  of automatic differentiation.

The layer class is made for a Keras module (`for_keras(keras)`, once per module: Keras 3 on any backend,
or tf_keras), and registered for deserialisation there; importing this module imports no Keras:

    L = layers.for_keras(keras)
    L.ExplicitBatchNorm(axis=-1), L.ops, L.AUTOCAST_OPT_OUT, L.CUSTOM_GRADIENT
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from bnspec.flavours import is_keras3

POPULATION = ("ema", "algorithm2")


def _tf_ops():
    """The handful of keras.ops the layer uses, for tf_keras (Keras 2 has no keras.ops)."""
    import tensorflow as tf

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


_MADE: dict[int, SimpleNamespace] = {}  # id(keras module) -> what for_keras made for it


def for_keras(keras) -> SimpleNamespace:
    """ExplicitBatchNorm for this Keras module (keras or tf_keras), made and registered once, with what this
    Keras lets the layer do: `ops` (keras.ops, or the TensorFlow ops it needs on tf_keras), `AUTOCAST_OPT_OUT`
    and `CUSTOM_GRADIENT` (older Keras 3 releases lack them: 3.0's add_weight has no `autocast`, its
    keras.ops no custom_gradient; the cases that need them are not applicable there)."""
    made = _MADE.get(id(keras))
    if made is None:
        keras3 = is_keras3(keras)
        ops = keras.ops if keras3 else _tf_ops()
        autocast = (not keras3) or "autocast" in inspect.signature(keras.layers.Layer.add_weight).parameters
        cls = type("ExplicitBatchNorm", (_ExplicitBatchNorm, keras.layers.Layer),
                   {"__module__": __name__, "__doc__": _ExplicitBatchNorm.__doc__, "_bn_keras": keras, "_bn_ops": ops,
                    "_bn_keras3": keras3, "_bn_autocast": autocast})
        saving = getattr(keras, "saving", None)
        register = getattr(saving, "register_keras_serializable", None) or keras.utils.register_keras_serializable
        made = _MADE[id(keras)] = SimpleNamespace(ExplicitBatchNorm=register(package="bnspec")(cls), ops=ops,
                                                  AUTOCAST_OPT_OUT=autocast, CUSTOM_GRADIENT=hasattr(ops, "custom_gradient"))
    return made


def _dtype(keras, x) -> str:
    d = x.dtype
    if is_keras3(keras):
        return keras.backend.standardize_dtype(d)
    return getattr(d, "name", str(d))


def _paper_forward(ops, x, gamma, beta, mean, var, axes, eps):
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


class _ExplicitBatchNorm:
    """BN from the paper (the contract is the module's docstring); mixed into the Keras module's Layer by for_keras."""

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
        self.beta_initializer = self._bn_keras.initializers.get(beta_initializer)
        self.gamma_initializer = self._bn_keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = self._bn_keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = self._bn_keras.initializers.get(moving_variance_initializer)
        self.population = population
        self.paper_gradient = bool(paper_gradient)
        self.update_moving = population == "ema"  # bnspec.subjects.popstats.recompute switches it on
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
        no_autocast = ({"autocast": False} if self._bn_autocast else {}) if self._bn_keras3 else {"experimental_autocast": False}
        return self.add_weight(name=name, shape=shape, initializer=initializer, trainable=trainable,
                               dtype="float32", **no_autocast)

    def _param(self, var, default, like):
        if var is None:
            return self._bn_ops.cast(self._bn_ops.ones_like(like[(0,) * len(self._bshape)]) * default, "float32")
        return self._bn_ops.reshape(self._bn_ops.convert_to_tensor(var), self._bshape)

    def _moments(self, x, mask):
        axes = self._reduce
        if mask is None:
            mean = self._bn_ops.mean(x, axes, keepdims=True)
            return mean, self._bn_ops.mean(self._bn_ops.square(x - mean), axes, keepdims=True)
        w = self._bn_ops.cast(mask, "float32")
        while len(w.shape) < len(x.shape):
            w = self._bn_ops.reshape(w, tuple(self._bn_ops.shape(w)) + (1,))
        w = self._bn_ops.broadcast_to(w, self._bn_ops.shape(x))
        count = self._bn_ops.sum(w, axes, keepdims=True)
        mean = self._bn_ops.sum(w * x, axes, keepdims=True) / count
        return mean, self._bn_ops.sum(w * self._bn_ops.square(x - mean), axes, keepdims=True) / count

    def call(self, inputs, training=None, mask=None):
        in_dtype = _dtype(self._bn_keras, inputs)
        x = self._bn_ops.cast(inputs, "float32") if in_dtype in ("float16", "bfloat16") else inputs
        gamma, beta = self._param(self.gamma, 1.0, x), self._param(self.beta, 0.0, x)
        if bool(training) and self.trainable:
            mean, var = self._moments(x, mask)
            if self.paper_gradient and mask is None:
                y = _paper_forward(self._bn_ops, x, gamma, beta, mean, var, self._reduce, self.epsilon)
            else:
                y = gamma * (x - mean) * self._bn_ops.rsqrt(var + self.epsilon) + beta
            if self.update_moving:
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + self._bn_ops.reshape(mean, (-1,)) * (1.0 - m))
                self.moving_variance.assign(self.moving_variance * m + self._bn_ops.reshape(var, (-1,)) * (1.0 - m))
        else:
            mean, var = self._param(self.moving_mean, 0.0, x), self._param(self.moving_variance, 1.0, x)
            y = gamma * (x - mean) * self._bn_ops.rsqrt(var + self.epsilon) + beta
        return self._bn_ops.cast(y, in_dtype) if _dtype(self._bn_keras, y) != in_dtype else y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        ser = self._bn_keras.initializers.serialize
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": ser(self.beta_initializer), "gamma_initializer": ser(self.gamma_initializer),
                "moving_mean_initializer": ser(self.moving_mean_initializer),
                "moving_variance_initializer": ser(self.moving_variance_initializer),
                "population": self.population, "paper_gradient": self.paper_gradient}
