"""The committed release history (reports/history/, `bnspec history`) backs the claims' expectations:
it covers the catalogue, every `versions=` range in bnspec/claims/ starts and ends where the measured
verdict changes (bnspec.report.timeline.range_problems), and no measured release contradicts the
expectation its claims give for it. No TensorFlow: these read the committed results."""

from pathlib import Path

import pytest

from bnspec import claims
from bnspec.measure import status as st
from bnspec.report import timeline

REPORTS = Path(__file__).resolve().parents[2] / "reports"
DOCS = timeline.load(REPORTS)
RANGED = [(c, i, r) for c in claims.CLAIMS for i, r in enumerate(c.expected) if r.versions]


def _measured(flavours):
    return [d for d in DOCS if d.flavour in flavours and not d.install_error and d.cases]


def test_history_covers_at_least_14_keras3_and_5_tf_keras_releases():
    k3 = {timeline.release(d) for d in _measured(("keras3", "keras-nightly"))}
    tfk = {timeline.release(d) for d in _measured(("tfkeras",))}
    assert len(k3) >= 14 and len(tfk) >= 5, f"reports/history has {len(k3)} Keras 3 and {len(tfk)} tf_keras releases"


def test_history_results_are_complete_runs():
    for d in DOCS:
        if d.install_error:
            continue
        (run,) = d.runs.values()  # one run per release: `bnspec history` writes a fresh document
        assert not run.partial, d.job
        assert run.environment.keras == timeline.release(d), d.job  # what ran is the release named


@pytest.mark.parametrize("claim,index,rule", RANGED, ids=[f"{c.id}-rule{i}" for c, i, _ in RANGED])
def test_version_range_boundaries_are_where_the_verdict_changes(claim, index, rule):
    assert not (problems := timeline.range_problems(claim, rule, DOCS)), "\n".join(problems)


def test_there_are_version_ranges_to_check():
    assert len(RANGED) >= 5  # the meta-check: the parametrisation above is not empty


# Contradictions measured but not yet explained: (job id prefix, test case id) -> what we know. An entry
# is not an expectation (an expected refutation must name the mechanism its test confirms, and these
# have none yet): it keeps a known, reported contradiction (‼ in the report's timeline) from failing
# the suite, and the entry must still match a contradiction, or it fails as stale.
# The C04 contradiction on Keras 3.3-3.4 was explained (mechanism replica_local_trainables, keras#19891/#20051).
UNEXPLAINED: dict[tuple[str, str], str] = {
    ("tfkeras-2.15", "test_fully_masked_zero_batch_outputs_zeros[True]"):
        "A19 on tf_keras 2.15.1's synchronized BatchNormalization: all 20 outputs of a fully masked batch are NaN "
        "where 2.21 gives exactly 0. Read in tf_keras' source: 2.15's _sync_calculate_mean_and_var divides the "
        "masked sums by the masked count (0/0); tf-keras@cdf256d4a (first in 2.16.0) uses divide_no_nan. The test "
        "names no mechanism for that refutation yet, so no versioned rule can be written for it",
}


def _contradictions():
    found = []
    for d in DOCS:
        for t in d.claim_cases():
            if t.measured and st.case_status(t, d) == st.UNEXPECTED:
                found.append((d, t))
    return found


def _known(d, t):
    return next((k for k in UNEXPLAINED if d.job.startswith(k[0]) and t.nodeid.endswith(k[1])), None)


def test_no_measured_release_contradicts_an_expectation():
    bad = []
    for d, t in _contradictions():
        if _known(d, t) is None:
            bad.append(f"{d.job}: {t.nodeid} observed {t.observed} (mechanisms confirmed: "
                       f"{', '.join(t.confirmed()) or 'none'}), expected {st.rule_now(t, d)}")
    assert not bad, f"{len(bad)} cases contradict their claims' expectations:\n" + "\n".join(bad[:40])


@pytest.mark.parametrize("key", list(UNEXPLAINED), ids=[f"{j}:{c}" for j, c in UNEXPLAINED])
def test_unexplained_entries_still_match_a_contradiction(key):
    assert any(_known(d, t) == key for d, t in _contradictions()), f"{key} matches no contradiction: remove it"
