"""Helpers shared by bnspec's own test suites (unit, robustness): running the CLI in a child
process, and a child-process prelude that makes TensorFlow and friends unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Prepend to `python -c` code: importing any of these then fails as if it were not installed.
BLOCK_TF = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "torch"):
            raise ImportError("No module named " + repr(name))
sys.meta_path.insert(0, _Block())
"""


def run_bnspec(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m bnspec ARGS` from the repository root; output captured as text."""
    return subprocess.run([sys.executable, "-m", "bnspec", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout, check=False)


def run_python(code: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout, check=False)
