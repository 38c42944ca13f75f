"""Mutants family `keras_history`: bugs of Keras 3 (and keras-core) fixed in its history, put back.

Each class is an ordinary class on hooked.Pieces, naming its mutant in `bnspec_mutant`; install() builds
it over the Keras module's own BatchNormalization (hooked.build). Catalogue entries: bnspec.subjects.mutants."""

from __future__ import annotations

from bnspec.subjects.mutants.hooked import SIXTEEN_BIT, Pieces, ops


class StopGradientStats(Pieces):
    """No gradient through the batch mean and variance (Keras 3.0's torch backend, fixed by PR #19102)."""

    bnspec_mutant = "stop-gradient-stats"

    def _moments(self, inputs, mask):
        mean, variance = super()._moments(inputs, mask)
        return ops.stop_gradient(mean), ops.stop_gradient(variance)


class OnePassVariance(Pieces):
    """Batch variance as E[x^2] - E[x]^2 in float32 (keras-core PR #866; Keras 3's torch ops.moments)."""

    bnspec_mutant = "one-pass-variance"

    def _moments(self, inputs, mask):
        if mask is not None:
            return super()._moments(inputs, mask)
        mean = ops.mean(inputs, axis=self._reduction_axes)
        return mean, ops.mean(ops.square(inputs), axis=self._reduction_axes) - ops.square(mean)


class Float16Compute(Pieces):
    """Under mixed_float16 the normalisation runs in float16 (no float32 upcast)."""

    bnspec_mutant = "float16-compute"

    def _m_compute_dtype(self, inputs):
        return self.compute_dtype


class Mixed16BitMovingAverage(Pieces):
    """Under a mixed 16-bit policy (float32 variables, 16-bit compute dtype) the moving-average update runs in
    the compute dtype, written as TF's assign_moving_average writes it: moving - (moving - batch)*(1 - momentum),
    every operation rounded to 16 bits. The result is stored in the float32 variable, so every stored value is
    a 16-bit number, and the average stalls once (1 - momentum)*|batch - moving| is below half a 16-bit ulp
    of the moving value. The normalisation itself still runs in float32."""

    bnspec_mutant = "mixed-16bit-moving-average"

    def _m_update(self, inputs, moving_mean, moving_variance, mean, variance):
        low = self.compute_dtype
        if low not in SIXTEEN_BIT or self.moving_mean.dtype == low:  # not a mixed policy: as Keras
            return super()._m_update(inputs, moving_mean, moving_variance, mean, variance)
        decay = ops.cast(1.0 - self.momentum, low)
        for var, moving, value in ((self.moving_mean, moving_mean, mean),
                                   (self.moving_variance, moving_variance,
                                    self._m_variance_target(inputs, mean, variance))):
            moving, value = ops.cast(moving, low), ops.cast(value, low)
            var.assign(ops.cast(moving - (moving - value) * decay, var.dtype))
        return None


CLASSES: tuple[type[Pieces], ...] = (StopGradientStats, OnePassVariance, Float16Compute, Mixed16BitMovingAverage)
