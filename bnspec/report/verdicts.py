"""The claims' pages: REPORT.md's first screen (one sentence, the verdict matrix, what surprised us), the GPU
runs beside their CPU columns, the claim details, the runs and what measured them, and EVIDENCE.md. Reads
typed results (bnspec.results) and the claim status folded by bnspec.measure.status. No TensorFlow.

A cell is a claim's status on one run key (bnspec.measure.status) with its marks: ° partial (some cases not
measured), † stale (measured by older code), ⁱ inherited (a case kept from an earlier run that the latest run
skipped, or measured under another environment than the latest run's: other Keras, backend library, Python
or GPU). The matrix has a column per CPU run key; a GPU run (key ending in -gpu) is not a column but a
comparison with its CPU column, case by case.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass

from bnspec import claims
from bnspec.measure import status as st
from bnspec.measure.status import ClaimStatus
from bnspec.results import Case, Results

SYMBOL = {st.HOLDS: "✓", st.REFUTED: "✗", st.MIXED: "◐", st.UNEXPECTED: "‼", st.ERROR: "⚠", st.UNMEASURED: "·"}
PARTIAL_MARK, STALE_MARK, INHERITED_MARK = "°", "†", "ⁱ"
LEGEND = (f"{SYMBOL[st.HOLDS]} holds · {SYMBOL[st.REFUTED]} refuted, as expected · {SYMBOL[st.MIXED]} holds for some "
          f"cases, refuted for others, as expected · {SYMBOL[st.UNEXPECTED]} **unexpected** verdict · {SYMBOL[st.ERROR]} "
          f"error (crash or non-finite measurement) · {SYMBOL[st.UNMEASURED]} unmeasured · {PARTIAL_MARK} some cases "
          f"not measured (e.g. GPU) · {STALE_MARK} measured by older code (stale) · {INHERITED_MARK} inherited: some "
          "cases were measured by an earlier run in another environment, or kept although the latest run skipped them")
WRAP = 200  # markdown lines are wrapped here (readable diffs; GitHub joins them)
CONTEXT = "context_"  # evidence recorded for the reader but not part of the verdict (its name says so)


@dataclass
class Page:
    """What every part of the claims' pages reads: the results (CPU columns first, then GPU runs), each key's
    claim statuses, and the current measuring code's fingerprint."""

    docs: list[Results]
    sums: dict[str, dict[str, ClaimStatus]]
    fingerprint: str

    @classmethod
    def of(cls, docs: list[Results], fingerprint: str) -> Page:
        return cls(docs, {d.key: st.summarise(d, fingerprint) for d in docs}, fingerprint)

    @property
    def columns(self) -> list[Results]:
        """The matrix's columns: every run key measured on the CPU (or on whatever the machine had)."""
        return [d for d in self.docs if d.device != "gpu"]

    @property
    def gpu(self) -> list[Results]:
        return [d for d in self.docs if d.device == "gpu"]

    def status(self, doc: Results, claim_id: str) -> ClaimStatus:
        return self.sums[doc.key][claim_id]


# --------------------------------------------------------------------------- markdown helpers


def esc(text) -> str:
    """Text for a markdown table cell or line: no pipes, no newlines, no terminal colour codes."""
    return ANSI.sub("", str(text)).replace("|", "\\|").replace("\n", " ")


def anchor(cid: str) -> str:
    return cid.lower()


def claim_link(cid: str) -> str:
    """A claim's statement on CLAIMS.md (REPORT.md keeps to the verdicts and stays under its size limit)."""
    return f"[{cid}](CLAIMS.md#{anchor(cid)})"


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WRAP, initial_indent=indent, subsequent_indent=" " * len(indent) if indent else "",
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


def clip(text, n: int) -> str:
    text = str(text or "")
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def cell(s: ClaimStatus) -> str:
    return (SYMBOL[s.status] + (PARTIAL_MARK if s.partial else "") + (STALE_MARK if s.stale else "")
            + (INHERITED_MARK if s.inherited else ""))


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict) and set(v) == {"value", "bound", "ratio"}:
        r = v["ratio"]
        return f"{fmt(v['value'])}≤{fmt(v['bound'])}" + (f" ({fmt(r)}x)" if r != 0.0 else "")
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)


def day(run) -> str:
    return run.finished[:10] if run else "?"


# --------------------------------------------------------------------------- what measured a key


