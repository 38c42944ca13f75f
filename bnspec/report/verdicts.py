"""The verdicts: results documents -> per-claim status per run, the landing page (REPORT.md's first
screen: one sentence, the verdict matrix, what surprised us), the claim details and EVIDENCE.md.
No TensorFlow.

Per claim and run, the cases (test parametrisations) fold into one status:
  holds / refuted / mixed   every measured case as expected (expectations recomputed from the
                            current bnspec/claims/ when the report is made)
  unexpected                a case's verdict differs from its expectation, or an expected refutation
                            was not confirmed by the mechanism its rule names
  error                     a case broke before concluding (crash, NaN/inf measurement, no power)
  unmeasured                no case executed (all skipped, with the reasons, or none collected)
and two marks: *partial* (some cases not measured, e.g. the GPU ones) and *stale* (measured by code
whose fingerprint differs from the current measuring code, bnspec.provenance).
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter, defaultdict

from bnspec import claims, results

HOLDS, REFUTED, MIXED = "holds", "refuted", "mixed"
UNEXPECTED, ERROR, UNMEASURED = "unexpected", "error", "unmeasured"
SYMBOL = {HOLDS: "✓", REFUTED: "✗", MIXED: "◐", UNEXPECTED: "‼", ERROR: "⚠", UNMEASURED: "·"}
PARTIAL_MARK, STALE_MARK = "°", "†"
LEGEND = (f"{SYMBOL[HOLDS]} holds · {SYMBOL[REFUTED]} refuted, as expected · {SYMBOL[MIXED]} holds for some cases, "
          f"refuted for others, as expected · {SYMBOL[UNEXPECTED]} **unexpected** verdict · {SYMBOL[ERROR]} error "
          f"(crash or non-finite measurement) · {SYMBOL[UNMEASURED]} unmeasured · {PARTIAL_MARK} some cases not "
          f"measured (e.g. GPU) · {STALE_MARK} measured by older code (stale)")
WRAP = 200  # markdown lines are wrapped here (readable diffs; GitHub joins them)


def case_id(test: dict) -> str:
    nodeid = test["nodeid"]
    return nodeid[nodeid.index("[") + 1 : -1] if "[" in nodeid else "-"


def rule_now(test: dict, doc: dict):
    """The case's expectation (an Expect) under the current registry (None if the claim no longer exists)."""
    claim = claims.BY_ID.get(test.get("claim"))
    if claim is None:
        return None
    env = doc["runs"][test["run"]]["environment"] if "run" in test else {}
    try:
        return claim.expectation(doc["flavour"], env.get("keras"), test.get("params", {}),
                                 doc.get("backend") or "tensorflow")
    except LookupError:
        return None


def expected_now(test: dict, doc: dict) -> str | None:
    """The case's expected verdict under the current registry (None if the claim no longer exists)."""
    rule = rule_now(test, doc)
    return rule.verdict if rule else None


def mechanism_confirmed(test: dict, mechanism: str) -> bool:
    """Whether the case's test confirmed `mechanism` (the one the *current* expectation names, so a rule
    added after the run is checked against what the run recorded, not against the run's own flag)."""
    if "mechanisms" not in test:  # results recorded before the mechanisms were stored
        return not test.get("mechanism_failed")
    return bool(test["mechanisms"].get(mechanism, {}).get("confirmed"))


def case_status(test: dict, doc: dict | None) -> str:
    """One case: holds | refuted (as expected) | unexpected | error | unmeasured."""
    if test["outcome"] == "skipped":
        return UNMEASURED
    observed = test.get("observed")
    if observed is None:
        return ERROR
    if doc is None:  # the run's own view (terminal summary)
        return UNEXPECTED if observed != test.get("expected") or test.get("mechanism_failed") else observed
    rule = rule_now(test, doc)
    if rule is None or observed != rule.verdict:
        return UNEXPECTED
    if observed == REFUTED and not mechanism_confirmed(test, rule.mechanism):
        return UNEXPECTED
    return observed


