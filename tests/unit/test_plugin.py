"""Meta-tests of the pytest plugin (bnspec.measure.plugin) and the verdict vocabulary (bnspec.measure.verdict):
small claim suites run in a child pytest, to see that a NaN can never become a verdict, that an expected
refutation must show its mechanism, that a rule matching no case fails collection, what the run writes, that
a run which measured nothing writes nothing and fails, and that a mutant cannot leak into a run. No TensorFlow."""

import json

import numpy as np
import pytest

from bnspec.measure import verdict as vd

HEADER = "import numpy as np\nimport pytest\nnan, inf = float('nan'), float('inf')\n"


def _run(pytester, body: str, *args, cache: bool = False):
    pytester.makepyfile(test_meta=HEADER + body)
    return pytester.runpytest_subprocess("-p", "bnspec.measure.plugin", *([] if cache else ["-p", "no:cacheprovider"]),
                                         "-p", "no:xdist", *args)


@pytest.mark.parametrize("call", [
    "verdict.within('err', np.array([1e-7, nan]), 1e-6)",       # NaN in a measurement
    "verdict.within('err', np.array([1e-7, 2e-7]), nan)",       # NaN in a bound
    "verdict.within('err', np.array([inf]), 1.0)",
    "verdict.beyond('alt', np.array([nan, 5.0]), 1e-6)",
    "verdict.power('alt', np.array([nan]), 1e-6)",
    "verdict.equal('unchanged', np.array([0.0, nan]), np.array([0.0, nan]))",  # NaN == NaN bitwise: still no evidence
    "verdict.record(loss=nan)",
    "verdict.record(stats=[1.0, inf])",
    "verdict.within('err', np.array([]), 1.0)",                 # nothing measured
])
def test_non_finite_measurements_are_errors_not_verdicts(pytester, call):
    res = _run(pytester, f"""
@pytest.mark.claim("K01")
def test_k01(verdict):
    ok = {call}
    verdict.conclude(True, "must not be reached")
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*NonFiniteMeasurement*"])
    doc = json.loads((pytester.path / "reports" / "raw" / "keras3.json").read_text())
    (test,) = doc["tests"]
    assert test["observed"] is None and test["outcome"] == "failed"  # no verdict recorded


def test_python_max_would_hide_a_nan_the_helpers_do_not():
    assert max(0.5, float("nan")) == 0.5  # the trap the helpers exist for
    with pytest.raises(vd.NonFiniteMeasurement):
        vd.finite("x", [0.5, float("nan")])


def test_no_power_is_an_error(pytester):
    res = _run(pytester, """
@pytest.mark.claim("K01")
def test_k01(verdict):
    verdict.power("unbiased_alternative", np.array([1e-9]), 1e-6)
    verdict.conclude(True, "x")
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*NoPower*cannot tell the claim from its alternative*"])


def test_an_expected_refutation_needs_its_mechanism(pytester):
    res = _run(pytester, """
@pytest.mark.claim("N02")
@pytest.mark.parametrize("mech", ["confirmed", "other", "absent"])
def test_n02(verdict, mech):
    if mech != "absent":
        verdict.mechanism("moving_unchanged", mech == "confirmed", "bitwise unchanged" if mech == "confirmed" else "moved")
    verdict.conclude(False, "inference did not update the moving statistics")
""")
    res.assert_outcomes(passed=1, failed=2)
    res.stdout.fnmatch_lines(["*refuted*as expected, but not by the mechanism the expectation names ('moving_unchanged': moved)*",
                              "*not confirmed by the test*"])


def test_unexpected_verdict_fails_and_within_records_one_spelling(pytester):
    res = _run(pytester, """
@pytest.mark.claim("K01")
def test_k01(verdict):
    ok = verdict.within("output_err", np.array([1e-7, 3e-6]), np.array([1e-6, 2e-6]))
    verdict.conclude(ok, "err over bound")
""")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*claim K01 was expected to be holds*but is refuted*"])
    (test,) = json.loads((pytester.path / "reports" / "raw" / "keras3.json").read_text())["tests"]
    assert test["evidence"]["output_err"] == {"value": 3e-6, "bound": 2e-6, "ratio": 1.5}
    assert test["observed"] == "refuted"


def test_a_case_rule_that_matches_no_case_fails_collection(pytester):
    # N05's rules name kind=subclassed and entry=call; this suite has neither parameter value
    res = _run(pytester, """
@pytest.mark.claim("N05")
@pytest.mark.parametrize("kind", ["functional"])
def test_n05(verdict, kind):
    verdict.conclude(True, "x")
""")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*Expect(case='kind=subclassed') matches no collected test case*",
                              "*no parameter 'entry'*"])


