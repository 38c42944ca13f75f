"""bnspec: an executable, behavioural specification of Batch Normalization in TensorFlow/Keras.

Importing the package is cheap and never imports TensorFlow. The modules that need it
(`bnspec.model`, `bnspec.training`, `bnspec.data.pipelines`) ask for it through
`bnspec.flavours.keras_module()`, which fails with one clear line naming the extra to install.

Module map (data flows top to bottom):
  data       MNIST from the first source that works, sha256-verified, cached as one .npz
  model      ModelSpec (frozen) -> the study notebook's MLP with BN before each activation
  cache      keyed, locked, atomic train-once store (no TensorFlow)
  training   ModelSpec + TrainSpec -> trained model through the cache
  claims     the registry: one Claim record per claim, data only
  reference  numpy float64 BN math and float32 error bounds (no TensorFlow)
  probes     measuring helpers shared by the claim tests (weight snapshots, entry points)
  plugin     pytest plugin: claim marker, verdict fixture, results JSON (loaded by conftest.py)
  results    the results JSON written by the pytest plugin, read by the report
  report     results JSON -> reports/REPORT.md (no TensorFlow)
  cli        `bnspec run | report | data | train | claims | cache`
"""

__version__ = "0.1.0"


class BnspecError(Exception):
    """An error bnspec reports to the user as one line (the CLI exits 1)."""
