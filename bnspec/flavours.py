"""Which Keras is under test, and the one place that imports it.

Three flavours:
  keras3         the `keras` release (default Keras of TF >= 2.16)
  tfkeras        legacy Keras 2, the `tf_keras` package, selected with TF_USE_LEGACY_KERAS=1
  keras-nightly  the `keras-nightly` package (module `keras`) over the same TensorFlow, so that
                 BN behaviour changes show up before they are released

A process tests one flavour, chosen before TensorFlow is imported: BNSPEC_FLAVOUR if set,
else `tfkeras` when TF_USE_LEGACY_KERAS is truthy, else `keras-nightly` when that distribution
is installed and the `keras` release is not, else `keras3`.

keras-nightly belongs to the keras3 *family*: an expected verdict written for keras3 applies to it
unless a rule names keras-nightly or a version range (e.g. ">=3.16") that says otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os

from bnspec import BnspecError

FLAVOURS = ("keras3", "tfkeras", "keras-nightly")
FAMILY = {"keras3": "keras3", "keras-nightly": "keras3", "tfkeras": "tfkeras"}
# The distribution whose version an expected-verdict range refers to, per flavour.
DISTRIBUTION = {"keras3": ("keras",), "keras-nightly": ("keras-nightly",), "tfkeras": ("tf-keras", "tf_keras")}
MODULE = {"keras3": "keras", "tfkeras": "tf_keras", "keras-nightly": "keras"}
TOX_ENV = {"keras3": "keras3", "tfkeras": "tfkeras", "keras-nightly": "keras-nightly"}
FLAVOUR_HINT = {
    "keras3": "pip install -e '.[cpu]' (and uninstall keras-nightly if present)",
    "tfkeras": "pip install -e '.[tfkeras]' (tf-keras needs the `tensorflow` distribution, not tensorflow-cpu)",
    "keras-nightly": "pip uninstall keras; pip install --no-deps keras-nightly (or: tox -e keras-nightly)",
}
INSTALL_HINT = (
    "TensorFlow is not installed: install bnspec with an extra, "
    "e.g. pip install -e '.[cpu]' (CPU), '.[gpu]' (CUDA) or '.[tfkeras]' (legacy Keras 2)"
)


def current() -> str:
    """The flavour this process tests (validated)."""
    name = os.environ.get("BNSPEC_FLAVOUR")
    if not name:
        legacy = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")
        if legacy:
            return "tfkeras"
        nightly_only = _distribution_version("keras-nightly") and not _distribution_version("keras3")
        return "keras-nightly" if nightly_only else "keras3"
    if name not in FLAVOURS:
        raise BnspecError(f"unknown flavour {name!r} in BNSPEC_FLAVOUR; choose one of {', '.join(FLAVOURS)}")
    return name


def _distribution_version(flavour: str) -> str | None:
    for dist in DISTRIBUTION[flavour]:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return None


def versions(flavour: str | None = None) -> dict[str, str | None]:
    """Library versions from package metadata, without importing TensorFlow."""
    flavour = flavour or current()
    tf_version = None
    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"):
        try:
            tf_version = md.version(dist)
            break
        except md.PackageNotFoundError:
            continue
    return {"flavour": flavour, "keras": _distribution_version(flavour), "tensorflow": tf_version}


def keras_module(flavour: str | None = None):
    """Import and return the Keras module of `flavour` (TensorFlow is imported here)."""
    flavour = flavour or current()
    if flavour == "tfkeras":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    be = backend(flavour)
    try:
        importlib.import_module(be)
    except ImportError as exc:
        raise BnspecError(INSTALL_HINT if be == "tensorflow" else
                          f"KERAS_BACKEND={be} but {be} is not installed: pip install -e '.[{'jax' if be == 'jax' else 'torch'}]'") from exc
    if _distribution_version(flavour) is None:
        raise BnspecError(f"flavour {flavour!r} is not installed: {FLAVOUR_HINT[flavour]}")
    try:
        module = importlib.import_module(MODULE[flavour])
    except ImportError as exc:
        raise BnspecError(f"flavour {flavour!r} needs the module {MODULE[flavour]!r}: {FLAVOUR_HINT[flavour]}") from exc
    expected = _distribution_version(flavour)
    if MODULE[flavour] == "keras" and getattr(module, "__version__", expected) != expected:
        # keras and keras-nightly both install the module `keras`; the files are the last install's
        raise BnspecError(
            f"flavour {flavour!r} expects keras {expected}, but the importable keras module is "
            f"{module.__version__}: {FLAVOUR_HINT[flavour]}")
    if os.environ.get("BNSPEC_MUTANT"):  # the mutation harness: a deliberately wrong BN (bnspec.mutants)
        from bnspec import mutants
        mutants.install(module, os.environ["BNSPEC_MUTANT"])
    return module


def tensorflow():
    """Import TensorFlow (through the flavour, so TF_USE_LEGACY_KERAS is set first)."""
    keras_module()
    return importlib.import_module("tensorflow")


BACKENDS = ("tensorflow", "jax", "torch")


def backend(flavour: str | None = None) -> str:
    """The Keras backend this process tests: tf_keras is TensorFlow only; Keras 3 reads KERAS_BACKEND
    (default tensorflow), validated here with one clear error."""
    flavour = flavour or current()
    if FAMILY[flavour] == "tfkeras":
        return "tensorflow"
    name = os.environ.get("KERAS_BACKEND", "tensorflow") or "tensorflow"
    if name not in BACKENDS:
        raise BnspecError(f"unknown backend {name!r} in KERAS_BACKEND; choose one of {', '.join(BACKENDS)}")
    return name
