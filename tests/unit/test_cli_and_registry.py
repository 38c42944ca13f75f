"""The CLI's cheap paths, and the claim registry's consistency with the tests."""

import ast

import pytest

from bnspec import BnspecError, claims, flavours, run
from bnspec.run import Environment, Run
from tests.helpers import ROOT, run_bnspec

def test_usage_errors_exit_2_and_runtime_errors_exit_1(tmp_path):
    bad = run_bnspec("frobnicate")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    missing = run_bnspec("report", "--raw", str(tmp_path / "none"), "--out", str(tmp_path))
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "run the tests first" in missing.stderr


def test_unknown_flavour_or_backend_is_one_clear_error():
    with pytest.raises(BnspecError, match="unknown flavour 'keras9' in BNSPEC_FLAVOUR"):
        Run.from_env({"BNSPEC_FLAVOUR": "keras9"})
    with pytest.raises(BnspecError, match="unknown backend 'mxnet' in KERAS_BACKEND"):
        Run.from_env({"BNSPEC_FLAVOUR": "keras3", "KERAS_BACKEND": "mxnet"})
    with pytest.raises(BnspecError, match="tfkeras runs on TensorFlow only"):
        Run("tfkeras", "jax")


def test_the_run_key_is_spelled_once():
    assert [Run("keras3").key, Run("keras3", "jax").key, Run("keras3", "torch", device="gpu").key,
            Run("keras3", device="cpu").key, Run("tfkeras").key, Run("keras3", mutant="beta-ignored").key] == \
        ["keras3", "keras3-jax", "keras3-torch-gpu", "keras3", "tfkeras", "keras3+mutant-beta-ignored"]
    assert run.key_of("keras-nightly", "jax", "gpu") == Run("keras-nightly", "jax", "gpu").key


def test_a_child_gets_the_run_and_nothing_it_does_not_apply():
    parent = {"BNSPEC_FLAVOUR": "tfkeras", "TF_USE_LEGACY_KERAS": "1", "BNSPEC_MUTANT": "x", "KERAS_BACKEND": "torch",
              "OTHER": "kept"}
    env = Run("keras3", "jax").child_env(parent)
    assert env["BNSPEC_FLAVOUR"] == "keras3" and env["KERAS_BACKEND"] == "jax" and env["OTHER"] == "kept"
    assert "TF_USE_LEGACY_KERAS" not in env and "BNSPEC_MUTANT" not in env
    assert Run.from_env(env) == Run("keras3", "jax")  # what the child reads back is the run
    tf = Run("tfkeras").child_env({})
    assert tf["TF_USE_LEGACY_KERAS"] == "1" and Run.from_env(tf) == Run("tfkeras")
    m = Run("keras3", mutant="beta-ignored")
    assert m.child_env({})["BNSPEC_MUTANT"] == "beta-ignored" and m.pytest_args() == ["--bnspec-mutant=beta-ignored"]
    assert Run("keras3", device="gpu").pytest_args() == ["--bnspec-device=gpu"]


def test_the_default_backend_is_keras_json_else_tensorflow(tmp_path):
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    assert Run.from_env({"BNSPEC_FLAVOUR": "keras3", "KERAS_HOME": str(tmp_path)}).backend == "jax"
    assert Run.from_env({"BNSPEC_FLAVOUR": "keras3", "KERAS_HOME": str(tmp_path / "none")}).backend == "tensorflow"
    assert Run.from_env({"TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": "jax"}) == Run("tfkeras")


def test_flavour_option_conflicts_with_the_environment():
    assert Run.flavour_conflict("tfkeras", {"BNSPEC_FLAVOUR": "keras3"})
    assert Run.flavour_conflict("keras3", {"TF_USE_LEGACY_KERAS": "1"})
    assert Run.flavour_conflict("keras3", {"BNSPEC_FLAVOUR": "keras3"}) is None


def test_environments_compare_by_libraries_python_and_gpu():
    a = Environment(keras="3.15.1", backend="jax", jax="0.10.2", python="3.11.7", cpu="x")
    assert a.identity() == Environment(keras="3.15.1", backend="jax", jax="0.10.2", python="3.11.9", cpu="y").identity()
    for other in (dict(keras="3.14.1"), dict(jax="0.11.2"), dict(python="3.12.3"), dict(gpu="1 x NVIDIA H200")):
        assert Environment(**{**a.__dict__, **other}).identity() != a.identity(), other
    assert Environment.from_dict(a.as_dict()) == a
    assert a.label() == "Keras 3.15.1, jax 0.10.2, Python 3.11.7, CPU"


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
    monkeypatch.setattr(run, "distribution_version", lambda f: installed.get(flavours.DISTRIBUTION[f][0]))
    assert Run.from_env({}).flavour == "keras-nightly"
    installed["keras"] = "3.15.1"
    assert Run.from_env({}).flavour == "keras3"
