"""Mutants family `pytorch`: PyTorch's BatchNorm conventions carried into a Keras layer (a port, a converted
model, a habit).

Each class is an ordinary class on hooked.Pieces, naming its mutant in `bnspec_mutant`; install() builds
it over the Keras module's own BatchNormalization (hooked.build). Catalogue entries: bnspec.subjects.mutants."""

from __future__ import annotations

from bnspec.subjects.mutants.hooked import Pieces


class TorchMomentum(Pieces):
    """moving = momentum*batch + (1-momentum)*moving: torch's momentum=0.1 means Keras' 0.9."""

    bnspec_mutant = "torch-momentum"

    def _m_ema(self, moving, value):
        return moving * (1.0 - self.momentum) + value * self.momentum


class TorchUnbiasedRunningVar(Pieces):
    """running_var tracks the unbiased m/(m-1) batch variance, for every input rank."""

    bnspec_mutant = "torch-unbiased-running-var"

    def _m_variance_target(self, inputs, mean, variance):
        return self._m_unbiased(inputs, variance)


class TorchEpsilon(Pieces):
    """eps=1e-5 hard-coded, whatever `epsilon` says."""

    bnspec_mutant = "torch-epsilon"

    def _m_normalise(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return super()._m_normalise(inputs, mean, variance, gamma, beta, epsilon=1e-5)


class TrainingNoneIsTraining(Pieces):
    """A plain call (training=None) trains, as a torch module does until .eval()."""

    bnspec_mutant = "training-none-is-training"

    def _m_training(self, training):
        return (True if training is None else training) and self.trainable


class TrackRunningStatsFalse(Pieces):
    """track_running_stats=False: batch statistics in inference too, no moving statistics updated."""

    bnspec_mutant = "track-running-stats-false"

    def _m_inference_stats(self, inputs, mask, moving_mean, moving_variance):
        return self._moments(inputs, mask)

    def _m_update(self, inputs, moving_mean, moving_variance, mean, variance):
        return None


CLASSES: tuple[type[Pieces], ...] = (TorchMomentum, TorchUnbiasedRunningVar, TorchEpsilon, TrainingNoneIsTraining,
                                    TrackRunningStatsFalse)
