"""Where bnspec keeps its cache (BNSPEC_HOME) and writes files atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bnspec import BnspecError


def home() -> Path:
    """bnspec's cache directory: $BNSPEC_HOME, else $XDG_CACHE_HOME/bnspec, else ~/.cache/bnspec.

    Created on first use; an unusable directory is reported as one clear error.
    """
    explicit = os.environ.get("BNSPEC_HOME")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "bnspec"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise BnspecError(
            f"bnspec cache directory {path} is not writable ({exc.strerror or exc}); "
            "set BNSPEC_HOME to a writable directory"
        ) from exc
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())
