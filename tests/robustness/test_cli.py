"""The command line's failure modes: one line, exit 2 for usage, 1 for runtime; --help stays light."""

import os

import pytest

from tests.helpers import BLOCK_TF, run_bnspec, run_python


@pytest.mark.parametrize("args, code, message", [
    (["run", "--claim", "X99"], 2, "unknown claim id(s) X99"),
    (["run", "--device", "tpu"], 2, "invalid choice: 'tpu'"),
    (["run", "--flavour", "keras9"], 2, "invalid choice: 'keras9'"),
    (["train", "--epochs", "0"], 1, "--epochs must be >= 1"),
    (["report", "--raw", "/nonexistent/raw", "--out", "/nonexistent/out"], 1, "run the tests first"),
    (["compare", "/nonexistent/a.json", "/nonexistent/b.json"], 1, "no such results file"),
])
def test_bad_arguments(args, code, message):
    out = run_bnspec(*args)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert len([ln for ln in out.stderr.splitlines() if "error" in ln]) == 1


def test_conflicting_flavour_options():
    out = run_bnspec("run", "--flavour", "keras3", env=dict(os.environ, BNSPEC_FLAVOUR="tfkeras"))
    assert out.returncode == 2 and "conflicts with the environment" in out.stderr


def test_unknown_claim_in_pytest_filter_is_a_usage_error():
    out = run_python("import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))", "--bnspec-claims=K01,Z42",
                     "-p", "no:xdist", "-q", "tests/claims/test_variables.py")
    assert out.returncode == 4 and "unknown claim id(s) Z42" in out.stderr


_MAIN = """
from bnspec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_missing_tensorflow_is_one_line_exit_1(tmp_path):
    env = dict(os.environ, BNSPEC_HOME=str(tmp_path))
    out = run_python(BLOCK_TF + _MAIN, "train", env=env)
    assert out.returncode == 1, out.stderr
    assert "TensorFlow is not installed" in out.stderr and "pip install" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_help_is_fast_and_does_not_import_tensorflow():
    code = ("import sys, time; t = time.perf_counter(); from bnspec import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('RESULT', time.perf_counter() - t, 'tensorflow' in sys.modules)")
    out = run_python(code)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    _, seconds, imported = line.split()
    assert imported == "False"
    assert float(seconds) < 1.0, f"bnspec --help took {seconds} s"
