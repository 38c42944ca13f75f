"""Human output of an audit: a table of findings, then one detail block per finding (or per group of
findings of the same kind), then what was not checked. No Keras; no import of the audit's other modules:
it formats the findings, context and notes it is given (`Findings.table()` calls it)."""

from __future__ import annotations

import textwrap

WIDTH = 100


def _cut(text: str, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _groups(findings: list, max_group: int):
    """Findings of one (id, check, severity) beyond `max_group` layers are shown as one row."""
    by_key: dict = {}
    for f in findings:
        by_key.setdefault((f.id, f.check, f.severity), []).append(f)
    rows = []
    for f in findings:
        group = by_key[(f.id, f.check, f.severity)]
        if len(group) > max_group:
            if group[0] is f:
                rows.append(group)
        else:
            rows.append([f])
    return rows


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _wrap(label: str, text: str) -> list[str]:
    return textwrap.wrap(f"{label}{text}", WIDTH, initial_indent="    ", subsequent_indent="      ")


def table(findings: list, context: dict, notes: list, severities: tuple, max_group: int = 4) -> str:
    """The findings (records with id, check, severity, layer, title, claim, verdict, verdict_detail, evidence,
    confirmed, fix), under a head made of `context`, followed by the `notes` (what was not checked);
    `severities` in rising order."""
    ctx = context
    head = f"bnspec audit: {ctx.get('model', '?')}"
    where = f"{ctx.get('flavour')} {ctx.get('keras') or '(version unknown)'}, {ctx.get('backend')} backend"
    if ctx.get("verdicts_for") and ctx.get("verdicts_for") != "installed":
        where += f" (verdicts for the Keras named by the {ctx['verdicts_for']})"
    mode = ctx.get("mode", "static")
    if ctx.get("data"):
        mode += f" on {ctx['data']}"
    lines = [head, f"  {where}; {mode}; {ctx.get('bn_layers', '?')} BN layers in {ctx.get('layers', '?')} layers"]
    rows = _groups(findings, max_group)
    if rows:
        lines.append("")
        lines.append(f"{'#':>2}  {'SEVERITY':8} {'CLAIM':5}  {'LAYER':34} {'FINDING':40}  VERDICT HERE")
        for i, group in enumerate(rows, 1):
            f = group[0]
            layer = f.layer if len(group) == 1 else f"{len(group)} layers ({group[0].layer.split('/')[-1]}, …)"
            lines.append(f"{i:>2}  {f.severity:8} {f.id:5}  {_cut(layer, 34):34} {_cut(f.title, 40):40}  {f.verdict}")
        lines.append("")
        for i, group in enumerate(rows, 1):
            f = group[0]
            lines.append(f"{i:>2}. [{f.severity}] {f.id} {f.layer if len(group) == 1 else f.check}: {f.title}")
            if len(group) > 1:
                lines += _wrap("layers: ", ", ".join(g.layer for g in group))
            if f.claim:
                lines += _wrap("claim: ", f.claim)
            lines += _wrap("verdict: ", f.verdict_detail or f.verdict)
            shown = {k: v for k, v in f.evidence.items() if k != "measured"}  # measured: in `confirmed`, full in JSON
            if shown:
                lines += _wrap("evidence: ", ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
            for c in f.confirmed:
                lines += _wrap("measured: ", _fmt(c) if not isinstance(c, str) else c)
            if f.fix:
                lines += _wrap("fix: ", f.fix)
    counts = {s: sum(f.severity == s for f in findings) for s in reversed(severities)}
    lines.append("")
    lines.append("result: " + (", ".join(f"{n} {s}" for s, n in counts.items()) if findings else "no findings"))
    for note in notes:
        lines += textwrap.wrap(f"not checked: {note}", WIDTH, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)
