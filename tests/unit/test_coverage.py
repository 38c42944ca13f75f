"""The coverage table (bnspec/claims/_coverage.py, rendered by bnspec.report.coverage) stays honest: every claim
id it names exists, no row is blank, Keras' test file is listed
test by test and case by case, the page states the counts first, and -- where reports/results.json holds
results -- every claim it names was measured somewhere. No Keras, no TensorFlow."""

import ast
from pathlib import Path

import pytest

from bnspec import claims, results
from bnspec.claims import _coverage as data
from bnspec.report import coverage

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "reports" / "results.json"


def test_every_listed_claim_exists():
    listed = {c for r in data.ROWS for c in r.claims}
    unknown = sorted(c for c in listed if c not in claims.BY_ID)
    assert unknown == [], f"coverage rows name claim ids the registry does not have: {unknown}"


def test_no_row_is_blank_and_none_is_both():
    for r in data.ROWS:
        assert r.anchor in {a.key for a in data.ANCHORS}, r
        assert r.test.strip() and r.assertion.strip(), r
        assert bool(r.claims) != bool(r.na.strip()), f"a row is covered by claims XOR not applicable with a reason: {r}"
        if r.na:
            assert len(r.na.strip()) >= 20, f"say why: {r}"
    assert coverage.counts()["blank"] == 0


def test_the_page_states_the_counts_first():
    c = coverage.counts()
    page = coverage.render()
    first = [line for line in page.splitlines() if line.strip()][1]  # after the title
    assert first == (f"**{c['covered']} of {c['total']} anchor assertions covered by a claim; "
                     f"{c['not_applicable']} not applicable.**")
    assert c["covered"] + c["not_applicable"] == c["total"] == len(data.ROWS)
    for r in data.ROWS:  # every row is on the page
        assert coverage._cell(r.assertion) in page


def test_keras_test_file_listed_test_by_test_and_case_by_case():
    """13 tests and the 33 cases absl's parameterized.product generates at v3.15.1 (16 + 1 + 6 + 10 x 1); every
    test has at least one row, and every row names one of the 13."""
    assert len(data.CASES) == 13
    assert sum(len(v) for v in data.CASES.values()) == 33
    assert len(data.CASES["test_correctness"]) == 16 and len(set(data.CASES["test_correctness"])) == 16
    assert len(data.CASES["test_bachnorm_ignore_masked_values"]) == 6
    keras_rows = [r for r in data.ROWS if r.anchor == "keras"]
    assert {r.test for r in keras_rows} == set(data.CASES)
    page = coverage.render()
    for test, cases in data.CASES.items():
        assert f"`{test}` ({len(cases)})" in page


def test_the_two_reported_keras_defects_are_stated():
    text = " ".join(t for _, t in data.DEFECTS)
    assert 'backend.backend == "tensorflow"' in text
    assert "{rmax}" in text and "{dmax}" in text
    page = coverage.render()
    assert "never generated" in page and "{rmax}" in page


def test_onnx_rows_name_the_installed_cases_and_models():
    from tests.claims import test_conformance as tc

    onnx_tests = {r.test for r in data.ROWS if r.anchor == "onnx"}
    assert {f"node: {n}" for n in tc.NODE_CASES} | {f"pytorch-converted: {m}" for m in tc.CONVERTED} == onnx_tests


def test_rendering_imports_no_keras_or_tensorflow():
    tree = ast.parse((ROOT / "bnspec" / "report" / "coverage.py").read_text())
    tree2 = ast.parse((ROOT / "bnspec" / "claims" / "_coverage.py").read_text())
    for t in (tree, tree2):
        names = {a.name.split(".")[0] for n in ast.walk(t) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(t) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"keras", "tensorflow", "tf_keras", "torch", "jax"}, names


def _measured_claims(path: Path) -> tuple[set, set]:
    """(claims with at least one case that concluded holds/refuted, claims with any case at all) in a results file."""
    measured, present = set(), set()
    for doc in results.load_any(path):
        for case in doc.cases:
            if case.claim:
                present.add(case.claim)
                if case.observed in (claims.HOLDS, claims.REFUTED):
                    measured.add(case.claim)
    return measured, present


def test_every_listed_claim_is_measured_somewhere():
    """A claim the table names must have concluded in some run of the committed reports/results.json: a claim
    with no case there (added after the results were merged: run `bnspec run` and `bnspec report`), or whose
    every case skipped, is a covered row that nothing measures."""
    assert RESULTS.is_file(), f"{RESULTS} is absent: run `bnspec run` (or tox) and `bnspec report`"
    measured, present = _measured_claims(RESULTS)
    listed = sorted({c for r in data.ROWS for c in r.claims})
    assert [c for c in listed if c not in present] == [], f"claims the coverage table names with no case in {RESULTS.name}"
    never = [c for c in listed if c not in measured]
    assert never == [], f"claims the coverage table names that no run of {RESULTS.name} measured: {never}"
