"""The release history: bnspec.harness.history's catalogue and job selection, the timeline's statuses and
flips on small hand-written histories (bnspec.report.timeline), and `range_problems`, the check that
a claim's `versions=` range starts and ends where the measured verdict changes. No TensorFlow.

The checks of the committed history itself (every range backed, no release contradicting an
expectation) are in test_history_ranges.py."""

import json

import pytest

from bnspec import BnspecError, claims, results
from bnspec import releases
from bnspec.harness import history
from bnspec.claims import HOLDS, REFUTED, Claim, Expect
from bnspec.report import timeline
from bnspec.measure import status as v


def _doc(flavour, release, cases, fingerprint="f00d"):
    """A release's document: cases = [(case, observed | 'skip:<reason>' | 'error')] of claim Z01."""
    tests = []
    for case, obs in cases:
        t = {"nodeid": f"tests/claims/test_z.py::test_z[{case}]", "claim": "Z01", "params": {"mode": case},
             "expected": None, "observed": None, "summary": "", "evidence": {}, "message": "", "run": "r1"}
        if obs.startswith("skip:"):
            t.update(outcome="skipped", message=obs[5:])
        elif obs == "error":
            t.update(outcome="error", message="boom")
        else:
            t.update(outcome="passed", observed=obs)
        tests.append(t)
    run = {"finished": "2026-11-26T00:00:00", "seconds": 1.0, "environment": {"keras": release, "tensorflow": "2.21.0"},
           "code": {"fingerprint": fingerprint, "commit": "c0ffee", "dirty": False}, "selection": {"args": [], "partial": False}}
    doc = {"schema": results.SCHEMA, "flavour": flavour, "backend": "tensorflow", "runs": {"r1": run}, "tests": tests,
           "release": release}
    out = results.Results.from_dict(doc, "synthetic")
    out.job = f"{flavour}-{release}"
    return out


NA = "skip:" + results.NOT_APPLICABLE + "no such argument"


@pytest.fixture
def z_claim(monkeypatch):
    """One claim, Z01: refuted before 3.2 (change #1), holds from 3.2 on."""
    c = Claim("Z01", "z", "A statement.", "src", topic="zeta", expected=(
        Expect(REFUTED, flavour="keras3", versions="<3.2", why="old", mechanism="m"),
        Expect(HOLDS, flavour="keras3", versions=">=3.2", change="keras#1"),
        Expect(HOLDS)))
    monkeypatch.setattr(claims, "CLAIMS", (c,))
    monkeypatch.setattr(claims, "BY_ID", {"Z01": c})
    return c


# --------------------------------------------------------------------------- catalogue


def test_catalogue_covers_the_issue_s_releases():
    jobs = releases.catalogue()
    k3 = [j for j in jobs if j.flavour == "keras3"]
    assert [j.release.split(".")[:2] for j in k3] == [["3", str(m)] for m in range(16)]  # 3.0 ... 3.15
    assert [j.release[:4] for j in jobs if j.flavour == "tfkeras"] == [f"2.{m}" for m in range(15, 22)]
    assert len({j.id for j in jobs}) == len(jobs)
    for j in jobs:  # tf_keras X.Y runs over TensorFlow X.Y; every Keras 3 over one TensorFlow
        if j.flavour == "tfkeras":
            assert j.tensorflow.split(".")[:2] == j.release.split(".")[:2]
        else:
            assert j.tensorflow == releases.KERAS3_TENSORFLOW


def test_ends_are_the_oldest_and_newest_of_each_family():
    ids = [j.id for j in history.select([], only_ends=True)]
    assert ids == ["keras3-3.0.5", f"keras-nightly-{releases.NIGHTLY}", "tfkeras-2.15.1", "tfkeras-2.21.0"]


def test_unknown_release_is_one_clear_error():
    with pytest.raises(BnspecError, match="unknown release job keras3-9.9; `bnspec history --list`"):
        history.select(["keras3-9.9"])