def test_unknown_claim_id_fails_collection(pytester):
    res = _run(pytester, """
@pytest.mark.claim("Z99")
def test_z(verdict):
    verdict.conclude(True, "x")
""")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*unknown claim id 'Z99'*"])


def test_results_carry_provenance_and_the_summary_counts(pytester):
    res = _run(pytester, """
@pytest.mark.claim("K01")
def test_k01(verdict):
    verdict.conclude(verdict.within("e", 1e-7, 1e-6), "ok")

@pytest.mark.claim("X04")
def test_x04(verdict):
    pytest.skip("torch is not installed")
""")
    res.assert_outcomes(passed=1, skipped=1)
    res.stdout.fnmatch_lines(["bnspec: run keras3 (keras3 on tensorflow; Keras *, TensorFlow *, Python *, CPU)*measuring code*",
                              "*2 claims: 1 hold, 0 refuted as expected*1 unmeasured*",
                              "*unmeasured X04: torch is not installed*"])
    doc = json.loads((pytester.path / "reports" / "raw" / "keras3.json").read_text())
    (run,) = doc["runs"].values()
    assert len(run["code"]["fingerprint"]) == 16 and run["selection"]["partial"] is False  # nothing narrowed it
    assert {t["nodeid"].split("::")[1]: t["outcome"] for t in doc["tests"]} == {"test_k01": "passed", "test_x04": "skipped"}


def _bare_verdict():
    """A Verdict without a pytest item or claim: only its comparison helpers are exercised."""
    v = vd.Verdict.__new__(vd.Verdict)
    v.item, v.evidence, v.mechanisms, v.observed, v.summary = None, {}, {}, None, ""
    v.claim, v.params, v.expect = type("C", (), {"id": "K01"}), {}, None
    v._publish = lambda: None
    return v


def test_within_broadcasts_and_reports_the_worst_ratio():
    v = _bare_verdict()
    assert v.within("e", np.array([[1.0, 2.0]]), np.array([4.0, 2.0]))
    assert v.evidence["e"] == {"value": 2.0, "bound": 2.0, "ratio": 1.0}
    assert not v.within("z", np.array([0.0, 1e-30]), 0.0)  # a zero bound admits only exact zeros
    assert v.evidence["z"]["ratio"] == "inf"


def test_ties_of_infinite_ratio_report_the_largest_value():
    v = _bare_verdict()
    assert v.beyond("moved", np.array([1.9e-9, 4.8e-3, 0.0]), 0.0)
    assert v.evidence["moved"] == {"value": 4.8e-3, "bound": 0.0, "ratio": "inf"}


def test_an_interrupted_run_is_partial_and_keeps_what_it_did_not_reach(pytester):
    res = _run(pytester, """
@pytest.mark.claim("K01")
def test_a(verdict):
    verdict.conclude(verdict.within("e", 1e-7, 1e-6), "ok")

@pytest.mark.claim("K01")
def test_b(verdict):
    raise KeyboardInterrupt
""")
    assert res.ret == pytest.ExitCode.INTERRUPTED
    doc = json.loads((pytester.path / "reports" / "raw" / "keras3.json").read_text())
    (run,) = doc["runs"].values()
    assert run["selection"]["partial"] is True and run["selection"]["unfinished"] is True


def test_not_applicable_is_a_skip_the_timeline_can_tell_from_others(pytester):
    res = _run(pytester, """
from bnspec.measure.verdict import not_applicable

@pytest.mark.claim("K12")
@pytest.mark.parametrize("why", ["api", "other", "measured"])
def test_k12(verdict, why):
    if why == "api":
        not_applicable("this Keras' BatchNormalization has no renorm argument")
    if why == "other":
        pytest.skip("no GPU visible")
    verdict.conclude(True, "measured")
""")
    res.assert_outcomes(skipped=2, passed=1)
    from bnspec import results

    doc = results.load(pytester.path / "reports" / "raw" / "keras3.json")
    by_case = {t.params["why"]: t for t in doc.cases}
    assert by_case["api"].message == "not applicable: this Keras' BatchNormalization has no renorm argument"
    assert by_case["api"].not_applicable and not by_case["other"].not_applicable


# --------------------------------------------------------------------------- a run that measured nothing


