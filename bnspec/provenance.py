"""Where a result came from: the code that measured it and the libraries it ran on. No TensorFlow.

A run's results carry
  - `fingerprint`: a hash of the *measuring* code (the claim tests, conftest.py and the bnspec modules
    they use), so the report can tell a result measured by other code ("stale") from a current one
    whether or not the tree is a git checkout;
  - `commit` (short) and `dirty`: for people, where git is available.
Modules that do not change what is measured (the claim registry, whose expectations the report
re-applies, the results schema, the report, the CLI, the audit, the harnesses that start runs, the release
catalogue) are left out of the fingerprint, so editing the report does not make every result stale. The
mutant layers (bnspec/subjects/mutants/) are left out too: they never run outside the mutation harness,
whose results name the mutant and are never merged into the report.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(__file__).resolve().parent

# Paths relative to the repository root whose .py files are measuring code.
MEASURING = ("bnspec", "tests/claims", "conftest.py")
# ... except these (relative to the repository root): they render, select or describe, not measure.
NOT_MEASURING = (
    "bnspec/claims", "bnspec/report", "bnspec/cli.py", "bnspec/audit", "bnspec/harness", "bnspec/releases.py",
    "bnspec/results.py", "bnspec/provenance.py", "bnspec/__main__.py", "bnspec/measure/status.py",
    "bnspec/subjects/mutants",
)


def measuring_files(root: Path = ROOT) -> list[Path]:
    files = []
    for entry in MEASURING:
        path = root / entry
        candidates = [path] if path.is_file() else sorted(path.rglob("*.py")) if path.is_dir() else []
        for f in candidates:
            rel = f.relative_to(root).as_posix()
            if "__pycache__" in rel or any(rel == x or rel.startswith(x + "/") for x in NOT_MEASURING):
                continue
            files.append(f)
    return sorted(files)


def fingerprint(root: Path = ROOT) -> str:
    """sha256 (16 hex digits) over the relative paths and contents of the measuring files."""
    h = hashlib.sha256()
    for f in measuring_files(root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def file_hash(*files) -> str:
    """sha256 (16 hex digits) of the given source files' contents (for cache keys)."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode() + b"\0" + Path(f).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git_commit(root: Path = ROOT) -> tuple[str | None, bool]:
    """(short commit, dirty) of the checkout, or (None, False) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *MEASURING],
                                cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout
        return commit or None, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False


def code(root: Path = ROOT) -> dict:
    commit, dirty = git_commit(root)
    return {"fingerprint": fingerprint(root), "commit": commit, "dirty": dirty}
