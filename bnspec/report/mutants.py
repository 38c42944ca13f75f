"""The mutation harness' kill matrix, rendered: REPORT.md's one-line section and OUT/MUTANTS.md, from the
results JSON `bnspec mutants` writes (bnspec.harness.mutants; read here, not through the harness). No
TensorFlow.

Schema 1 (before rows carried what measured them) is read and rendered as it always was: one run wrote every
row. From schema 2 each row and the control carry `measured` (environment, measuring code, the mutant's
code); a row measured otherwise than the header says (kept by `bnspec mutants --only` from an earlier run
under another environment or older code, or measured after the code was edited during the run) is marked †,
listed with what measured it, and not counted by the header.

    doc = mutants.load(Path("reports"))            # reports/mutants/results.json, or None
    lines = mutants.render_section(doc)            # lines[0]: the numbers, for REPORT.md
    mutants.write_page(Path("reports/mutants"))    # MUTANTS.md beside results.json
"""

from __future__ import annotations

from pathlib import Path

from bnspec import results
from bnspec.run import Environment
from bnspec.subjects.mutants import BY_NAME

MARK = {"killed": "killed", "gap": "**gap**", "survived": "**survived**", "error": "**error**"}
KEPT = "†"
TITLE = "# Mutation harness: kill matrix"


def read(path: Path) -> dict:
    """A mutant results file (bnspec.results.load_mutants)."""
    return results.load_mutants(path)


def load(out_dir: Path) -> dict | None:
    """OUT_DIR/mutants/results.json (the report's input), or None when there is none."""
    path = Path(out_dir) / "mutants" / "results.json"
    return read(path) if path.is_file() else None


# --------------------------------------------------------------------------- what measured a row


def _identity(m: dict) -> tuple:
    return (Environment.from_dict(m.get("environment") or {}).identity(), (m.get("code") or {}).get("fingerprint"),
            m.get("mutant_code"))


def _header(doc: dict, name: str) -> dict:
    return {"environment": doc.get("environment"), "code": doc.get("code"),
            "mutant_code": (doc.get("mutant_code") or {}).get(name)}


def current(doc: dict, name: str, row: dict) -> bool:
    """Whether `row` (the control's, for name "identity") was measured as the document's header says: same
    Keras, TensorFlow, Python and GPU, same measuring code, same mutant code."""
    if doc.get("schema") == 1:
        return True  # one run wrote every row; nothing else was recorded
    return "measured" in row and _identity(row["measured"]) == _identity(_header(doc, name))


def _measured_by(doc: dict, name: str, row: dict) -> str:
    """What measured a kept row, and how that differs from the header."""
    m = row.get("measured") or {}
    env, now = m.get("environment") or {}, doc.get("environment") or {}
    fp, now_fp = (m.get("code") or {}).get("fingerprint"), (doc.get("code") or {}).get("fingerprint")
    parts = [f"Keras {env.get('keras')}, TensorFlow {env.get('tensorflow')}"
             + (f", Python {env['python']}" if env.get("python") else "")]
    parts.append(f"measuring code {fp}" if fp else "measuring code not recorded")
    differs = [k for k, a, b in (("Keras", env.get("keras"), now.get("keras")),
                                 ("TensorFlow", env.get("tensorflow"), now.get("tensorflow"))) if a != b]
    if Environment.from_dict(env).identity() != Environment.from_dict(now).identity() and not differs:
        differs.append("Python or GPU")
    if fp != now_fp:
        differs.append("measuring code")
    if m.get("mutant_code") != _header(doc, name)["mutant_code"]:
        differs.append("the mutant's code")
    when = f" on {m['finished']}" if m.get("finished") else ""
    return f"{'; '.join(parts)}{when} (differs from this run in: {', '.join(differs) or 'nothing recorded'})"


# --------------------------------------------------------------------------- rendering


def _why(r: dict) -> str:
    """Why a row is not killed, one line."""
    if r.get("error"):
        return r["error"]
    notes, shaky, pending = r.get("notes", {}), r.get("shaky", {}), r.get("pending", [])
    flat = [c for c in r.get("missing", ()) if c not in notes and c not in shaky and c not in pending]
    return "; ".join(
        ([f"{', '.join(flat)} did not flip"] if flat and r["verdict"] != "survived" else [])
        + (["no test case flipped"] if r["verdict"] == "survived" or not r.get("killers") else [])
        + [f"{c} is not in the claim registry yet: no test can kill it" for c in pending]
        + [f"{c} flipped only on test cases that also fail without the mutant ({', '.join(ids)}): a shaky kill, "
           "not counted" for c, ids in shaky.items()]
        + [f"{c} failed only with an exception, not a verdict: {msg}" for c, msg in notes.items()])