@dataclass
class Source:
    """The cases of one key measured under one environment identity: the latest run's (current) or another."""

    label: str
    cases: int
    finished: str
    current: bool
    kept: int = 0  # cases kept although the latest run skipped them


def sources(doc: Results) -> list[Source]:
    """Who measured a key's cases: the latest run's environment first, then every other one, with case counts."""
    latest = doc.latest()
    if latest is None:
        return []
    groups: dict[tuple, list[Case]] = defaultdict(list)
    for c in doc.cases:
        if c.measured:
            groups[doc.run_of(c).environment.identity()].append(c)
    out = []
    for ident, cases in groups.items():
        runs = sorted({c.run for c in cases})
        last = doc.runs[runs[-1]]
        out.append(Source(last.environment.label(), len(cases), day(last), ident == latest.environment.identity(),
                          sum(bool(c.kept) for c in cases)))
    return sorted(out, key=lambda s: (not s.current, s.finished))


def provenance_line(doc: Results) -> str:
    """`keras3` = Keras 3.15.1, TensorFlow 2.21.0, Python 3.11.7, CPU (412 cases, 2026-12-04); inherited: ..."""
    parts = []
    for s in sources(doc):
        kept = f", {s.kept} kept although the latest run skipped them" if s.kept else ""
        if s.current:
            parts.append(f"{s.label} ({s.cases} cases, {s.finished}{kept})")
        else:
            parts.append(f"{INHERITED_MARK} inherited from {s.label} ({s.cases} cases, {s.finished}{kept})")
    return f"`{doc.key}` = " + "; ".join(parts or ["no measured case"])


# --------------------------------------------------------------------------- REPORT.md