def fold(statuses: list[str]) -> str:
    measured = [s for s in statuses if s != UNMEASURED]
    if not measured:
        return UNMEASURED
    for worst in (UNEXPECTED, ERROR):
        if worst in measured:
            return worst
    kinds = set(measured)
    return kinds.pop() if len(kinds) == 1 else MIXED


def summarise(doc: dict, fingerprint: str | None = None) -> dict[str, dict]:
    """claim id -> {status, partial, stale, cases: [(case, status, test)], skip_reasons} for one run key."""
    by_claim = defaultdict(list)
    for t in doc["tests"]:
        if t.get("claim"):
            by_claim[t["claim"]].append(t)
    out = {}
    for c in claims.CLAIMS:
        tests = by_claim.get(c.id, [])
        cases = [(case_id(t), case_status(t, doc), t) for t in tests]
        statuses = [s for _, s, _ in cases]
        measured = [t for _, s, t in cases if s != UNMEASURED]
        stale = bool(fingerprint) and any(doc["runs"][t["run"]]["code"]["fingerprint"] != fingerprint for t in measured)
        reasons = sorted({t.get("message") or "skipped" for _, s, t in cases if s == UNMEASURED})
        out[c.id] = {"status": fold(statuses), "partial": bool(measured) and len(measured) < len(tests),
                     "stale": stale, "cases": cases, "skip_reasons": reasons or (["no test collected"] if not tests else [])}
    return out


def run_summary(tests: list[dict]) -> tuple[Counter, list[tuple[str, str]]]:
    """For the terminal: counts of claim statuses over the tests of one run (expectations as the run
    checked them), and the unmeasured claims with a reason."""
    by_claim = defaultdict(list)
    for t in tests:
        by_claim[t["claim"]].append(case_status(t, None))
    counts = Counter(fold(s) for s in by_claim.values())
    unmeasured = []
    for cid, sts in sorted(by_claim.items()):
        if fold(sts) == UNMEASURED:
            msg = next((t.get("message") for t in tests if t["claim"] == cid and t.get("message")), "skipped")
            unmeasured.append((cid, msg))
    return counts, unmeasured


def summary_sentence(counts: Counter, runs: int = 1) -> str:
    total = sum(counts.values())
    parts = [f"{counts[HOLDS]} hold", f"{counts[REFUTED]} refuted as expected", f"{counts[MIXED]} mixed as expected",
             f"{counts[UNEXPECTED]} unexpected", f"{counts[ERROR]} error{'s' * (counts[ERROR] != 1)}",
             f"{counts[UNMEASURED]} unmeasured"]
    what = f"{total} claim verdicts ({total // runs} claims x {runs} runs)" if runs > 1 else f"{total} claims"
    return f"{what}: " + ", ".join(parts)


# --------------------------------------------------------------------------- markdown helpers


def esc(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def anchor(cid: str) -> str:
    return cid.lower()


def wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WRAP, initial_indent=indent, subsequent_indent=" " * len(indent) if indent else "",
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


def run_label(doc: dict) -> str:
    return results.key(doc)


def cell(s: dict) -> str:
    return SYMBOL[s["status"]] + (PARTIAL_MARK if s["partial"] else "") + (STALE_MARK if s["stale"] else "")


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict) and set(v) == {"value", "bound", "ratio"}:
        r = v["ratio"]
        return f"{fmt(v['value'])}≤{fmt(v['bound'])}" + (f" ({fmt(r)}x)" if r != 0.0 else "")
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)


# --------------------------------------------------------------------------- REPORT.md


