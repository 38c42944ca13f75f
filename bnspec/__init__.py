"""bnspec: an executable, behavioural specification of Batch Normalization in TensorFlow/Keras.

Importing the package is cheap and never imports TensorFlow. The modules that need it
(`bnspec.model`, `bnspec.training`, `bnspec.layers`) ask for it through
`bnspec.flavours.keras_module()`, which fails with one clear line naming the extra to install.

Module map (data flows top to bottom):
  data       MNIST from the first source that works, sha256-verified, cached as one .npz
  model      ModelSpec (frozen) -> the study notebook's MLP with BN before each activation
  cache      keyed, locked, atomic train-once store (no TensorFlow)
  training   ModelSpec + TrainSpec -> trained model through the cache
  claims     the registry: one Claim record per claim, data only
  reference  numpy float64 BN math: Algorithm 1 forward/backward, Algorithm 2, float32 error bounds (no TensorFlow)
  layers     ExplicitBatchNorm: BN coded from the paper as a Keras layer
  popstats   population statistics recomputed with frozen weights (Algorithm 2 / PreciseBN)
  convert    BN state between Keras' and PyTorch's conventions (numbers only)
  flavours   which Keras is under test (keras3 | tfkeras | keras-nightly), versions without TensorFlow
  probes     measuring helpers shared by the claim tests (weight snapshots, entry points)
  paper      the paper's MNIST experiment (Figure 1), cached, with its figure and report section
  bench      pytest-benchmark JSON -> the report's benchmark section (no TensorFlow)
  plugin     pytest plugin: claim marker, verdict fixture, results JSON (loaded by conftest.py)
  results    the results JSON written by the pytest plugin, read by the report
  report     results JSON -> reports/REPORT.md (no TensorFlow)
  cli        `bnspec run | report | data | train | paper | compare | claims | cache`
"""

__version__ = "0.1.0"

DEVICES = ("cpu", "gpu")  # the device axis of the claim tests: CPU always, GPU when TensorFlow sees one


class BnspecError(Exception):
    """An error bnspec reports to the user as one line (the CLI exits 1)."""
