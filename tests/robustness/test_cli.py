"""The command line's failure modes: one line, exit 2 for usage, 1 for runtime; --help stays light."""

import subprocess
import sys

import pytest

from .conftest import ROOT


def _bnspec(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bnspec", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120, check=False)


@pytest.mark.parametrize("args, code, message", [
    (["run", "--claim", "X99"], 2, "unknown claim id(s) X99"),
    (["run", "--device", "tpu"], 2, "invalid choice: 'tpu'"),
    (["run", "--flavour", "keras9"], 2, "invalid choice: 'keras9'"),
    (["train", "--epochs", "0"], 1, "--epochs must be >= 1"),
    (["report", "--raw", "/nonexistent/raw", "--out", "/nonexistent/out"], 1, "run the tests first"),
    (["compare", "/nonexistent/a.json", "/nonexistent/b.json"], 1, "no such results file"),
])
def test_bad_arguments(args, code, message):
    out = _bnspec(*args)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert len([ln for ln in out.stderr.splitlines() if "error" in ln]) == 1


def test_conflicting_flavour_options():
    import os

    out = _bnspec("run", "--flavour", "keras3", env=dict(os.environ, BNSPEC_FLAVOUR="tfkeras"))
    assert out.returncode == 2 and "conflicts with the environment" in out.stderr


def test_unknown_claim_in_pytest_filter_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "pytest", "--bnspec-claims=K01,Z42", "-p", "no:xdist", "-q",
                          "tests/claims/test_variables.py"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         check=False)
    assert out.returncode == 4 and "unknown claim id(s) Z42" in out.stderr


_BLOCK_TF = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError("No module named " + repr(name))
sys.meta_path.insert(0, Block())
from bnspec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_missing_tensorflow_is_one_line_exit_1(tmp_path):
    import os

    env = dict(os.environ, BNSPEC_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _BLOCK_TF, "train"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120, check=False)
    assert out.returncode == 1, out.stderr
    assert "TensorFlow is not installed" in out.stderr and "pip install" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_help_is_fast_and_does_not_import_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); from bnspec import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('RESULT', time.perf_counter() - t, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    _, seconds, imported = line.split()
    assert imported == "False"
    assert float(seconds) < 1.0, f"bnspec --help took {seconds} s"
