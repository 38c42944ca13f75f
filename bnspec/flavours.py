"""The Keras flavours bnspec can test, and the one place that imports Keras.

Three flavours:
  keras3         the `keras` release (default Keras of TF >= 2.16)
  tfkeras        legacy Keras 2, the `tf_keras` package, selected with TF_USE_LEGACY_KERAS=1
  keras-nightly  the `keras-nightly` package (module `keras`) over the same TensorFlow, so that
                 BN behaviour changes show up before they are released

keras-nightly belongs to the keras3 *family*: an expected verdict written for keras3 applies to it
unless a rule names keras-nightly or a version range (e.g. ">=3.16") that says otherwise.

Which flavour and backend a process tests is a `bnspec.run.Run`, made by the entry point; this module
is data about the flavours plus `keras_module(run)`, which imports the run's Keras (TensorFlow, JAX or
PyTorch with it) and fails with one clear line naming what to install.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys

from bnspec import BnspecError

FLAVOURS = ("keras3", "tfkeras", "keras-nightly")
FAMILY = {"keras3": "keras3", "keras-nightly": "keras3", "tfkeras": "tfkeras"}
BACKENDS = ("tensorflow", "jax", "torch")
# The distribution whose version an expected-verdict range refers to, per flavour.
DISTRIBUTION = {"keras3": ("keras",), "keras-nightly": ("keras-nightly",), "tfkeras": ("tf-keras", "tf_keras")}
MODULE = {"keras3": "keras", "tfkeras": "tf_keras", "keras-nightly": "keras"}
FLAVOUR_HINT = {
    "keras3": "pip install -e '.[cpu]' (and uninstall keras-nightly if present)",
    "tfkeras": "pip install -e '.[tfkeras]' (tf-keras needs the `tensorflow` distribution, not tensorflow-cpu)",
    "keras-nightly": "pip uninstall keras; pip install --no-deps keras-nightly (or: tox -e keras-nightly)",
}
INSTALL_HINT = (
    "TensorFlow is not installed: install bnspec with an extra, "
    "e.g. pip install -e '.[cpu]' (CPU), '.[gpu]' (CUDA) or '.[tfkeras]' (legacy Keras 2)"
)


def distribution_version(flavour: str) -> str | None:
    """The installed version of the flavour's distribution (package metadata; no import), or None."""
    for dist in DISTRIBUTION[flavour]:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return None


def keras_module(run):
    """Import and return the Keras module of `run` (a bnspec.run.Run) on its backend. The backend library is
    imported here; Keras reads its backend from the environment at import, so this writes the run's
    KERAS_BACKEND (and TF_USE_LEGACY_KERAS for tf_keras) first, and refuses a Keras already imported on
    another backend."""
    flavour, be = run.flavour, run.backend
    if FAMILY[flavour] == "tfkeras":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    else:
        if "keras" in sys.modules and hasattr(sys.modules["keras"], "backend"):
            loaded = sys.modules["keras"].backend.backend()
            if loaded != be:
                raise BnspecError(f"Keras is already imported on the {loaded} backend in this process; "
                                  f"the run asks for {be}")
        os.environ["KERAS_BACKEND"] = be
    if be == "jax":
        # JAX preallocates 75% of a GPU's memory per process: with several pytest-xdist workers the second one
        # failed to allocate (the first H200 run). Allocate on demand unless the user chose otherwise.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        importlib.import_module(be)
    except ImportError as exc:
        raise BnspecError(INSTALL_HINT if be == "tensorflow" else
                          f"KERAS_BACKEND={be} but {be} is not installed: pip install -e '.[{'jax' if be == 'jax' else 'torch'}]'") from exc
    expected = distribution_version(flavour)
    if expected is None:
        raise BnspecError(f"flavour {flavour!r} is not installed: {FLAVOUR_HINT[flavour]}")
    try:
        module = importlib.import_module(MODULE[flavour])
    except ImportError as exc:
        raise BnspecError(f"flavour {flavour!r} needs the module {MODULE[flavour]!r}: {FLAVOUR_HINT[flavour]}") from exc
    if MODULE[flavour] == "keras" and getattr(module, "__version__", expected) != expected:
        # keras and keras-nightly both install the module `keras`; the files are the last install's
        raise BnspecError(
            f"flavour {flavour!r} expects keras {expected}, but the importable keras module is "
            f"{module.__version__}: {FLAVOUR_HINT[flavour]}")
    return module


def tensorflow(run):
    """Import TensorFlow through the run's flavour (so TF_USE_LEGACY_KERAS is set first)."""
    keras_module(run)
    return importlib.import_module("tensorflow")


def is_keras3(keras) -> bool:
    """Whether a Keras module (as keras_module returned it) is Keras 3 (keras, keras-nightly) rather than tf_keras."""
    return keras.__name__.split(".")[0] != "tf_keras"
