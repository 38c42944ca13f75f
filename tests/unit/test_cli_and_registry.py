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


def _claim_marks() -> dict[str, set[str]]:
    """claim id -> the test modules (topics) whose tests carry its marker."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests" / "claims").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "claim"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                found.setdefault(node.args[0].value, set()).add(path.stem.removeprefix("test_"))
    return found


def test_every_claim_has_a_test_in_its_topic_module_and_every_mark_a_claim():
    marks, ids = _claim_marks(), {c.id for c in claims.CLAIMS}
    assert ids - set(marks) == set(), "claims without a test"
    assert set(marks) - ids == set(), "tests naming unknown claims"
    misplaced = {c.id: (c.topic, sorted(marks[c.id])) for c in claims.CLAIMS if marks[c.id] != {c.topic}}
    assert misplaced == {}, "a claim's tests live in tests/claims/test_<topic>.py, its topic module's twin"


def test_every_topic_module_has_a_test_module_and_a_title():
    for topic, title in claims.TOPICS.items():
        assert (ROOT / "tests" / "claims" / f"test_{topic}.py").is_file(), topic
        assert title and len(title) <= 60


def test_titles_are_short_and_unique():
    titles = [c.title for c in claims.CLAIMS]
    assert all(0 < len(t) <= 60 for t in titles) and len(set(titles)) == len(titles)


def test_an_expected_refutation_must_name_why_and_mechanism():
    with pytest.raises(ValueError, match="needs why= and mechanism="):
        claims.Expect(claims.REFUTED, why="because")
    with pytest.raises(ValueError, match="param=value"):
        claims.Expect(claims.HOLDS, case="entry")


def test_stale_case_rules_name_what_they_could_have_meant():
    c = claims.Claim("Z01", "t", "s", "src", expected=(
        claims.Expect(claims.REFUTED, case="entry=predcit", why="w", mechanism="m"), claims.Expect(claims.HOLDS)))
    problems = c.stale_cases([{"entry": "predict"}, {"entry": "call"}])
    assert len(problems) == 1 and "entry='predcit' is not a value of entry (call, predict)" in problems[0]
    assert c.stale_cases([{"entry": "predcit"}]) == []


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
