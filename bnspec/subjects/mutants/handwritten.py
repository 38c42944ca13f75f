"""Mutants family `handwritten`: slips of hand-written, ported and converted BN layers (the affine, the
mode, the statistics' shape, renorm's correction).

Each class is an ordinary class on hooked.Pieces, naming its mutant in `bnspec_mutant`; install() builds
it over the Keras module's own BatchNormalization (hooked.build). Catalogue entries: bnspec.subjects.mutants."""

from __future__ import annotations

from bnspec.subjects.mutants.hooked import Pieces, ops


class GammaIgnored(Pieces):
    bnspec_mutant = "gamma-ignored"

    def _m_normalise(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return super()._m_normalise(inputs, mean, variance, None, beta)


class BetaIgnored(Pieces):
    bnspec_mutant = "beta-ignored"

    def _m_normalise(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return super()._m_normalise(inputs, mean, variance, gamma, None)


class InferenceUpdatesMoving(Pieces):
    """Inference calls of a trainable layer also update the moving statistics."""

    bnspec_mutant = "inference-updates-moving"

    def _m_inference_stats(self, inputs, mask, moving_mean, moving_variance):
        if self.trainable:
            mean, variance = self._moments(inputs, mask)
            self._m_update(inputs, moving_mean, moving_variance, mean, variance)
        return moving_mean, moving_variance


class TrainingUsesMoving(Pieces):
    """Training normalises with the moving statistics (still updating them)."""

    bnspec_mutant = "training-uses-moving"

    def _m_train_stats(self, inputs, mean, variance, moving_mean, moving_variance):
        return moving_mean, moving_variance


class PerActivationConv(Pieces):
    """Conv inputs: statistics per activation (over the batch axis only), not shared over locations."""

    bnspec_mutant = "per-activation-conv"

    def _m_train_stats(self, inputs, mean, variance, moving_mean, moving_variance):
        if len(inputs.shape) <= 2:
            return mean, variance
        return ops.mean(inputs, axis=0, keepdims=True), ops.var(inputs, axis=0, keepdims=True)

    def _moments(self, inputs, mask):
        if len(inputs.shape) <= 2 or mask is not None:
            return super()._moments(inputs, mask)
        # the moving statistics average the per-activation ones: the mean is right, the variance misses the
        # spread between locations
        return (ops.mean(inputs, axis=self._reduction_axes),
                ops.mean(ops.var(inputs, axis=0, keepdims=True), axis=self._reduction_axes))

    def _m_normalise(self, inputs, mean, variance, gamma, beta, epsilon=None):
        if len(mean.shape) == len(inputs.shape):
            return self._m_affine(inputs, mean, ops.rsqrt(variance + self.epsilon), gamma, beta)
        return super()._m_normalise(inputs, mean, variance, gamma, beta)


class RenormCorrectionIgnored(Pieces):
    """renorm=True: renorm's weights, config and moving-statistics bookkeeping (Keras' own call and
    _update_renorm_statistics) are kept, but the correction (r, d) never reaches the output: the training
    forward pass normalises with the batch statistics as plain BN does. Keras composes (r, d) with gamma and
    beta in _compose_transforms; here that composition returns gamma and beta unchanged."""

    bnspec_mutant = "renorm-correction-ignored"

    def _compose_transforms(self, r, d, gamma, beta, dtype):
        return gamma, beta


CLASSES: tuple[type[Pieces], ...] = (GammaIgnored, BetaIgnored, InferenceUpdatesMoving, TrainingUsesMoving,
                                    PerActivationConv, RenormCorrectionIgnored)
