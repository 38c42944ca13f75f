"""ExplicitBatchNorm: Batch Normalization written out from the paper (Ioffe & Szegedy 2015,
Algorithms 1 and 2) with plain TensorFlow ops, no call into Keras' BatchNormalization,
tf.nn.batch_normalization or the fused kernels. A drop-in for keras.layers.BatchNormalization:

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
  in TensorFlow) through tf.custom_gradient instead of automatic differentiation.

The layer is built on the Keras of the flavour under test (bnspec.flavours): importing this
module imports TensorFlow.
"""

from __future__ import annotations

from bnspec import flavours

keras = flavours.keras_module()
tf = flavours.tensorflow()

POPULATION = ("ema", "algorithm2")
_KERAS3 = flavours.FAMILY[flavours.current()] == "keras3"


def _register(cls):
    saving = getattr(keras, "saving", None)
    register = getattr(saving, "register_keras_serializable", None) or keras.utils.register_keras_serializable
    return register(package="bnspec")(cls)


def _paper_forward(x, gamma, beta, mean, var, axes, eps):
    """Algorithm 1 with the paper's backward formulas as the gradient (x, gamma, beta). `mean` and
    `var` are x's batch statistics, computed once by the caller (who also feeds them to the moving
    averages); inside the custom gradient they are constants, their derivatives are in `grad`."""

    @tf.custom_gradient
    def bn(x, gamma, beta):
        xc = x - mean
        inv_std = tf.math.rsqrt(var + eps)
        x_hat = xc * inv_std
        y = gamma * x_hat + beta
        m = tf.cast(tf.size(x) // tf.size(mean), x.dtype)

        def grad(dy):
            d_xhat = dy * gamma
            d_var = tf.reduce_sum(d_xhat * xc, axes, keepdims=True) * -0.5 * inv_std**3
            d_mean = tf.reduce_sum(-d_xhat * inv_std, axes, keepdims=True) + \
                d_var * tf.reduce_sum(-2.0 * xc, axes, keepdims=True) / m
            d_x = d_xhat * inv_std + d_var * 2.0 * xc / m + d_mean / m
            d_gamma = tf.reshape(tf.reduce_sum(dy * x_hat, axes), tf.shape(gamma))
            d_beta = tf.reshape(tf.reduce_sum(dy, axes), tf.shape(beta))
            return d_x, d_gamma, d_beta

        return y, grad

    return bn(x, gamma, beta)


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
        self._reduce = [i for i in range(rank) if i != self._axis]
        self._bshape = [1] * rank
        self._bshape[self._axis] = int(features)
        self.built = True

    def _weight(self, name, shape, initializer, trainable):
        # float32 variables that stay float32 when read under a mixed policy (no autocast)
        no_autocast = {"autocast": False} if _KERAS3 else {"experimental_autocast": False}
        return self.add_weight(name=name, shape=shape, initializer=initializer, trainable=trainable,
                               dtype="float32", **no_autocast)

    def _param(self, var, default):
        return tf.reshape(tf.convert_to_tensor(var), self._bshape) if var is not None else tf.constant(default, tf.float32)

    def _moments(self, x, mask):
        if mask is None:
            mean = tf.reduce_mean(x, self._reduce, keepdims=True)
            return mean, tf.reduce_mean(tf.square(x - mean), self._reduce, keepdims=True)
        w = tf.cast(mask, tf.float32)
        w = tf.reshape(w, tf.concat([tf.shape(w), tf.ones([x.shape.rank - w.shape.rank], tf.int32)], 0)) \
            if w.shape.rank < x.shape.rank else w
        w = tf.broadcast_to(w, tf.shape(x))
        count = tf.reduce_sum(w, self._reduce, keepdims=True)
        mean = tf.reduce_sum(w * x, self._reduce, keepdims=True) / count
        return mean, tf.reduce_sum(w * tf.square(x - mean), self._reduce, keepdims=True) / count

    def call(self, inputs, training=None, mask=None):
        in_dtype = inputs.dtype
        x = tf.cast(inputs, tf.float32) if in_dtype in (tf.float16, tf.bfloat16) else inputs
        gamma, beta = self._param(self.gamma, 1.0), self._param(self.beta, 0.0)
        if bool(training) and self.trainable:
            mean, var = self._moments(x, mask)
            if self.paper_gradient and mask is None:
                y = _paper_forward(x, gamma, beta, mean, var, self._reduce, self.epsilon)
            else:
                y = gamma * (x - mean) * tf.math.rsqrt(var + self.epsilon) + beta
            if self.update_moving:
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + tf.reshape(mean, [-1]) * (1.0 - m))
                self.moving_variance.assign(self.moving_variance * m + tf.reshape(var, [-1]) * (1.0 - m))
        else:
            mean, var = self._param(self.moving_mean, 0.0), self._param(self.moving_variance, 1.0)
            y = gamma * (x - mean) * tf.math.rsqrt(var + self.epsilon) + beta
        return tf.cast(y, in_dtype) if y.dtype != in_dtype else y

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
