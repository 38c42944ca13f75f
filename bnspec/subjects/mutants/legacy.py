"""Mutants family `legacy`: what Keras 2 and TF1 did (or what TF1 code commonly did) that Keras 3 does not.

Each class is an ordinary class on hooked.Pieces, naming its mutant in `bnspec_mutant`; install() builds
it over the Keras module's own BatchNormalization (hooked.build). Catalogue entries: bnspec.subjects.mutants."""

from __future__ import annotations

from bnspec.subjects.mutants.hooked import Pieces


class TrainableIgnored(Pieces):
    """trainable=False does not force inference mode (TF1 / Keras 2 before TF 2.0)."""

    bnspec_mutant = "trainable-ignored"

    def _m_training(self, training):
        return bool(training)


class MaskIgnored(Pieces):
    """Masked steps count in the batch statistics (tf_keras' call has no mask argument)."""

    bnspec_mutant = "mask-ignored"

    def _moments(self, inputs, mask):
        return super()._moments(inputs, None)


class UpdateOpsNotRun(Pieces):
    """Training never updates the moving statistics (tf.layers.batch_normalization without UPDATE_OPS)."""

    bnspec_mutant = "update-ops-not-run"

    def _m_update(self, inputs, moving_mean, moving_variance, mean, variance):
        return None


class MovingStatsTrainable(Pieces):
    """The moving statistics are trainable weights (tf.Variable's default trainable=True)."""

    bnspec_mutant = "moving-stats-trainable"

    def build(self, input_shape):
        super().build(input_shape)
        if self.trainable:
            self.moving_mean.trainable = self.moving_variance.trainable = True


CLASSES: tuple[type[Pieces], ...] = (TrainableIgnored, MaskIgnored, UpdateOpsNotRun, MovingStatsTrainable)
