"""bnspec: an executable, behavioural specification of Batch Normalization in Keras.

Importing the package is cheap and never imports TensorFlow. Keras (and with it TensorFlow, JAX or PyTorch)
is imported only through `bnspec.flavours.keras_module(run)`, which fails with one clear line naming the
extra to install.

The house has floors; a module imports only from lower floors or from its own room (its package), and no
import closes a circle (tests/unit/test_architecture.py checks both, function-level imports included). This
package's root (BnspecError, DEVICES, FLOORS) is the ground every floor stands on.

  floor 0  ground     paths (cache directory, atomic writes), provenance (code fingerprint, commit)
  floor 1  flavours   which Keras flavours exist; the one import of Keras (keras_module(run))
  floor 2  run        Run (flavour, backend, device, mutant: made once per entry point, passed down; the one
                      reader of their environment variables), Environment (what measured a run)
  floor 3  knowledge  claims/ (the registry: data), reference (numpy float64 BN math and float32 bounds),
                      convert (BN state between Keras' and PyTorch's conventions), results (typed results
                      files: Results, RunRecord, Case; merge, compare), releases (the release catalogue)
  floor 4  measure/   backend (what differs between backends), verdict (the vocabulary: within, power,
                      mechanism, conclude), status (a claim's status folded from its cases), plugin (pytest)
  floor 5  subjects/  what is measured on: data (MNIST), model, layers (ExplicitBatchNorm), cache, training,
                      popstats, replicas (multi-replica children), paper (the paper's experiment), mutants
                      (the deliberately wrong BN layers)
  floor 6  harness/   runner (the one launcher of the claim suite), history (every release), mutants (the
                      kill matrix);  report/ (results -> REPORT.md, EVIDENCE.md, pages);  audit/ (a user's model)
  floor 7  cli        `bnspec run | report | data | train | paper | compare | claims | cache | audit | history | mutants`
           __main__   `python -m bnspec` (floor 8)

The claim tests live in tests/claims/test_<topic>.py beside their claims in bnspec/claims/<topic>.py; what
they share is tests/claims/_kit.py.
"""

__version__ = "0.1.0"

DEVICES = ("cpu", "gpu")  # the device axis of the claim tests: CPU always, GPU when the backend sees one

# module or package (dotted, under bnspec) -> floor; the longest matching prefix decides (see the docstring)
FLOORS = {
    "bnspec": -1, "bnspec.paths": 0, "bnspec.provenance": 0,
    "bnspec.flavours": 1, "bnspec.run": 2,
    "bnspec.claims": 3, "bnspec.reference": 3, "bnspec.convert": 3, "bnspec.results": 3, "bnspec.releases": 3,
    "bnspec.measure": 4,
    "bnspec.subjects": 5,
    "bnspec.harness": 6, "bnspec.report": 6, "bnspec.audit": 6,
    "bnspec.cli": 7, "bnspec.__main__": 8,
}


class BnspecError(Exception):
    """An error bnspec reports to the user as one line (the CLI exits 1)."""
