"""Results -> reports/REPORT.md (the landing page and the claims), reports/EVIDENCE.md (every case's
numbers), reports/verdict_matrix.png and reports/results.json (every run key's results, merged).
No TensorFlow.

Sections own their inputs: each module below finds and validates its own file under reports/ and
returns markdown lines, or nothing when its input is absent:
  verdicts   the claim results (reports/raw/<key>.json, merged into reports/results.json)
  paper      reports/paper/results.json (bnspec paper)
  bench      reports/benchmarks/history/ (tox -e bench)
  mutants    reports/mutants/results.json (bnspec mutants)

`write` renders and writes; `check` renders from the committed inputs and compares with the
committed pages (CI runs it: a page that is not what the code renders fails).
"""

from __future__ import annotations

from pathlib import Path

from bnspec import paths, provenance, results
from bnspec.report import verdicts as v

MAX_BYTES, MAX_LINE = 60_000, 300  # REPORT.md stays a readable landing page


def merged_docs(raw_dir: Path, out_dir: Path, log=print) -> list[dict]:
    """Every run key's results: reports/results.json, with each key that has a raw file replaced by it
    (raw files accumulate every run of this checkout; results.json is what was committed)."""
    docs = {}
    merged_path = out_dir / "results.json"
    if merged_path.is_file():
        for d in results.load_any(merged_path):
            docs[results.key(d)] = d
    raw = sorted(Path(raw_dir).glob("*.json")) if Path(raw_dir).is_dir() else []
    for f in raw:
        d = results.load(f)
        docs[results.key(d)] = d
    if not docs:
        raise results.ResultsError(f"{raw_dir}: no results files and no {merged_path}; run the tests first (bnspec run)")
    if not raw:
        log(f"bnspec: no results in {raw_dir}; re-rendering from {merged_path}")
    return results.in_order(docs.values())


def _sections(out_dir: Path) -> list[str]:
    from bnspec.report import bench, mutants, paper

    lines = []
    doc = paper.load(out_dir)
    if doc:
        lines += paper.section(doc)
    mut = mutants.load(out_dir)
    if mut:
        lines += mutants.section(mut)
    doc, previous = bench.current(out_dir / "benchmarks" / "history")
    if doc:
        lines += ["<details><summary>Benchmarks: BN throughput against this machine's copy bandwidth "
                  "(TensorFlow, JAX, PyTorch)</summary>", ""]
        lines += bench.render(doc, previous) + ["</details>", ""]
    return lines


def render(docs: list[dict], out_dir: Path, fingerprint: str | None = None) -> tuple[str, str]:
    """(REPORT.md, EVIDENCE.md) for these results; `fingerprint` is the current measuring code's
    (bnspec.provenance), against which results are marked stale."""
    fp = fingerprint or provenance.fingerprint()
    sums = {v.run_label(d): v.summarise(d, fp) for d in docs}
    lines = v.landing(docs, sums, fp)
    lines += v.surprises(docs, sums)
    lines += v.problems(docs, sums)
    lines += v.not_measured(docs, sums)
    lines += v.details(docs, sums)
    lines += _sections(out_dir)
    lines += v.environment(docs, fp)
    return "\n".join(lines).rstrip() + "\n", v.evidence_page(docs, sums)


def _merged(docs: list[dict]) -> dict:
    return {"schema": results.SCHEMA, "results": docs}


def write(raw_dir: Path, out_dir: Path, log=print) -> Path:
    docs = merged_docs(raw_dir, out_dir, log)
    out_dir.mkdir(parents=True, exist_ok=True)
    report, evidence = render(docs, out_dir)
    paths.atomic_write_json(out_dir / "results.json", _merged(docs))
    paths.atomic_write_bytes(out_dir / "EVIDENCE.md", evidence.encode())
    paths.atomic_write_bytes(out_dir / "REPORT.md", report.encode())
    try:
        from bnspec.report import figure

        figure.verdict_matrix(docs, out_dir / "verdict_matrix.png")
    except ImportError as exc:  # matplotlib is a dependency; a broken install still gets the markdown
        log(f"bnspec: no verdict_matrix.png ({exc})")
    _limits(report, log)
    return out_dir / "REPORT.md"


def _limits(report: str, log) -> None:
    size = len(report.encode())
    longest = max(len(line) for line in report.splitlines())
    if size > MAX_BYTES or longest > MAX_LINE:
        log(f"bnspec: warning: REPORT.md is {size} bytes (limit {MAX_BYTES}), longest line {longest} (limit {MAX_LINE})")


def check(out_dir: Path) -> list[str]:
    """Differences between the committed pages and what this code renders from the committed results
    (nothing is written). Empty when they agree."""
    merged = out_dir / "results.json"
    docs = results.in_order(results.load_any(merged))
    report, evidence = render(docs, out_dir)
    problems = []
    for name, text in (("REPORT.md", report), ("EVIDENCE.md", evidence)):
        path = out_dir / name
        have = path.read_text() if path.is_file() else None
        if have != text:
            if have is None:
                problems.append(f"{path} is missing")
                continue
            a, b = have.splitlines(), text.splitlines()
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            problems.append(f"{path} differs from the rendering of {merged} (first at line {first + 1}: "
                            f"committed {a[first][:120] if first < len(a) else '<end>'!r}, rendered "
                            f"{b[first][:120] if first < len(b) else '<end>'!r}); run `bnspec report` and commit")
    if len(report.encode()) > MAX_BYTES:
        problems.append(f"REPORT.md is {len(report.encode())} bytes, over the {MAX_BYTES}-byte limit")
    long_lines = [i + 1 for i, line in enumerate(report.splitlines()) if len(line) > MAX_LINE]
    if long_lines:
        problems.append(f"REPORT.md lines over {MAX_LINE} characters: {long_lines[:10]}")
    return problems

