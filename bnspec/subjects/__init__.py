"""What the claims are measured *on*: MNIST (data), the notebook's model (model, training, cache), BN coded
from the paper (layers), population statistics (popstats), multi-replica children (replicas), the paper's
experiment (paper), and the deliberately wrong BN layers of the mutation harness (mutants).

`keras_for(run)` is how a process gets the Keras it measures: the run's flavour on its backend, with the
run's mutant patched in when the mutation harness asked for one.
"""

from __future__ import annotations


def keras_for(run):
    """The run's Keras module (bnspec.flavours.keras_module), with `run.mutant` installed if it names one."""
    from bnspec import flavours

    keras = flavours.keras_module(run)
    if run.mutant:
        from bnspec.subjects import mutants

        mutants.install(keras, run.mutant)
    return keras
