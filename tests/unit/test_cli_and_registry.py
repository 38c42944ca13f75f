"""The CLI's cheap paths, and the claim registry's consistency with the tests."""

import ast

import pytest

from bnspec import claims, flavours
from tests.helpers import ROOT, run_bnspec

def test_usage_errors_exit_2_and_runtime_errors_exit_1(tmp_path):
    bad = run_bnspec("frobnicate")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    missing = run_bnspec("report", "--raw", str(tmp_path / "none"), "--out", str(tmp_path))
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "run the tests first" in missing.stderr


def test_unknown_flavour_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("BNSPEC_FLAVOUR", "keras9")
    with pytest.raises(Exception, match="unknown flavour 'keras9'"):
        flavours.current()


def _claim_marks() -> set[str]:
    found = set()
    for path in (ROOT / "tests" / "claims").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "claim"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                found.add(node.args[0].value)
    return found


def test_every_claim_has_a_test_and_every_mark_a_claim():
    marks, ids = _claim_marks(), {c.id for c in claims.CLAIMS}
    assert ids - marks == set(), "claims without a test"
    assert marks - ids == set(), "tests naming unknown claims"


@pytest.mark.parametrize("flavour", flavours.FLAVOURS)
def test_every_claim_has_an_expectation_on_every_flavour(flavour):
    for c in claims.CLAIMS:
        for params in ({}, {"kind": "functional", "entry": "predict"}, {"kind": "subclassed", "entry": "call"}):
            version = {"keras3": "3.15.1", "tfkeras": "2.21.0", "keras-nightly": "3.16.0.dev2026102704"}[flavour]
            assert c.expectation(flavour, version, params).verdict in claims.VERDICTS


@pytest.mark.parametrize("flavour, version, verdict", [
    ("keras3", "3.15.1", "refuted"),  # Keras 3.15: predict() overrides the hard-coded flag
    ("keras-nightly", "3.16.0.dev2026102704", "holds"),  # the version range >=3.16 applies to the nightly
    ("keras3", "3.16.0", "holds"),
    ("tfkeras", "2.21.0", "holds"),
])
def test_expectations_follow_flavour_family_and_version(flavour, version, verdict):
    params = {"kind": "functional", "entry": "predict"}
    assert claims.get("N05").expectation(flavour, version, params).verdict == verdict


def test_keras_nightly_is_detected_when_it_replaces_keras(monkeypatch):
    monkeypatch.delenv("BNSPEC_FLAVOUR", raising=False)
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    installed = {"keras-nightly": "3.16.0.dev1"}
    monkeypatch.setattr(flavours, "_distribution_version", lambda f: installed.get(flavours.DISTRIBUTION[f][0]))
    assert flavours.current() == "keras-nightly"
    installed["keras"] = "3.15.1"
    assert flavours.current() == "keras3"