def test_list_json_is_a_matrix(capsys):
    from bnspec.cli import main

    assert main(["history", "--list", "--json", "--family", "tfkeras"]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [j["job"] for j in jobs] == [f"tfkeras-{r}" for r in history.TFKERAS]


def test_fresh_needs_a_complete_run_of_this_code(tmp_path):
    job = history.Job("keras3", "3.1.1")
    path = history.out_path(tmp_path, job)
    assert not history.fresh(tmp_path, job, "f00d")  # nothing yet
    doc = _doc("keras3", "3.1.1", [("a", HOLDS)]).to_dict()
    path.write_text(json.dumps(doc))
    assert history.fresh(tmp_path, job, "f00d")
    assert not history.fresh(tmp_path, job, "beef")  # other measuring code: rerun
    doc["runs"]["r1"]["selection"]["partial"] = True
    path.write_text(json.dumps(doc))
    assert not history.fresh(tmp_path, job, "f00d")  # a partial run is not a release's result
    path.write_text("{not json")
    assert not history.fresh(tmp_path, job, "f00d")


# --------------------------------------------------------------------------- timeline statuses


def test_observed_statuses(z_claim):
    assert timeline.observed(_doc("keras3", "3.0.5", [("a", HOLDS), ("b", HOLDS)]))["Z01"].status == v.HOLDS
    assert timeline.observed(_doc("keras3", "3.0.5", [("a", HOLDS), ("b", REFUTED)]))["Z01"].status == v.MIXED
    assert timeline.observed(_doc("keras3", "3.0.5", [("a", NA), ("b", NA)]))["Z01"].status == timeline.NA
    # one case not applicable, the other skipped for another reason: unmeasured, not n/a
    assert timeline.observed(_doc("keras3", "3.0.5", [("a", NA), ("b", "skip:no GPU")]))["Z01"].status == v.UNMEASURED
    assert timeline.observed(_doc("keras3", "3.0.5", [("a", "error")]))["Z01"].status == v.ERROR
    broken = _doc("keras3", "3.0.5", [])
    broken.install_error, broken.runs = "pip failed", {}
    assert timeline.observed(broken)["Z01"].status == timeline.NOT_INSTALLABLE


def test_unexpected_is_against_the_release_s_own_expectation(z_claim):
    # refuted on 3.1 is expected (<3.2); refuted on 3.3 is not
    assert not timeline.observed(_doc("keras3", "3.1.1", [("a", REFUTED)]))["Z01"].unexpected
    assert timeline.observed(_doc("keras3", "3.3.3", [("a", REFUTED)]))["Z01"].unexpected


def test_flips_skip_unmeasured_releases_and_see_case_level_changes(z_claim):
    docs = [_doc("keras3", "3.0.5", [("a", REFUTED), ("b", HOLDS)]),
            _doc("keras3", "3.1.1", [("a", "skip:no GPU"), ("b", "skip:no GPU")]),  # unmeasured: not a flip
            _doc("keras3", "3.2.1", [("a", HOLDS), ("b", REFUTED)]),  # still mixed, but each case flipped
            _doc("keras3", "3.3.3", [("a", HOLDS), ("b", REFUTED)])]
    row = [(d, timeline.observed(d)["Z01"]) for d in docs]
    assert [d.release for d, _ in timeline.flips(row)] == ["3.2.1"]


def test_section_names_the_flip_and_its_change(z_claim):
    docs = [_doc("keras3", "3.0.5", [("a", REFUTED)]), _doc("keras3", "3.1.1", [("a", REFUTED)]),
            _doc("keras3", "3.2.1", [("a", HOLDS)])]
    text = "\n".join(timeline.section(docs, "f00d"))
    assert "**1 claims change verdict somewhere in the history; 0 are the same on every release.**" in text
    row = next(line for line in text.splitlines() if line.startswith("| [Z01]"))
    assert row == "| [Z01](CLAIMS.md#z01) | ✗ | ✗ | ✓ | 3.2 (✗→✓) | keras#1 |"
    assert "every measured case agrees" in text
    # measured by other code: the column is marked stale
    assert "3.0†" in "\n".join(timeline.section(docs, "beef"))


def test_section_marks_a_contradiction(z_claim):
    docs = [_doc("keras3", "3.0.5", [("a", REFUTED)]), _doc("keras3", "3.3.3", [("a", REFUTED)])]
    text = "\n".join(timeline.section(docs, "f00d"))
    assert "contradict their expectation: Z01" in text
    assert "| ✗ | ✗‼ |" in text or "✗‼" in text


# --------------------------------------------------------------------------- range_problems


def _history(flip_at):
    rel = ["3.0.5", "3.1.1", "3.2.1", "3.3.3"]
    return [_doc("keras3", r, [("a", REFUTED if i < rel.index(flip_at) else HOLDS)]) for i, r in enumerate(rel)]


def test_range_backed_when_the_boundary_is_the_flip(z_claim):
    docs = _history("3.2.1")
    assert all(timeline.range_problems(z_claim, r, docs) == [] for r in z_claim.expected if r.versions)


def test_range_that_starts_late_or_early_is_a_problem(z_claim):
    late = _history("3.1.1")  # the verdict changed at 3.1, the claims say 3.2
    problems = [p for r in z_claim.expected if r.versions for p in timeline.range_problems(z_claim, r, late)]
    assert any("3.1.1, just outside the range, observes holds too" in p for p in problems)
    early = _history("3.3.3")  # changed at 3.3: 3.2 is inside >=3.2 but refuted (a contradiction), and
    problems = [p for r in z_claim.expected if r.versions for p in timeline.range_problems(z_claim, r, early)]
    assert any("3.2.1, just outside the range, observes refuted too" in p for p in problems)


def test_range_with_no_measured_release_is_a_problem(z_claim):
    docs = [_doc("keras3", "3.0.5", [("a", REFUTED)])]
    rule = next(r for r in z_claim.expected if r.versions == ">=3.2")
    assert timeline.range_problems(z_claim, rule, docs) == ["Z01 versions='>=3.2': no measured keras3 release in the range"]


def test_not_applicable_counts_as_a_change_at_a_boundary(z_claim):
    docs = [_doc("keras3", "3.0.5", [("a", NA)]), _doc("keras3", "3.1.1", [("a", NA)]),
            _doc("keras3", "3.2.1", [("a", HOLDS)])]
    rule = next(r for r in z_claim.expected if r.versions == ">=3.2")
    assert timeline.range_problems(z_claim, rule, docs) == []


def test_a_refutation_is_checked_against_the_current_rule_s_mechanism(z_claim):
    # measured when no rule expected a refutation (no mechanism_failed flag); the rule written since
    # names mechanism "m": the recorded mechanisms decide, not the run's flag
    d = _doc("keras3", "3.0.5", [("a", REFUTED)])
    t = d.cases[0]
    t.mechanisms = {"m": {"confirmed": False, "detail": "not seen"}, "other": {"confirmed": True}}
    assert v.case_status(t, d) == v.UNEXPECTED
    t.mechanisms["m"]["confirmed"] = True
    assert v.case_status(t, d) == REFUTED
    t.mechanisms = None  # results from before mechanisms were stored: the run's own flag
    assert v.case_status(t, d) == REFUTED
    t.mechanism_failed = True
    assert v.case_status(t, d) == v.UNEXPECTED


def test_a_release_that_does_not_install_is_one_line_and_a_document(tmp_path, monkeypatch, capsys):
    import sys
    from pathlib import Path

    from bnspec import paths

    monkeypatch.setenv("BNSPEC_HOME", str(tmp_path / "home"))
    log = tmp_path / "pip.log"
    log.write_text("")
    with pytest.raises(history.InstallError, match=r"^pip install bnspec-no-such-package==0\.0 failed: ERROR"):
        history._pip(Path(sys.executable), "--no-deps", "--target", str(tmp_path / "t"), "bnspec-no-such-package==0.0",
                     log=log)

    def no_venv(job, log, say):
        raise history.InstallError("pip install tensorflow==9.9 failed: ERROR: No matching distribution")

    monkeypatch.setattr(history, "venv", no_venv)
    out = tmp_path / "history"
    (outcome,) = history.sweep([history.Job("tfkeras", "2.16.0")], out, say=print)
    assert outcome["status"] == "not installable"
    printed = capsys.readouterr().out
    assert "tfkeras-2.16.0: NOT INSTALLABLE: pip install tensorflow==9.9 failed" in printed
    doc = json.loads((out / "tfkeras-2.16.0.json").read_text())
    assert doc["install_error"].startswith("pip install tensorflow==9.9") and doc["tests"] == []
    assert history.fresh(out, history.Job("tfkeras", "2.16.0"), "any")  # not retried without --force
    assert timeline.observed(results.Results.from_dict(doc))[claims.CLAIMS[0].id].status == timeline.NOT_INSTALLABLE
    assert paths.home() == tmp_path / "home"


def test_history_list_imports_no_backend():
    import subprocess
    import sys

    code = ("import sys; from bnspec import cli; rc = cli.main(['history', '--list', '--json']); "
            "from bnspec.report import timeline; "
            "print('RESULT', rc, [m for m in ('tensorflow', 'keras', 'jax', 'torch', 'tf_keras') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    assert line == "RESULT 0 []", out.stderr


def test_parallel_sweep_runs_jobs_at_once_and_reports_in_catalogue_order(tmp_path, monkeypatch):
    import threading

    barrier = threading.Barrier(2, timeout=10)  # both jobs must be running at the same time to pass it

    def fake_run(job, out_dir, workers, say):
        barrier.wait()
        return {"job": job.id, "status": "measured", "seconds": 0.0, "install_seconds": 0.0, "cases": 1,
                "failed": 0, "log": "-"}

    monkeypatch.setattr(history, "run_job", fake_run)
    jobs = history.select(["keras3-3.1.1", "keras3-3.0.5"])
    lines = []
    done = history.sweep(jobs, tmp_path, force=True, parallel=2, say=lines.append)
    assert [d["job"] for d in done] == ["keras3-3.1.1", "keras3-3.0.5"]
    assert lines[-1].startswith("history: 2 jobs in") and "(2 at a time)" in lines[-1]
    barrier = threading.Barrier(2, timeout=0.2)  # noqa: F841 (read by fake_run)
    with pytest.raises(threading.BrokenBarrierError):  # one at a time, the barrier is never met
        history.sweep(jobs[:1], tmp_path, force=True, parallel=1, say=lines.append)


def test_a_case_appearing_is_not_a_flip_but_a_case_changing_is(z_claim):
    docs = [_doc("keras3", "3.0.5", [("a", HOLDS), ("b", NA)]),  # b's API does not exist yet
            _doc("keras3", "3.1.1", [("a", HOLDS), ("b", HOLDS)])]
    row = [(d, timeline.observed(d)["Z01"]) for d in docs]
    assert timeline.flips(row) == []


def test_the_change_is_named_at_either_end_of_a_range(monkeypatch):
    c = Claim("Z02", "z", "A statement.", "src", topic="zeta", expected=(
        Expect(HOLDS, flavour="keras3", versions="<3.2", change="keras#7"),  # a range that ends: its end's change
        Expect(REFUTED, flavour="keras3", why="later", mechanism="m")))
    monkeypatch.setattr(claims, "CLAIMS", (c,))
    monkeypatch.setattr(claims, "BY_ID", {"Z02": c})
    a, b, d = (_doc("keras3", r, []) for r in ("3.1.1", "3.2.1", "3.3.3"))
    assert timeline.cause(c, b, a) == "keras#7"  # 3.1 in the range, 3.2 not: the boundary
    assert timeline.cause(c, d, b) == ""  # both outside
    assert timeline.cause(c, _doc("tfkeras", "2.16.0", []), _doc("tfkeras", "2.15.1", [])) == ""  # other family


def test_a_change_of_mechanism_is_a_flip_and_a_range_boundary(monkeypatch):
    c = Claim("Z03", "z", "A statement.", "src", topic="zeta", expected=(
        Expect(REFUTED, flavour="keras3", versions="<3.2", why="old way", mechanism="old", change="keras#9"),
        Expect(REFUTED, flavour="keras3", why="new way", mechanism="new")))
    monkeypatch.setattr(claims, "CLAIMS", (c,))
    monkeypatch.setattr(claims, "BY_ID", {"Z03": c})

    def doc(release, mech):
        d = _doc("keras3", release, [("a", REFUTED)])
        for t in d.cases:
            t.claim, t.mechanisms = "Z03", {mech: {"confirmed": True}}
        return d

    docs = [doc("3.0.5", "old"), doc("3.1.1", "old"), doc("3.2.1", "new")]
    row = [(d, timeline.observed(d)["Z03"]) for d in docs]
    assert [d.release for d, _ in timeline.flips(row)] == ["3.2.1"]
    text = "\n".join(timeline.section(docs, "f00d"))
    assert "| [Z03](CLAIMS.md#z03) | ✗ | ✗ | ✗ | 3.2 (✗, another mechanism) | keras#9 |" in text
    old = c.expected[0]
    assert timeline.range_problems(c, old, docs) == []
    late = [doc("3.0.5", "old"), doc("3.1.1", "new"), doc("3.2.1", "new")]  # the mechanism changed at 3.1
    assert any("3.1.1" in p for p in timeline.range_problems(c, old, late)) is False  # 3.1 is inside: a contradiction
    assert v.case_status(late[1].cases[0], late[1]) == v.UNEXPECTED  # ... which the contradiction test reports
    early = [doc("3.0.5", "old"), doc("3.1.1", "old"), doc("3.2.1", "old")]  # the old way lasted longer
    assert any("3.2.1, just outside the range" in p for p in timeline.range_problems(c, old, early))


def test_errors_show_but_are_never_flips(z_claim):
    docs = [_doc("keras3", "3.2.1", [("a", HOLDS), ("b", HOLDS)]),  # (Z01 holds from 3.2)
            _doc("keras3", "3.3.3", [("a", "error"), ("b", "error")]),  # broke entirely: no verdict
            _doc("keras3", "3.4.1", [("a", HOLDS), ("b", "error")]),  # one case broke: the verdict is a's
            _doc("keras3", "3.5.0", [("a", HOLDS), ("b", HOLDS)])]
    row = [(d, timeline.observed(d)["Z01"]) for d in docs]
    assert timeline.flips(row) == []
    text = "\n".join(timeline.section(docs, "f00d"))
    assert "| [Z01](CLAIMS.md#z01) | ✓ | ⚠ | ✓⚠ | ✓ | — | — |" in text


def test_a_range_that_matters_on_another_backend_only_is_not_judged_here(monkeypatch):
    c = Claim("Z04", "z", "A statement.", "src", topic="zeta", expected=(
        Expect(HOLDS, flavour="keras3", versions=">=3.2"),  # the fix, for JAX
        Expect(REFUTED, flavour="keras3", backend="jax", why="jax", mechanism="m"),
        Expect(HOLDS)))  # TensorFlow: always held
    monkeypatch.setattr(claims, "CLAIMS", (c,))
    monkeypatch.setattr(claims, "BY_ID", {"Z04": c})
    docs = [_doc("keras3", r, [("a", HOLDS)]) for r in ("3.0.5", "3.1.1", "3.2.1")]
    for d in docs:
        d.cases[0].claim = "Z04"
    assert timeline.range_problems(c, c.expected[0], docs) == []
    c2 = Claim("Z04", "z", "A statement.", "src", topic="zeta", expected=(
        Expect(HOLDS, flavour="keras3", versions=">=3.2"), Expect(REFUTED, why="before", mechanism="m")))
    monkeypatch.setattr(claims, "BY_ID", {"Z04": c2})
    assert timeline.range_problems(c2, c2.expected[0], docs)  # here the boundary matters: 3.1 holds too


def test_a_new_case_that_changes_the_status_is_not_a_flip(z_claim):
    docs = [_doc("keras3", "3.2.1", [("a", REFUTED), ("b", NA)]),  # status refuted (b not applicable yet)
            _doc("keras3", "3.3.3", [("a", REFUTED), ("b", HOLDS)])]  # status mixed, a unchanged
    row = [(d, timeline.observed(d)["Z01"]) for d in docs]
    assert timeline.flips(row) == []


def test_keras3_jobs_make_the_tf_keras_artefacts_with_their_own_venv(monkeypatch, tmp_path):
    """C12/C25 load files made by a tf_keras interpreter: a history job names its venv's python (the
    tf_keras of its TensorFlow) instead of whatever .tox/tfkeras or BNSPEC_TFKERAS_PYTHON the checkout has;
    a tf_keras job needs none, and an inherited one is not passed on."""
    monkeypatch.setenv("BNSPEC_TFKERAS_PYTHON", "/elsewhere/python")
    py, overlay = tmp_path / "venv" / "bin" / "python", tmp_path / "overlay"
    k3 = next(j for j in releases.catalogue() if j.flavour == "keras3")
    env = history.environment(k3, overlay, py)
    assert env["BNSPEC_TFKERAS_PYTHON"] == str(py)
    assert env["PYTHONPATH"].split(":")[0] == str(overlay) and env["BNSPEC_FLAVOUR"] == "keras3"
    tfk = next(j for j in releases.catalogue() if j.flavour == "tfkeras")
    env = history.environment(tfk, None, py)
    assert "BNSPEC_TFKERAS_PYTHON" not in env and env["TF_USE_LEGACY_KERAS"] == "1"
