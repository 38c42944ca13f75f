"""Reading a saved model's config without Keras: a Keras 3 `.keras` archive (a zip: `config.json` and
`metadata.json`) with zipfile and json, a legacy `.h5` file (its `model_config` attribute) with h5py, which
imports no Keras either. Every unreadable input is a UsageError (the CLI exits 2)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from bnspec.audit.findings import UsageError


def read_file(path) -> tuple[dict, dict]:
    """(model config entry, metadata {"keras_version", "format", "backend"}) of a saved model."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path} is a directory (a TF SavedModel?): audit takes a .keras or .h5 file, or "
                         "package.module:factory")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if "config.json" not in names:
                    raise UsageError(f"{path}: a zip without config.json is not a .keras archive")
                config = json.loads(zf.read("config.json"))
                meta = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
        except (zipfile.BadZipFile, ValueError) as exc:
            raise UsageError(f"{path}: unreadable .keras archive ({exc})") from exc
        return config, {"keras_version": meta.get("keras_version"), "format": "keras", "backend": None}
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        try:
            import h5py
        except ImportError as exc:
            raise UsageError(f"{path}: reading .h5 files needs h5py (pip install h5py)") from exc
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise UsageError(f"{path}: an .h5 file without a model_config attribute (weights only?)")
            version = f.attrs.get("keras_version")
            backend = f.attrs.get("backend")
        decode = lambda v: v.decode() if isinstance(v, bytes) else (None if v is None else str(v))  # noqa: E731
        try:
            config = json.loads(decode(raw))
        except ValueError as exc:
            raise UsageError(f"{path}: model_config is not JSON ({exc})") from exc
        return config, {"keras_version": decode(version), "format": "h5", "backend": decode(backend)}
    raise UsageError(f"{path}: neither a .keras archive (zip) nor an HDF5 file")


def family_of(meta: dict) -> str | None:
    """The Keras family that wrote the file (keras3 | tfkeras), from its version; None when unknown."""
    version = meta.get("keras_version") or ""
    if not version:
        return None
    return "tfkeras" if version.startswith("2.") else "keras3"
