"""Mutants family `numerics`: formula slips in the normalisation and the moving variance (where epsilon goes,
which variance, which dtype).

Each class is an ordinary class on hooked.Pieces, naming its mutant in `bnspec_mutant`; install() builds
it over the Keras module's own BatchNormalization (hooked.build). Catalogue entries: bnspec.subjects.mutants."""

from __future__ import annotations

from bnspec.subjects.mutants.hooked import Pieces, ops


class EpsOutsideSqrt(Pieces):
    """y = gamma*(x-mean)/(sqrt(var)+eps) + beta."""

    bnspec_mutant = "eps-outside-sqrt"

    def _m_normalise(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return self._m_affine(inputs, mean, 1.0 / (ops.sqrt(variance) + self.epsilon), gamma, beta)


class UnbiasedNormalisation(Pieces):
    """Training normalises with the unbiased 1/(m-1) batch variance."""

    bnspec_mutant = "unbiased-normalisation"

    def _m_train_stats(self, inputs, mean, variance, moving_mean, moving_variance):
        return mean, self._m_unbiased(inputs, variance)


class MovingStd(Pieces):
    """The moving variance is updated with the batch standard deviation."""

    bnspec_mutant = "moving-std"

    def _m_variance_target(self, inputs, mean, variance):
        return ops.sqrt(variance)


class Float64ComputesInFloat32(Pieces):
    """The upcast is written as a cast to float32, not to the wider of the input's dtype and float32: a
    float64 layer normalises (and averages) in float32; its output is still cast back to float64."""

    bnspec_mutant = "float64-computes-in-float32"

    def _m_compute_dtype(self, inputs):
        return "float32"


CLASSES: tuple[type[Pieces], ...] = (EpsOutsideSqrt, UnbiasedNormalisation, MovingStd, Float64ComputesInFloat32)
