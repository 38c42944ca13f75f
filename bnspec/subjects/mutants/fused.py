"""Mutants family `fused`: tf_keras' fused kernel (tf.compat.v1.nn.fused_batch_norm, 4-D inputs) behind a
Keras 3 layer.

Each class is an ordinary class on hooked.Pieces, naming its mutant in `bnspec_mutant`; install() builds
it over the Keras module's own BatchNormalization (hooked.build). Catalogue entries: bnspec.subjects.mutants."""

from __future__ import annotations

from bnspec.subjects.mutants.hooked import Pieces


class FusedKernelUnbiased(Pieces):
    """4-D inputs only: the moving variance tracks the unbiased m/(m-1) batch variance."""

    bnspec_mutant = "fused-kernel-unbiased"

    def _m_variance_target(self, inputs, mean, variance):
        return self._m_unbiased(inputs, variance) if len(inputs.shape) == 4 else variance


CLASSES: tuple[type[Pieces], ...] = (FusedKernelUnbiased,)
