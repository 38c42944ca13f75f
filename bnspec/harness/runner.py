"""The one way bnspec starts the claim suite in a child process: `bnspec run`, the release history and the
mutation harness all call `claim_suite(run, ...)`, which hands the run to the child as its environment
(Run.child_env) and its options (Run.pytest_args).

    code = runner.claim_suite(Run("keras3", "jax"), ["-n", "2", "tests/claims"]).returncode
"""

from __future__ import annotations

import subprocess
import sys

from bnspec import provenance
from bnspec.run import Run


def command(run: Run, pytest_args: list[str], python: str | None = None) -> list[str]:
    """The child's command line: pytest with the run's own options, then `pytest_args`."""
    return [python or sys.executable, "-m", "pytest", *run.pytest_args(), *pytest_args]


def claim_suite(run: Run, pytest_args: list[str], *, python: str | None = None, env: dict | None = None,
                stdout=None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run pytest for `run` in a child process from the repository root and wait for it. `env` is the base
    environment (default: this process's) over which the run's identity is written; output goes to `stdout`
    (default: this process's), stderr with it."""
    return subprocess.run(command(run, pytest_args, python), cwd=provenance.ROOT, env=run.child_env(env),
                          stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None,
                          timeout=timeout, check=False)
