"""Which Keras is under test, and the one place that imports it.

Two flavours ship with today's TensorFlow:
  keras3   the `keras` package (default since TF 2.16)
  tfkeras  legacy Keras 2, the `tf_keras` package, selected with TF_USE_LEGACY_KERAS=1

A process tests one flavour, chosen before TensorFlow is imported: BNSPEC_FLAVOUR if set,
else `tfkeras` when TF_USE_LEGACY_KERAS is truthy, else `keras3`.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os

from bnspec import BnspecError

FLAVOURS = ("keras3", "tfkeras")
# The distribution whose version an expected-verdict range refers to, per flavour.
DISTRIBUTION = {"keras3": ("keras", "keras-nightly"), "tfkeras": ("tf-keras", "tf_keras")}
MODULE = {"keras3": "keras", "tfkeras": "tf_keras"}
INSTALL_HINT = (
    "TensorFlow is not installed: install bnspec with an extra, "
    "e.g. pip install -e '.[cpu]' (CPU), '.[gpu]' (CUDA) or '.[tfkeras]' (legacy Keras 2)"
)


def current() -> str:
    """The flavour this process tests (validated)."""
    name = os.environ.get("BNSPEC_FLAVOUR")
    if not name:
        legacy = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")
        return "tfkeras" if legacy else "keras3"
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
    try:
        importlib.import_module("tensorflow")
    except ImportError as exc:
        raise BnspecError(INSTALL_HINT) from exc
    try:
        return importlib.import_module(MODULE[flavour])
    except ImportError as exc:
        raise BnspecError(
            f"flavour {flavour!r} needs the module {MODULE[flavour]!r}, which is not installed"
            + ("; pip install -e '.[tfkeras]'" if flavour == "tfkeras" else "")
        ) from exc


def tensorflow():
    """Import TensorFlow (through the flavour, so TF_USE_LEGACY_KERAS is set first)."""
    keras_module()
    return importlib.import_module("tensorflow")