def landing(docs: list[dict], sums: dict[str, dict], fingerprint: str) -> list[str]:
    keys = [run_label(d) for d in docs]
    counts = Counter(sums[k][c.id]["status"] for k in keys for c in claims.CLAIMS)
    stale_runs = sorted({k for k in keys for s in sums[k].values() if s["stale"]})
    lines = ["# bnspec: Batch Normalization, claim by claim", ""]
    lines += wrap(f"**{summary_sentence(counts, len(keys))}.** " + "Every verdict below is measured by the test suite "
                  "(`bnspec run`); expectations come from `bnspec/claims/`, numbers from [EVIDENCE.md](EVIDENCE.md).")
    lines.append("")
    runs = []
    for d in docs:
        env = _latest_run(d)["environment"]
        runs.append(f"`{run_label(d)}` = Keras {env.get('keras')} ({d['flavour']}, {d.get('backend') or 'tensorflow'} "
                    f"backend, TensorFlow {env.get('tensorflow')})")
    lines += wrap("Runs: " + "; ".join(runs) + ". " + (
        f"Stale results (measured by older code than `{fingerprint}`): {', '.join(stale_runs)}, marked {STALE_MARK}."
        if stale_runs else f"All results measured by the current code (`{fingerprint}`)."))
    lines += ["", "| claim | title | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for c in claims.CLAIMS:
        lines.append(f"| [{c.id}](#{anchor(c.id)}) | {esc(c.title)} | " + " | ".join(cell(sums[k][c.id]) for k in keys) + " |")
    lines += [""] + wrap(LEGEND + ". [Verdict matrix as an image](verdict_matrix.png).") + [""]
    return lines


def _latest_run(doc: dict) -> dict:
    return doc["runs"][sorted(doc["runs"])[-1]]


def surprises(docs: list[dict], sums: dict[str, dict]) -> list[str]:
    """Claims refuted somewhere or whose verdict differs between runs, then anything unexpected."""
    keys = [run_label(d) for d in docs]
    out = []
    field_first = sorted(claims.CLAIMS, key=lambda c: not c.topic.startswith("field"))  # users' traps lead
    for c in field_first:
        st = {k: sums[k][c.id]["status"] for k in keys if sums[k][c.id]["status"] != UNMEASURED}
        if not st or set(st.values()) == {HOLDS}:
            continue
        differs = len(set(st.values())) > 1
        out += wrap(f"- **[{c.id}](#{anchor(c.id)})** {esc(c.title)}" + (" — *differs between runs*" if differs else "")
                    + f": {', '.join(f'{k} {SYMBOL[s]}' for k, s in st.items())}."
                    + (f" Source: {esc(c.source)}." if c.topic.startswith("field") else ""))
        if c.advice:
            out += wrap(f"What to do: {clip(c.advice, 200)}", "  ")
    if not out:
        return []
    return ["## What surprised us", ""] + wrap(
        "Claims that are false on at least one run, or whose verdict changes between runs: first the traps users "
        "report (issues, guides), then the documentation's, the paper's and the study notebook's claims (its "
        "conclusions on TF 2.1 are not always what today's Keras does).") + [""] + out + [""]


def not_measured(docs: list[dict], sums: dict[str, dict]) -> list[str]:
    keys = [run_label(d) for d in docs]
    rows = []
    for c in claims.CLAIMS:
        where = [k for k in keys if sums[k][c.id]["status"] == UNMEASURED]
        if where:
            reason = sums[where[0]][c.id]["skip_reasons"][0] if sums[where[0]][c.id]["skip_reasons"] else "skipped"
            rows += wrap(f"- [{c.id}](#{anchor(c.id)}) on {', '.join(where)}: {esc(clip(reason, 150))}")
    return (["## Unmeasured", "", "Claims no case of a run measured, with the first reason (all reasons: "
             "[EVIDENCE.md](EVIDENCE.md)).", ""] + rows + [""]) if rows else []


def clip(text, n: int) -> str:
    text = str(text or "")
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def problems(docs: list[dict], sums: dict[str, dict]) -> list[str]:
    out = []
    for d in docs:
        k = run_label(d)
        for c in claims.CLAIMS:
            for case, status, t in sums[k][c.id]["cases"]:
                if status in (UNEXPECTED, ERROR):
                    out += wrap(f"- {c.id} on {k} [{case}]: {status}: {esc(t.get('message') or t.get('summary'))[:400]}")
    return (["## Unexpected verdicts and errors", ""] + out + [""]) if out else []


def details(docs: list[dict], sums: dict[str, dict]) -> list[str]:
    lines = ["## The claims", "", "Per claim: the statement; the verdicts per run are in the matrix above, per release in "
             "*Across releases*, the source and every case's numbers in [EVIDENCE.md](EVIDENCE.md).", ""]
    by_topic = defaultdict(list)
    for c in claims.CLAIMS:
        by_topic[c.topic].append(c)
    for topic, cs in by_topic.items():
        lines += [f"### {claims.TOPICS[topic]}", "", f"Tests: `tests/claims/test_{topic}.py`.", ""]
        for c in cs:
            lines += [f'<a id="{anchor(c.id)}"></a>']
            # the verdicts per run are the matrix's row, the measured cases are in EVIDENCE.md: here the statement
            lines += wrap(f"**{c.id} — {esc(c.title)}.** {esc(c.statement)} [Source and evidence](EVIDENCE.md#{anchor(c.id)}).")
            lines.append("")
    return lines


def environment(docs: list[dict], fingerprint: str) -> list[str]:
    lines = ["## Runs", "", "| run | Keras | TensorFlow | backend | Python | CPU | workers | finished | seconds | code | selection |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in docs:
        for run_id, r in sorted(d["runs"].items()):
            e, c = r["environment"], r["code"]
            code = f"{c['fingerprint']}" + (f" ({c['commit']}{'+' if c.get('dirty') else ''})" if c.get("commit") else "")
            if c["fingerprint"] != fingerprint:
                code += f" {STALE_MARK} stale"
            sel = "partial: " + esc(" ".join(r["selection"]["args"]))[:80] if r["selection"]["partial"] else "full"
            n = sum(t["run"] == run_id for t in d["tests"])
            lines.append(f"| {run_label(d)} ({n} cases) | {e.get('keras')} | {e.get('tensorflow')} | "
                         f"{e.get('backend') or 'tensorflow'} | {e.get('python')} | {esc(e.get('cpu'))} x{e.get('cpu_count')} | "
                         f"{e.get('workers')} | {r['finished']} | {r['seconds']} | {code} | {sel} |")
    return lines + [""]


# --------------------------------------------------------------------------- EVIDENCE.md


def evidence_page(docs: list[dict], sums: dict[str, dict]) -> str:
    lines = ["# bnspec evidence: every measured case", "",
             "Per claim and run: each test case, its status and its numbers. A comparison reads "
             "`name=value≤bound (ratio x)` for the element nearest to (or furthest past) its bound: "
             "ratio ≤ 1 is within. Back to [the report](REPORT.md).", ""]
    for c in claims.CLAIMS:
        lines += [f'<a id="{anchor(c.id)}"></a>', "", f"## {c.id} — {esc(c.title)}", "",
                  f"{esc(c.statement)} *Source: {esc(c.source)}.*" + (f" Reading the evidence: {esc(c.note)}" if c.note else ""),
                  ""]
        for d in docs:
            k = run_label(d)
            rows = sums[k][c.id]["cases"]
            if not rows:
                continue
            lines += [f"{k}:", "", "|case|status|evidence|", "|-|-|-|"]
            for case, status, t in rows:
                ev = t.get("evidence") or {}
                text = ", ".join(f"{n}={fmt(v)}" for n, v in sorted(ev.items()))
                mech = t.get("mechanisms") or {}
                if mech:
                    text += ("; " if text else "") + ", ".join(
                        f"mechanism {n}: {'confirmed' if m['confirmed'] else 'not confirmed'}" for n, m in sorted(mech.items()))
                if status in (UNMEASURED, ERROR, UNEXPECTED) and t.get("message"):
                    text = (text + "; " if text else "") + t["message"]
                lines.append(f"|{esc(case)}|{SYMBOL[status]} {status}|{esc(text)[:1500]}|")
            lines.append("")
    return "\n".join(lines) + "\n"
