"""Mutants family `serialisation`: what a saved and reloaded layer loses (the config, the checkpoint).

Each class is an ordinary class on hooked.Pieces, naming its mutant in `bnspec_mutant`; install() builds
it over the Keras module's own BatchNormalization (hooked.build). Catalogue entries: bnspec.subjects.mutants."""

from __future__ import annotations

from bnspec.subjects.mutants.hooked import Pieces, ops


class TrainableOnlyCheckpoint(Pieces):
    """Loading restores gamma and beta but not the moving statistics (back to 0 and 1)."""

    bnspec_mutant = "trainable-only-checkpoint"

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self.moving_mean.assign(ops.zeros_like(self.moving_mean))
        self.moving_variance.assign(ops.ones_like(self.moving_variance))


class ConfigDropsMomentum(Pieces):
    """get_config() leaves out momentum: from_config rebuilds the layer with the default 0.99."""

    bnspec_mutant = "config-drops-momentum"

    def get_config(self):
        config = super().get_config()
        config.pop("momentum", None)
        return config


CLASSES: tuple[type[Pieces], ...] = (TrainableOnlyCheckpoint, ConfigDropsMomentum)
