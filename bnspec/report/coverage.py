"""reports/COVERAGE.md: which bnspec claim measures each assertion of the anchors' BatchNormalization tests
(Keras 3.15.1's batch_normalization_test.py, PyTorch's BN tests, ONNX's BN node tests), or why none applies.
No TensorFlow: the table is data (bnspec.claims._coverage), the claim titles come from the registry.

    from bnspec.report import coverage
    text = coverage.render()        # the page; counts() gives the numbers it states first
"""

from __future__ import annotations

from bnspec import claims
from bnspec.claims import _coverage as data

TITLE = "# Coverage: the anchors' BatchNormalization tests, assertion by assertion"


def counts(rows=data.ROWS) -> dict:
    """{'total', 'covered', 'not_applicable', 'blank'} over the table's rows (one row = one assertion)."""
    covered = sum(1 for r in rows if r.claims)
    na = sum(1 for r in rows if not r.claims and r.na)
    return {"total": len(rows), "covered": covered, "not_applicable": na, "blank": len(rows) - covered - na}


def headline(rows=data.ROWS) -> str:
    c = counts(rows)
    return (f"**{c['covered']} of {c['total']} anchor assertions covered by a claim; "
            f"{c['not_applicable']} not applicable.**")


def _claim(cid: str) -> str:
    c = claims.BY_ID.get(cid)
    if c is not None:
        return f"{cid} ({c.title})"
    return f"{cid} (UNKNOWN CLAIM ID)"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(rows) -> list[str]:
    lines = ["| test | assertion | covered by | note |", "| --- | --- | --- | --- |"]
    for r in rows:
        cover = "; ".join(_claim(c) for c in r.claims) if r.claims else f"not applicable: {r.na}"
        lines.append(f"| {_cell(r.test)} | {_cell(r.assertion)} | {_cell(cover)} | {_cell(r.note)} |")
    return lines


def _per_anchor(anchor) -> str:
    rows = [r for r in data.ROWS if r.anchor == anchor.key]
    c = counts(rows)
    return f"{anchor.name}: {c['covered']} of {c['total']} covered, {c['not_applicable']} not applicable"


def render() -> str:
    lines = [TITLE, "", headline(), "",
             "Per anchor: " + "; ".join(_per_anchor(a) for a in data.ANCHORS) + ".", "",
             "Back to [the report](REPORT.md). A row is one assertion of one anchor test (the same assertion over a "
             "test's parametrisations is one row); *covered by* names the claims that measure the same behaviour on "
             "Keras' layer (the first is the closest; their verdicts, which may be a refutation, are in the report), "
             "or says why no claim applies. The data: `bnspec/claims/_coverage.py`.", ""]
    for anchor in data.ANCHORS:
        rows = [r for r in data.ROWS if r.anchor == anchor.key]
        lines += [f"## {anchor.name}", "", f"Source: {anchor.source}.", "", f"How the rows were chosen: {anchor.selection}.", ""]
        if anchor.key == "keras":
            n_cases = sum(len(v) for v in data.CASES.values())
            lines += [f"{len(data.CASES)} tests, {n_cases} cases:", ""]
            lines += [f"- `{test}` ({len(cases)}): " + "; ".join(cases) for test, cases in data.CASES.items()]
            lines += ["", "Defects in the file and the layer, verified in the v3.15.1 source:", ""]
            lines += [f"- `{test}`: {text}" for test, text in data.DEFECTS]
            lines.append("")
        lines += _table(rows) + [""]
    return "\n".join(lines).rstrip() + "\n"