def landing(page: Page) -> list[str]:
    cols = page.columns
    keys = [d.key for d in cols]
    counts = Counter(page.status(d, c.id).status for d in cols for c in claims.CLAIMS)
    inherited = sum(page.status(d, c.id).inherited for d in cols for c in claims.CLAIMS)
    stale_runs = sorted({d.key for d in page.docs for s in page.sums[d.key].values() if s.stale})
    lines = ["# bnspec: Batch Normalization, claim by claim", ""]
    lines += wrap(f"**{st.summary_sentence(counts, len(keys))}"
                  + (f"; {inherited} of them rest partly on inherited cases ({INHERITED_MARK})" if inherited else "")
                  + ".** Every verdict below is measured by the test suite (`bnspec run`); expectations come from "
                  "`bnspec/claims/`, numbers from [EVIDENCE.md](EVIDENCE.md).")
    lines.append("")
    lines += wrap("Runs: " + "; ".join(provenance_line(d) for d in cols) + ". " + (
        f"Stale results (measured by older code than `{page.fingerprint}`): {', '.join(stale_runs)}, marked {STALE_MARK}."
        if stale_runs else f"All results measured by the current code (`{page.fingerprint}`).")
        + (f" GPU runs: {', '.join(d.key for d in page.gpu)} ([On the GPU](#on-the-gpu))." if page.gpu else ""))
    lines += ["", "| claim | title | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for c in claims.CLAIMS:
        lines.append(f"| {claim_link(c.id)} | {esc(c.title)} | " + " | ".join(cell(page.status(d, c.id)) for d in cols) + " |")
    lines += [""] + wrap(LEGEND + ". [Verdict matrix as an image](verdict_matrix.png).") + [""]
    return lines


def surprises(page: Page) -> list[str]:
    """Claims refuted somewhere or whose verdict differs between runs, then anything unexpected."""
    out = []
    field_first = sorted(claims.CLAIMS, key=lambda c: not c.topic.startswith("field"))  # users' traps lead
    for c in field_first:
        seen = {d.key: page.status(d, c.id).status for d in page.columns if page.status(d, c.id).status != st.UNMEASURED}
        if not seen or set(seen.values()) == {st.HOLDS}:
            continue
        differs = len(set(seen.values())) > 1
        out += wrap(f"- **{claim_link(c.id)}** {esc(c.title)}" + (" — *differs between runs*" if differs else "")
                    + f": {', '.join(f'{k} {SYMBOL[s]}' for k, s in seen.items())}."
                    + (f" Source: {esc(c.source)}." if c.topic.startswith("field") else ""))
        if c.advice:
            out += wrap(f"What to do: {clip(c.advice, 200)}", "  ")
    if not out:
        return []
    return ["## What surprised us", ""] + wrap(
        "Claims that are false on at least one run, or whose verdict changes between runs: first the traps users "
        "report (issues, guides), then the documentation's, the paper's and the study notebook's claims (its "
        "conclusions on TF 2.1 are not always what today's Keras does).") + [""] + out + [""]


def _paired_key(case: Case) -> tuple:
    """A case's identity across devices: its test function and its parameters other than the device."""
    return case.function, tuple(sorted((k, str(v)) for k, v in case.params.items() if k != "device"))


def gpu_section(page: Page) -> list[str]:
    """Each GPU run against the CPU column of the same flavour and backend: the number of paired cases with the
    same verdict first, then only the cases that differ (status, or the evidence's worst ratio crossing 1)."""
    if not page.gpu:
        return []
    by_key = {d.key: d for d in page.docs}
    lines = ["## On the GPU", ""]
    for g in page.gpu:
        cpu = by_key.get(g.key.removesuffix("-gpu"))
        latest = g.latest()
        stale = any(r.fingerprint != page.fingerprint for r in g.runs.values())
        head = (f"**`{g.key}`**: {latest.environment.label(device=g.device) if latest else '?'}"
                + f"; measured {day(latest)} by code `{latest.fingerprint if latest else '?'}`"
                + (f" {STALE_MARK} stale (older than `{page.fingerprint}`)" if stale else "") + ".")
        gcases = [c for c in g.claim_cases() if c.measured]
        if cpu is None:
            lines += wrap(head + f" No CPU column {g.key.removesuffix('-gpu')} to compare with: {len(gcases)} measured cases.") + [""]
            continue
        cpu_cases = {_paired_key(c): c for c in cpu.claim_cases() if c.measured}
        same, differ, unpaired = 0, [], 0
        for c in gcases:
            other = cpu_cases.get(_paired_key(c))
            if other is None:
                unpaired += 1
                continue
            a, b = st.case_status(c, g), st.case_status(other, cpu)
            if a == b:
                same += 1
            else:
                differ.append((c, a, b))
        counts = Counter(st.case_status(c, g) for c in gcases)
        lines += wrap(head + f" **Same verdict as the CPU on {same} of {same + len(differ)} paired cases**"
                      + (f"; {unpaired} cases have no CPU counterpart" if unpaired else "")
                      + f"; on the GPU: {counts[st.HOLDS]} hold, {counts[st.REFUTED]} refuted as expected, "
                      f"{counts[st.UNEXPECTED]} unexpected, {counts[st.ERROR]} errors.") + [""]
        groups: dict[tuple, list[str]] = defaultdict(list)  # the same change and message: one line
        for c, a, b in differ:
            groups[(c.claim, a, b, clip(" ".join(esc(c.message or c.summary).split()), 160))].append(c.case_id)
        for (cid, a, b, msg), ids in groups.items():
            lines += wrap(f"- {cid} ({len(ids)} case{'s' * (len(ids) != 1)}: {', '.join(ids[:4])}{', …' if len(ids) > 4 else ''}): "
                          f"GPU {SYMBOL[a]} {a}, CPU {SYMBOL[b]} {b}: {msg}")
        if differ:
            lines.append("")
    return lines


def not_measured(page: Page) -> list[str]:
    rows = []
    for c in claims.CLAIMS:
        where = [d.key for d in page.columns if page.status(d, c.id).status == st.UNMEASURED]
        if where:
            reasons = page.sums[where[0]][c.id].skip_reasons
            rows += wrap(f"- {claim_link(c.id)} on {', '.join(where)}: {esc(clip(reasons[0] if reasons else 'skipped', 150))}")
    return (["## Unmeasured", "", "Claims no case of a run measured, with the first reason (all reasons: "
             "[EVIDENCE.md](EVIDENCE.md).", ""] + rows + [""]) if rows else []


def problems(page: Page) -> list[str]:
    """Every unexpected verdict and error of the matrix's runs (the GPU runs' are in the GPU section)."""
    out = []
    for d in page.columns:
        for c in claims.CLAIMS:
            for case, status in page.status(d, c.id).cases:
                if status in (st.UNEXPECTED, st.ERROR):
                    out += wrap(f"- {c.id} on {d.key} [{case.case_id}]: {status}: {esc(case.message or case.summary)[:400]}")
    return (["## Unexpected verdicts and errors", ""] + out + [""]) if out else []


def claims_page(page: Page) -> str:
    """CLAIMS.md: every claim's statement, by topic, with its test module and a link to its evidence."""
    lines = ["# bnspec claims: what each claim states", "",
             f"{len(claims.CLAIMS)} claims in {len(claims.TOPICS)} topics. Per claim: the statement; the verdicts per run are "
             "in [the report](REPORT.md)'s matrix, per release in its *Across releases*, the source and every case's "
             "numbers in [EVIDENCE.md](EVIDENCE.md).", ""]
    by_topic = defaultdict(list)
    for c in claims.CLAIMS:
        by_topic[c.topic].append(c)
    for topic, cs in by_topic.items():
        lines += [f"## {claims.TOPICS[topic]}", "", f"Claims: `bnspec/claims/{topic}.py`; tests: `tests/claims/test_{topic}.py`.", ""]
        for c in cs:
            lines += [f'<a id="{anchor(c.id)}"></a>']
            # the verdicts per run are the matrix's row, the measured cases are in EVIDENCE.md: here the statement
            lines += wrap(f"**{c.id} — {esc(c.title)}.** {esc(c.statement)} [Source and evidence](EVIDENCE.md#{anchor(c.id)}).")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def runs_table(page: Page) -> list[str]:
    """Every run that measured a case in the report: its environment, code and selection."""
    lines = ["## Runs", "", "| run | Keras | backend | Python | device | workers | finished | seconds | code | selection |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d in page.docs:
        for run_id, r in sorted(d.runs.items()):
            e, c = r.environment, r.code
            code = f"{c.get('fingerprint')}" + (f" ({c['commit']}{'+' if c.get('dirty') else ''})" if c.get("commit") else "")
            if r.fingerprint != page.fingerprint:
                code += f" {STALE_MARK} stale"
            sel = "partial: " + esc(" ".join(r.selection.get("args", [])))[:80] if r.partial else "full"
            n = sum(t.run == run_id for t in d.cases)
            device = f"{esc(e.cpu)} x{e.cpu_count}" + (f"; GPU {esc(e.gpu)}" if e.gpu else "")
            lines.append(f"| {d.key} ({n} cases) | {e.keras} | {e.backend} {e.backend_version} | {e.python} | {device} | "
                         f"{e.workers} | {r.finished} | {r.seconds} | {code} | {sel} |")
    return lines + [""]


# --------------------------------------------------------------------------- EVIDENCE.md


def evidence_page(page: Page) -> str:
    lines = ["# bnspec evidence: every measured case", "",
             "Per claim and run: each test case, its status and its numbers. A comparison reads "
             "`name=value≤bound (ratio x)` for the element nearest to (or furthest past) its bound: "
             f"ratio ≤ 1 is within. A case marked {INHERITED_MARK} was not measured by its run key's latest run "
             "(the environment that measured it is named). Back to [the report](REPORT.md).", ""]
    for c in claims.CLAIMS:
        lines += [f'<a id="{anchor(c.id)}"></a>', "", f"## {c.id} — {esc(c.title)}", "",
                  f"{esc(c.statement)} *Source: {esc(c.source)}.*" + (f" Reading the evidence: {esc(c.note)}" if c.note else ""),
                  ""]
        for d in page.docs:
            rows = page.status(d, c.id).cases
            if not rows:
                continue
            lines += [f"{d.key}:", "", "|case|status|evidence|", "|-|-|-|"]
            for case, status in rows:
                text = ", ".join(f"{n}={fmt(v)}" + (" (context, not checked)" if n.startswith(CONTEXT) else "")
                                 for n, v in sorted(case.evidence.items()))
                if case.mechanisms:
                    text += ("; " if text else "") + ", ".join(
                        f"mechanism {n}: {'confirmed' if m['confirmed'] else 'not confirmed'}" for n, m in sorted(case.mechanisms.items()))
                if status in (st.UNMEASURED, st.ERROR, st.UNEXPECTED) and case.message:
                    text = (text + "; " if text else "") + case.message
                mark = ""
                if d.inherited(case):
                    run = d.run_of(case)
                    mark = f" {INHERITED_MARK}"
                    text = (f"measured on {run.environment.label()}, {day(run)}"
                            + (f"; skipped by the latest run: {case.kept['reason']}" if case.kept else "")
                            + ("; " + text if text else ""))
                lines.append(f"|{esc(case.case_id)}|{SYMBOL[status]} {status}{mark}|{esc(text)[:1500]}|")
            lines.append("")
    return "\n".join(lines) + "\n"
