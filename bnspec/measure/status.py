"""A claim's status on one run key, folded from its cases. Used by the plugin's terminal summary (with
the expectations the run checked) and by the report (with the expectations of the current registry).
No TensorFlow.

Per case: holds / refuted (as expected) / unexpected / error / unmeasured. Per claim and run key, the cases
fold into one status:
  holds / refuted / mixed   every measured case as expected (mixed: some hold, some are refuted)
  unexpected                a case's verdict differs from its expectation, or an expected refutation was
                            not confirmed by the mechanism its rule names
  error                     a case broke before concluding (crash, NaN/inf measurement, no power)
  unmeasured                no case executed (all skipped, with the reasons, or none collected)
and three marks: *partial* (some cases not measured, e.g. the GPU ones), *stale* (measured by code whose
fingerprint differs from the current measuring code, bnspec.provenance) and *inherited* (a case kept from
an earlier run that this key's latest run skipped, or measured under another environment).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from bnspec import claims
from bnspec.claims import HOLDS, REFUTED
from bnspec.results import Case, Results

MIXED, UNEXPECTED, ERROR, UNMEASURED = "mixed", "unexpected", "error", "unmeasured"
STATUSES = (HOLDS, REFUTED, MIXED, UNEXPECTED, ERROR, UNMEASURED)


def rule_now(case: Case, doc: Results):
    """The case's expectation (an Expect) under the current registry (None if the claim no longer exists)."""
    claim = claims.BY_ID.get(case.claim)
    if claim is None:
        return None
    run = doc.runs.get(case.run)
    try:
        return claim.expectation(doc.flavour, run.environment.keras if run else None, case.params, doc.backend)
    except LookupError:
        return None


def case_status(case: Case, doc: Results | None) -> str:
    """One case: holds | refuted (as expected) | unexpected | error | unmeasured. With `doc` None, against the
    expectation the run itself checked (the terminal summary); else against the current registry."""
    if case.outcome == "skipped":
        return UNMEASURED
    if case.observed is None:
        return ERROR
    if doc is None:
        return UNEXPECTED if case.observed != case.expected or case.mechanism_failed else case.observed
    rule = rule_now(case, doc)
    if rule is None or case.observed != rule.verdict:
        return UNEXPECTED
    if case.observed == REFUTED and not case.mechanism_confirmed(rule.mechanism):
        return UNEXPECTED
    return case.observed


def fold(statuses: list[str]) -> str:
    measured = [s for s in statuses if s != UNMEASURED]
    if not measured:
        return UNMEASURED
    for worst in (UNEXPECTED, ERROR):
        if worst in measured:
            return worst
    kinds = set(measured)
    return kinds.pop() if len(kinds) == 1 else MIXED


@dataclass
class ClaimStatus:
    """One claim on one run key: its folded status, its marks, its cases with their own status."""

    status: str
    cases: list[tuple[Case, str]] = field(default_factory=list)
    partial: bool = False
    stale: bool = False
    inherited: bool = False
    skip_reasons: list[str] = field(default_factory=list)


def summarise(doc: Results, fingerprint: str | None = None) -> dict[str, ClaimStatus]:
    """claim id -> ClaimStatus for one run key, every claim of the registry (unmeasured when no case ran)."""
    by_claim = defaultdict(list)
    for c in doc.claim_cases():
        by_claim[c.claim].append(c)
    out = {}
    for claim in claims.CLAIMS:
        cases = [(c, case_status(c, doc)) for c in by_claim.get(claim.id, [])]
        measured = [c for c, s in cases if s != UNMEASURED]
        reasons = sorted({c.message or "skipped" for c, s in cases if s == UNMEASURED})
        out[claim.id] = ClaimStatus(
            status=fold([s for _, s in cases]), cases=cases,
            partial=bool(measured) and len(measured) < len(cases),
            stale=bool(fingerprint) and any(doc.run_of(c).fingerprint != fingerprint for c in measured),
            inherited=any(doc.inherited(c) for c in measured),
            skip_reasons=reasons or (["no test collected"] if not cases else []))
    return out


def run_summary(cases: list[Case]) -> tuple[Counter, list[tuple[str, str]]]:
    """For the terminal: counts of claim statuses over the cases of one run (expectations as the run checked
    them), and the unmeasured claims with a reason."""
    by_claim = defaultdict(list)
    for c in cases:
        by_claim[c.claim].append(c)
    counts = Counter(fold([case_status(c, None) for c in cs]) for cs in by_claim.values())
    unmeasured = []
    for cid, cs in sorted(by_claim.items()):
        if fold([case_status(c, None) for c in cs]) == UNMEASURED:
            unmeasured.append((cid, next((c.message for c in cs if c.message), "skipped")))
    return counts, unmeasured


def summary_sentence(counts: Counter, runs: int = 1) -> str:
    total = sum(counts.values())
    parts = [f"{counts[HOLDS]} hold", f"{counts[REFUTED]} refuted as expected", f"{counts[MIXED]} mixed as expected",
             f"{counts[UNEXPECTED]} unexpected", f"{counts[ERROR]} error{'s' * (counts[ERROR] != 1)}",
             f"{counts[UNMEASURED]} unmeasured"]
    what = f"{total} claim verdicts ({total // runs} claims x {runs} runs)" if runs > 1 else f"{total} claims"
    return f"{what}: " + ", ".join(parts)