def test_a_run_that_measured_nothing_writes_nothing_and_fails(pytester):
    """Issue #21: every selected case skipped (the flavour is not installed, a backend-specific claim on another
    backend) is not a success: exit 5 (pytest's "no tests"), one line, no results file touched."""
    raw = pytester.path / "reports" / "raw"
    raw.mkdir(parents=True)
    (raw / "keras3.json").write_text("untouched")
    res = _run(pytester, """
@pytest.mark.claim("K08")
@pytest.mark.parametrize("case", ["a", "b"])
def test_k08(verdict, case):
    pytest.skip("flavour 'tfkeras' is not installed")
""")
    assert res.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    res.stdout.fnmatch_lines(["bnspec: this run measured nothing (2 claim case(s), all skipped; first reason: "
                              "flavour 'tfkeras' is not installed); no results written, the report is unchanged"])
    assert (raw / "keras3.json").read_text() == "untouched"


@pytest.mark.parametrize("option", ["--deselect=test_meta.py::test_b", "--ignore=nothing.py", "--ignore-glob=*nothing*",
                                    "--sw", "--lf", "-x", "--maxfail=3", "-m not slow"])
def test_narrowing_options_make_a_run_partial(pytester, option):
    res = _run(pytester, """
@pytest.mark.claim("K01")
def test_a(verdict):
    verdict.conclude(verdict.within("e", 1e-7, 1e-6), "ok")

@pytest.mark.claim("K01")
def test_b(verdict):
    verdict.conclude(verdict.within("e", 1e-7, 1e-6), "ok")
""", *option.split(" ", 1), cache=option in ("--sw", "--lf"))  # those two need pytest's cache
    assert res.ret == 0
    (run,) = json.loads((pytester.path / "reports" / "raw" / "keras3.json").read_text())["runs"].values()
    assert run["selection"]["partial"] is True, option


def test_a_full_run_is_not_partial(pytester):
    res = _run(pytester, """
@pytest.mark.claim("K01")
def test_a(verdict):
    verdict.conclude(verdict.within("e", 1e-7, 1e-6), "ok")
""")
    assert res.ret == 0
    (run,) = json.loads((pytester.path / "reports" / "raw" / "keras3.json").read_text())["runs"].values()
    assert run["selection"]["partial"] is False


# --------------------------------------------------------------------------- the run's identity


BODY = """
@pytest.mark.claim("K01")
def test_a(verdict, run):
    verdict.record(run_key=run.key)
    verdict.conclude(verdict.within("e", 1e-7, 1e-6), "ok")
"""


def test_a_mutant_left_in_the_environment_is_refused(pytester, monkeypatch):
    """Issue #21: BNSPEC_MUTANT=beta-ignored used to patch the layer into a plain run, which then passed and
    recorded no trace of it."""
    monkeypatch.setenv("BNSPEC_MUTANT", "beta-ignored")
    res = _run(pytester, BODY)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*BNSPEC_MUTANT=beta-ignored is set in the environment*started only by `bnspec mutants`*"])
    assert not (pytester.path / "reports" / "raw").exists()


def test_a_mutant_run_names_its_results_file_and_records_the_mutant(pytester, monkeypatch):
    res = _run(pytester, BODY, "--bnspec-mutant=beta-ignored")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--bnspec-mutant needs --bnspec-results*"])
    monkeypatch.setenv("BNSPEC_MUTANT", "beta-ignored")  # the harness writes it for the run's child processes too
    out = pytester.path / "mutant.json"
    res = _run(pytester, BODY, "--bnspec-mutant=beta-ignored", f"--bnspec-results={out}")
    assert res.ret == 0, res.stdout.str()
    doc = json.loads(out.read_text())
    assert doc["mutant"] == "beta-ignored" and doc["tests"][0]["evidence"]["run_key"] == "keras3+mutant-beta-ignored"
    assert not (pytester.path / "reports" / "raw").exists()


def test_a_gpu_only_run_writes_its_own_key_and_strict_reads_it(pytester, monkeypatch):
    """Issue #21: `bnspec run --device gpu --strict` wrote keras3-jax-gpu.json and read keras3-jax.json."""
    res = _run(pytester, BODY, "--bnspec-device=gpu")
    assert res.ret == 0
    raw = pytester.path / "reports" / "raw"
    assert [p.name for p in raw.iterdir()] == ["keras3-gpu.json"]
    doc = json.loads((raw / "keras3-gpu.json").read_text())
    assert doc["device"] == "gpu" and doc["tests"][0]["evidence"]["run_key"] == "keras3-gpu"
    from bnspec import cli
    from bnspec.run import Run

    monkeypatch.chdir(pytester.path)
    assert cli._unmeasured_now(Run("keras3", device="gpu")) is True  # K01 alone: every other claim unmeasured
    with pytest.raises(Exception, match="keras3.json: no such results file"):
        cli._unmeasured_now(Run("keras3"))
