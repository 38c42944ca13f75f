"""The shared base of every mutant: Keras 3's BatchNormalization.call split into pieces a mutant overrides.

`Pieces` is an ordinary class holding call() and its pieces; `hooked(module)` puts it in front of the Keras
module's own BatchNormalization once per Keras module (the control, "identity": with no override it computes
bitwise what Keras computes), and `build(module, cls)` puts a family's class (itself built on Pieces) in
front of that:

    BatchNormalization(TorchMomentum, Hooked)   MRO: TorchMomentum, Hooked, Pieces, keras' BatchNormalization, ...

so a mutant's `super()` reaches the hooked pieces, then Keras' own methods (`_moments`, `build`,
`get_config`, `_compose_transforms`). `ops` and `backend` are Keras' internal modules, imported at first use:
importing a family module never imports Keras or TensorFlow.
"""

from __future__ import annotations

import importlib

from bnspec import BnspecError

SIXTEEN_BIT = ("float16", "bfloat16")


class _Lazy:
    """A Keras internal module (keras.src.ops, keras.src.backend), imported at its first use."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


ops = _Lazy("keras.src.ops")
backend = _Lazy("keras.src.backend")


class Pieces:
    """Keras 3.15's BatchNormalization.call (renorm excepted, which goes to Keras' own call) split into the
    pieces the mutants override. With no override it computes what Keras computes."""

    def call(self, inputs, training=None, mask=None):
        if getattr(self, "renorm", False):
            return super().call(inputs, training=training, mask=mask)
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError("The mask provided should be one dimension less than the inputs. Received: "
                             f"mask.shape={mask.shape}, inputs.shape={inputs.shape}")
        inputs = ops.cast(inputs, self._m_compute_dtype(inputs))
        moving_mean = ops.cast(self.moving_mean, inputs.dtype)
        moving_variance = ops.cast(self.moving_variance, inputs.dtype)
        gamma = ops.cast(self.gamma, inputs.dtype) if self.scale else None
        beta = ops.cast(self.beta, inputs.dtype) if self.center else None
        if self._m_training(training):
            mean, variance = self._moments(inputs, mask)
            self._m_update(inputs, moving_mean, moving_variance, mean, variance)
            mean, variance = self._m_train_stats(inputs, mean, variance, moving_mean, moving_variance)
        else:
            mean, variance = self._m_inference_stats(inputs, mask, moving_mean, moving_variance)
        outputs = self._m_normalise(inputs, mean, variance, gamma, beta)
        return ops.cast(outputs, self.compute_dtype)

    # the pieces ------------------------------------------------------------------------------------
    def _m_compute_dtype(self, inputs):
        return backend.result_type(inputs.dtype, "float32")

    def _m_training(self, training):
        return training and self.trainable

    def _m_ema(self, moving, value):
        return moving * self.momentum + value * (1.0 - self.momentum)

    def _m_variance_target(self, inputs, mean, variance):
        return variance

    def _m_update(self, inputs, moving_mean, moving_variance, mean, variance):
        new_mean = self._m_ema(moving_mean, mean)
        new_var = self._m_ema(moving_variance, self._m_variance_target(inputs, mean, variance))
        self.moving_mean.assign(ops.cast(new_mean, self.moving_mean.dtype))
        self.moving_variance.assign(ops.cast(new_var, self.moving_variance.dtype))

    def _m_train_stats(self, inputs, mean, variance, moving_mean, moving_variance):
        return mean, variance

    def _m_inference_stats(self, inputs, mask, moving_mean, moving_variance):
        return moving_mean, moving_variance

    def _m_normalise(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return ops.batch_normalization(x=inputs, mean=mean, variance=variance, axis=self.axis, offset=beta,
                                       scale=gamma, epsilon=self.epsilon if epsilon is None else epsilon)

    # helpers for the mutants -----------------------------------------------------------------------
    def _m_count(self, inputs):
        """Elements per feature (m) as a per-feature tensor."""
        return ops.sum(ops.ones_like(inputs), axis=self._reduction_axes)

    def _m_unbiased(self, inputs, variance):
        m = self._m_count(inputs)
        return variance * m / ops.maximum(m - 1.0, 1.0)

    def _m_bcast(self, inputs, v):
        if v is None or len(v.shape) == len(inputs.shape):
            return v
        shape = [1] * len(inputs.shape)
        shape[self.axis] = -1
        return ops.reshape(v, shape)

    def _m_affine(self, inputs, mean, inv_std, gamma, beta):
        b = lambda v: self._m_bcast(inputs, v)  # noqa: E731
        y = (inputs - b(mean)) * b(inv_std)
        if gamma is not None:
            y = y * b(gamma)
        if beta is not None:
            y = y + b(beta)
        return y


def _keras_bn_module(module):
    """Keras 3's batch_normalization module (keras3 and keras-nightly flavours; the module is `keras`)."""
    if not hasattr(module, "src") or getattr(module, "__name__", "") != "keras":
        raise BnspecError(f"mutants patch Keras 3's BatchNormalization; the module under test is "
                          f"{getattr(module, '__name__', module)!r} (use the keras3 or keras-nightly flavour)")
    from keras.src.layers.normalization import batch_normalization

    return batch_normalization


_HOOKED: dict = {}  # Keras' own BatchNormalization class -> its Hooked class
_HOME = "bnspec.subjects.mutants"  # the __module__ the mutant classes show


def hooked(module):
    """The Keras module's BatchNormalization with the pieces hooked in and no deviation (made once per module)."""
    bn_module = _keras_bn_module(module)
    original = getattr(bn_module.BatchNormalization, "bnspec_original", bn_module.BatchNormalization)
    if original not in _HOOKED:
        _HOOKED[original] = type("BatchNormalization", (Pieces, original), {
            "bnspec_mutant": "identity", "bnspec_original": original,
            "__qualname__": "BatchNormalization", "__module__": _HOME})
    return _HOOKED[original]


def build(module, cls):
    """The mutant layer class: `cls` (a family's class on Pieces, naming its mutant in `bnspec_mutant`) over
    the module's Hooked base."""
    return type("BatchNormalization", (cls, hooked(module)), {
        "bnspec_mutant": cls.bnspec_mutant, "__qualname__": "BatchNormalization", "__module__": _HOME})