def render_section(doc: dict) -> list[str]:
    """Markdown lines: one line with the numbers (this run's rows only), then the kill matrix (rows =
    mutants; the named claims with ✓/✗, then every other claim that caught it), the rows kept from other
    runs, the control, and why each mutant not killed is not."""
    order = {name: i for i, name in enumerate(BY_NAME)}  # the catalogue's order (the JSON's keys are sorted)
    rows = dict(sorted(doc["mutants"].items(), key=lambda item: (order.get(item[0], len(order)), item[0])))
    now = {n for n, r in rows.items() if current(doc, n, r)}
    c = {v: sum(rows[n]["verdict"] == v for n in now) for v in MARK}
    fp = (doc.get("code") or {}).get("fingerprint")
    env = f"Keras {doc.get('keras')}, TensorFlow {doc.get('tensorflow')}" + (f", measuring code {fp}" if fp else "")
    kept = [n for n in rows if n not in now]
    lines = [
        f"**{c['killed']} of {len(now)} mutants killed by the claims that name their mechanism**"
        f" ({c['gap']} gap(s), {c['survived']} survived, {c['error']} error(s); {env}, "
        f"harness {doc.get('seconds', 0) / 60:.1f} min)."
        + (f" {len(kept)} row(s) measured under another environment or code ({KEPT}) are not counted."
           if kept else ""),
        "",
        "Each mutant is Keras' BatchNormalization with one deliberate, realistic deviation (`bnspec mutants`, "
        "catalogue in `bnspec/subjects/mutants/`). ✓: a test case of the named claim flipped; ✗: it did not "
        "(a gap: the claim's test needs sharpening); `*`: caught only by an exception, not a verdict (for a named "
        "claim that is a gap too); `?`: caught only on test cases that also fail without the mutant (for a named "
        "claim that is a gap too).",
        "",
        "| mutant | deviation | where it happens | named claims | also caught by | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        killers = r.get("killers", {})

        def tag(claim):
            k = killers.get(claim)
            if not k:
                return claim
            return claim + ("*" if k["by_exception"] == k["cases"] else "") + \
                ("?" if k["also_failing_on_baseline"] == k["cases"] else "")

        named = ", ".join(f"{tag(cl)} {'✗' if cl in r.get('missing', ()) else '✓'}" for cl in r["named"])
        others = ", ".join(tag(cl) for cl in killers if cl not in r["named"]) or "–"
        mark = MARK[r["verdict"]] + ("" if name in now else f" {KEPT}")
        cell = lambda text: text.replace("|", "\\|")  # noqa: E731  (a pipe would end the cell)
        lines.append(f"| `{name}` | {cell(r['deviation'])} | {cell(r['origin'])} | {named} | {others} | {mark} |")
    if kept:
        lines += ["", f"{KEPT} Not measured as the header says (kept by `bnspec mutants --only` from an earlier run, "
                  "or the measuring code changed while the harness ran):", ""]
        lines += [f"- `{n}`: {_measured_by(doc, n, rows[n])}" for n in kept]
    control = doc.get("control")
    if control and current(doc, "identity", control):
        lines += ["", "Control: the harness' own re-implementation of the layer with no deviation "
                  + ("flips no test case (clean)." if control["verdict"] == "clean" else
                     f"**{control['verdict']}**: it flips {', '.join(control.get('killers', {})) or 'nothing'}; "
                     "the kills above are not to be trusted.")]
    elif control:
        lines += ["", f"Control {KEPT}: not measured as the header says (kept from an earlier run, or the code "
                  f"changed while it ran); it was {control['verdict']} ({_measured_by(doc, 'identity', control)})."]
    gaps = [(name, r) for name, r in rows.items() if r["verdict"] != "killed"]
    if gaps:
        lines += ["", "Not killed by their named claims:", ""]
        lines += [f"- `{name}` ({r['verdict']}{'' if name in now else ', ' + KEPT}): {_why(r)}" for name, r in gaps]
    return lines


section = render_section  # what bnspec.report's REPORT.md takes its line from


def page(doc: dict) -> str:
    """OUT/MUTANTS.md."""
    return TITLE + "\n\n" + "\n".join(render_section(doc)) + "\n"


def write_page(out: Path) -> Path:
    """Render OUT/MUTANTS.md from OUT/results.json (what `bnspec mutants` calls after writing the JSON)."""
    target = Path(out) / "MUTANTS.md"
    target.write_text(page(read(Path(out) / "results.json")))
    return target
