"""The release timeline: per claim, the verdict observed on every Keras release that `bnspec history`
measured (reports/history/<job>.json), the release where it flipped and the change behind the flip.
No TensorFlow.

Per claim and release the cases fold into what was *observed* (not what was expected):
  holds / refuted / mixed   the measured cases' verdicts (mixed: some hold, some are refuted)
  n/a                       every case skipped as not applicable (the API does not exist in that release)
  error                     a case broke before concluding and none concluded
  unmeasured                skipped for another reason; `not installable` when the release would not install
A claim *flips* between two consecutive measured releases when its status or the verdict of any case
changes. A cell is marked ‼ when a case contradicts the claim's expectation for that release, so the
table is also the check that every `versions=` range in bnspec/claims/ matches the measurements.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bnspec import claims, results
from bnspec.measure import status as st
from bnspec.releases import FAMILIES, catalogue
from bnspec.report import verdicts as v
from bnspec.results import Results

NA, NOT_INSTALLABLE = "n/a", "not installable"
SYMBOL = {st.HOLDS: "✓", st.REFUTED: "✗", st.MIXED: "◐", st.ERROR: "⚠", st.UNMEASURED: "·", NA: "–", NOT_INSTALLABLE: "∅"}
LEGEND = ("✓ holds · ✗ refuted · ◐ holds for some cases, refuted for others · – not applicable (the API does not exist "
          "in that release) · ⚠ error (after a symbol: some cases broke, the verdict is the others') · · unmeasured · ∅ the release did not install · ‼ a case contradicts the "
          "claim's expectation for that release · † measured by older code")
FAMILY_TITLE = {"keras3": "Keras 3 (TensorFlow backend, TensorFlow 2.21)", "tfkeras": "tf_keras (each over its own TensorFlow)"}


def load(out_dir: Path) -> list[Results]:
    """reports/history/*.json in catalogue order (unknown jobs last), or [] when there is no history."""
    d = Path(out_dir) / "history"
    if not d.is_dir():
        return []
    order = {j.id: i for i, j in enumerate(catalogue("tensorflow") + catalogue("jax") + catalogue("torch"))}
    docs = []
    for f in sorted(d.glob("*.json")):
        doc = results.load(f)
        doc.job = f.stem
        docs.append(doc)
    return sorted(docs, key=lambda doc: (order.get(doc.job, len(order)), doc.job))


def release(doc: Results) -> str:
    latest = doc.latest()
    return doc.release or (latest.environment.keras if latest else None) or "?"


def column(doc: Results) -> str:
    """A short column title: the minor version (3.8), `nightly` for keras-nightly."""
    if doc.flavour == "keras-nightly":
        return "nightly"
    return ".".join(release(doc).split(".")[:2])


@dataclass(frozen=True)
class Observation:
    """What one release observed for one claim: its status, per case (verdict, confirmed mechanisms), whether a
    case contradicts the claim's expectation for that release, and how many cases broke (no verdict)."""

    status: str
    cases: tuple = ()  # ((case id, (verdict, mechanisms)), ...)
    unexpected: bool = False
    errors: int = 0


def observed(doc: Results) -> dict[str, Observation]:
    """claim id -> Observation for one release's results."""
    by_claim = defaultdict(list)
    for c in doc.claim_cases():
        by_claim[c.claim].append(c)
    out = {}
    for claim in claims.CLAIMS:
        cases = by_claim.get(claim.id, [])
        if doc.install_error:
            out[claim.id] = Observation(NOT_INSTALLABLE)
            continue
        measured = [c for c in cases if c.measured]
        # per case: the verdict and, for a refutation, the mechanisms the test confirmed (why it is refuted)
        concluded = sorted((c.case_id, (c.observed, c.confirmed() if c.observed == st.REFUTED else ()))
                           for c in measured if c.observed)
        kinds = {o for _, (o, _m) in concluded}
        if concluded:
            status = kinds.pop() if len(kinds) == 1 else st.MIXED
        elif measured:
            status = st.ERROR
        elif cases and all(c.not_applicable for c in cases):
            status = NA
        else:
            status = st.UNMEASURED
        unexpected = any(st.case_status(c, doc) == st.UNEXPECTED for c in measured)
        broken = len(measured) - len(concluded)  # cases that crashed or measured NaN: no verdict, never a flip
        out[claim.id] = Observation(status, tuple(concluded), unexpected, broken)
    return out


def _comparable(o: Observation) -> bool:
    """Whether an observation is a verdict (or not applicable) to compare with the next release's."""
    return o.status not in (st.UNMEASURED, NOT_INSTALLABLE, st.ERROR)


def changed(a: Observation, b: Observation) -> bool:
    """Whether the verdict changed between two observations: the verdict of a case concluded in both, or the
    mechanism that refutes it (a case that is only measured in one of them, e.g. not applicable in the
    other, is not a change by itself); with no case in common, the claim's status."""
    va, vb = dict(a.cases), dict(b.cases)
    common = va.keys() & vb.keys()
    if common:  # judged on the cases both measured: a case appearing (its API added) changes no verdict
        return any(va[k] != vb[k] for k in common)
    return a.status != b.status  # e.g. not applicable -> measured


def flips(row: list[tuple[Results, Observation]]) -> list[tuple[Results, Observation]]:
    """(document, observation) pairs where the claim's observation differs from the previous comparable one."""
    out, prev = [], None
    for doc, o in row:
        if not _comparable(o):
            continue
        if prev is not None and changed(prev, o):
            out.append((doc, o))
        prev = o
    return out


def cause(claim: claims.Claim, doc: Results, before: Results | None) -> str:
    """The change (`Expect.change`) of a ranged expectation whose boundary lies between the release `before`
    and `doc`: the range starts at `doc` or ends just before it."""
    from packaging.specifiers import SpecifierSet

    backend = doc.backend
    found = []
    for rule in claim.expected:
        if not (rule.change and rule.versions):
            continue
        spec = SpecifierSet(rule.versions, prereleases=True)
        if (rule.flavour and rule.flavour not in (doc.flavour, doc.family)) or (rule.backend and rule.backend != backend):
            continue
        if before is not None and (release(doc) in spec) != (release(before) in spec):
            found.append(rule.change)
    return "; ".join(dict.fromkeys(found))


@dataclass
class FamilyTable:
    """One family's part of the timeline: its releases, the claims that flip (or contradict), the stable ones,
    the releases measured by older code."""

    docs: list[Results]
    rows: list  # (claim, [(release, Observation)], flips)
    stable: list[str]
    stale: set[str]


def table(docs: list[Results], fingerprint: str | None) -> dict[str, FamilyTable]:
    """Everything the section and the figure draw: per family, the columns and the rows that flip."""
    obs = {d.job: observed(d) for d in docs}
    out = {}
    for fam in FAMILIES:
        fdocs = [d for d in docs if d.family == fam]
        if not fdocs:
            continue
        rows, stable = [], []
        for c in claims.CLAIMS:
            row = [(d, obs[d.job][c.id]) for d in fdocs]
            fl = flips(row)
            if fl or any(o.unexpected or o.errors for _, o in row):  # a contradiction or a crash shows too
                rows.append((c, row, fl))
            if not fl and any(_comparable(o) for _, o in row):
                stable.append(c.id)
        stale = {d.job for d in fdocs if fingerprint and any(r.fingerprint != fingerprint for r in d.runs.values())}
        out[fam] = FamilyTable(fdocs, rows, stable, stale)
    return out


def _cell(o: Observation) -> str:
    """The status's symbol, ‼ when a case contradicts its expectation, ⚠ when some case broke (no verdict)."""
    return SYMBOL[o.status] + ("‼" if o.unexpected else "") + ("⚠" if o.errors and o.status != st.ERROR else "")


def section(docs: list[Results], fingerprint: str | None) -> list[str]:
    if not docs:
        return []
    t = table(docs, fingerprint)
    n = {fam: len(t[fam].docs) for fam in t}
    changing = sorted({c.id for fam in t for c, _, fl in t[fam].rows if fl})
    stable_all = [c.id for c in claims.CLAIMS if c.id not in changing and all(c.id in t[fam].stable for fam in t)]
    unexpected = sorted({c.id for fam in t for c, row, _ in t[fam].rows for _, o in row if o.unexpected})
    lines = ["## Across releases: on my version?", ""]
    lines += v.wrap(
        f"**{len(changing)} claims change verdict somewhere in the history; {len(stable_all)} are the same on every "
        f"release.** Measured by `bnspec history` on " + " and ".join(f"{n[f]} {FAMILY_TITLE[f].split(' (')[0]} releases"
                                                                      for f in t)
        + (f"; cases that contradict their expectation: {', '.join(unexpected)}." if unexpected else
           "; every measured case agrees with its claim's expectation for that release.")
        + " Raw results: [history/](history/); as an image: [history_timeline.png](history_timeline.png).")
    lines.append("")
    for fam, part in t.items():
        cols = [column(d) + ("†" if d.job in part.stale else "") for d in part.docs]
        lines += v.wrap(f"**{FAMILY_TITLE[fam]}**: " + ", ".join(
            f"{column(d)} = {release(d)}" + (f" over TF {d.tensorflow_release}" if fam == "tfkeras" else "")
            for d in part.docs) + ".") + [""]
        if part.rows:  # the claims that flip, and any that contradict their expectation
            lines += ["| claim | " + " | ".join(cols) + " | flips at | change |", "|---|" + "---|" * (len(cols) + 2)]
            for c, row, fl in part.rows:
                at = ", ".join(f"{column(d)} ({_flip(previous(row, d)[1], o)})" for d, o in fl) or "—"
                why = "; ".join(dict.fromkeys(x for d, _ in fl for x in [cause(c, d, previous(row, d)[0])] if x)) or "—"
                lines.append(f"| {v.claim_link(c.id)} | " + " | ".join(_cell(o) for _, o in row) + f" | {at} | {why} |")
            lines.append("")
        else:
            lines += ["No claim changes verdict across these releases.", ""]
    lines += v.wrap(f"Stable across every release: {', '.join(stable_all)}.") + [""]
    lines += v.wrap(LEGEND + ".") + [""]
    return lines


def _flip(a: Observation, b: Observation) -> str:
    """'✗→✓', or '✗, another mechanism' when only the reason for a refutation changed."""
    va, vb = ({k: o for k, (o, _m) in x.cases} for x in (a, b))
    if a.status == b.status and all(va[k] == vb[k] for k in va.keys() & vb.keys()):
        return f"{_cell(b)}, another mechanism"
    return f"{_cell(a)}→{_cell(b)}"


def previous(row: list[tuple[Results, Observation]], doc: Results) -> tuple[Results, Observation] | tuple[None, None]:
    """The (document, observation) of the comparable release before `doc` in the row."""
    prev = (None, None)
    for d, o in row:
        if d is doc:
            return prev
        if _comparable(o):
            prev = (d, o)
    raise LookupError(doc.job)


COLOURS = {st.HOLDS: "#4caf50", st.REFUTED: "#9e9e9e", st.MIXED: "#90caf9", st.ERROR: "#ff9800", st.UNMEASURED: "#ffffff",
           NA: "#eeeeee", NOT_INSTALLABLE: "#000000"}


def figure(docs: list[Results], target: Path, fingerprint: str | None) -> Path | None:
    """history_timeline.png: the claims that flip (rows) x every release (columns), coloured by verdict."""
    if not docs:
        return None
    from bnspec.report.figure import matrix_png

    t = table(docs, fingerprint)
    cols = [d for fam in t for d in t[fam].docs]
    ids = sorted({c.id for fam in t for c, _, _ in t[fam].rows}, key=[c.id for c in claims.CLAIMS].index)
    obs = {d.job: observed(d) for d in cols}
    cells = [[(COLOURS[o.status], _cell(o), "white" if o.status == NOT_INSTALLABLE else "black")
              for o in (obs[d.job][cid] for d in cols)] for cid in ids]
    titles = {c.id: c.title for c in claims.CLAIMS}
    return matrix_png(target, cells, [("tf_keras " if d.family == "tfkeras" else "") + column(d) for d in cols],
                      [f"{cid} {titles[cid][:36]}" for cid in ids], COLOURS,
                      figsize=(2.6 + 0.42 * len(cols), 0.26 * max(len(ids), 1) + 1.6), xfont=7, yfont=7,
                      xrotation=60, ncol=4, dpi=120)


# --------------------------------------------------------------------------- version ranges vs the history

def range_problems(claim: claims.Claim, rule, docs: list[Results]) -> list[str]:
    """Why the history does not back `rule.versions` (empty when it does): the range must contain a measured
    release, and at each of its boundaries inside the history the verdict of the rule's cases must change,
    i.e. the release just outside the range observes something other than `rule.verdict` (or the claim is not
    applicable there). A range that could be widened, or that starts one release late, is a problem."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    spec = SpecifierSet(rule.versions, prereleases=True)
    fams = ["tfkeras"] if rule.flavour == "tfkeras" else ["keras3"] if rule.flavour else list(FAMILIES)
    problems = []
    for fam in fams:
        seq = sorted((d for d in docs if d.family == fam and not d.install_error
                      and (rule.flavour != "keras-nightly" or d.flavour == "keras-nightly")
                      and d.backend == (rule.backend or "tensorflow")),
                     key=lambda d: Version(release(d)))
        if not seq:
            continue

        def verdicts_at(d):
            """What the rule's cases observe at release d: verdicts, a refutation counted as the rule's only
            when the rule's mechanism is the one confirmed (a refutation for another reason is a change)."""
            ts = [c for c in d.cases if c.claim == claim.id and rule.matches_case(c.params)]
            if ts and all(c.not_applicable for c in ts):
                return {NA}
            seen = set()
            for c in ts:
                if c.measured and c.observed:
                    other = c.observed == st.REFUTED and rule.verdict == st.REFUTED and not c.mechanism_confirmed(rule.mechanism)
                    seen.add(c.observed + (" by another mechanism" if other else ""))
            return seen

        inside = [Version(release(d)) in spec for d in seq]
        if not any(inside):
            problems.append(f"{claim.id} versions={rule.versions!r}: no measured {fam} release in the range")
            continue
        for i, d in enumerate(seq):
            if not inside[i]:
                continue
            for j in (i - 1, i + 1):  # a neighbour outside the range: the verdict must differ there
                if 0 <= j < len(seq) and not inside[j]:
                    if _same_expectation_outside(claim, rule, seq[j]):
                        continue  # the other rules expect the same there: this boundary means nothing on this backend
                    there = verdicts_at(seq[j])
                    if there and there <= {rule.verdict}:
                        problems.append(
                            f"{claim.id} versions={rule.versions!r} ({rule.verdict}): {release(seq[j])}, just outside "
                            f"the range, observes {rule.verdict} too; the boundary is not where the verdict changes")
    return problems


def _same_expectation_outside(claim: claims.Claim, rule, doc: Results) -> bool:
    """Whether, at a release outside `rule`'s range, the claim's other rules expect exactly what `rule` does
    (same verdict, same mechanism) for every case `rule` names: e.g. a range that matters on JAX only,
    checked against a TensorFlow history."""
    cases = [c for c in doc.cases if c.claim == claim.id and rule.matches_case(c.params) and c.measured]
    if not cases:
        return False
    for c in cases:
        other = claim.expectation(doc.flavour, release(doc), c.params, doc.backend)
        if other.verdict != rule.verdict or (rule.verdict == st.REFUTED and other.mechanism != rule.mechanism):
            return False
    return True
