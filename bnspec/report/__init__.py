"""Results -> reports/REPORT.md (the landing page and the claims), reports/EVIDENCE.md (every case's
numbers), reports/verdict_matrix.png and reports/results.json (every run key's results, merged).
No TensorFlow.

Sections own their inputs: each module below finds and validates its own file under reports/ and
returns markdown lines, or nothing when its input is absent:
  verdicts   the claim results (reports/raw/<key>.json, merged into reports/results.json)
  paper      reports/paper/results.json (bnspec paper)
  bench      reports/benchmarks/history/ (tox -e bench)
  mutants    reports/mutants/results.json (bnspec mutants)
  timeline   reports/history/<job>.json (bnspec history): the verdict of every claim on every release
  seeds      reports/seeds/results.json (bnspec seeds): the trained-model claims on several trainings

`write` renders and writes; `check` renders from the committed inputs and compares with the
committed pages (CI runs it: a page that is not what the code renders fails).
"""

from __future__ import annotations

from pathlib import Path

from bnspec import BnspecError, paths, provenance, results
from bnspec.report import verdicts as v
from bnspec.results import Results

MAX_BYTES, MAX_LINE = 60_000, 300  # REPORT.md stays a readable landing page


def merged_docs(raw_dir: Path, out_dir: Path, log=print) -> list[Results]:
    """Every run key's results: reports/results.json, with each key that has a raw file replaced by it
    (raw files accumulate every run of this checkout; results.json is what was committed). A file that names
    a mutant (the mutation harness' results) is refused: a deliberately wrong layer's results are never
    merged into the report."""
    docs = {}
    merged_path = out_dir / "results.json"
    raw = sorted(Path(raw_dir).glob("*.json")) if Path(raw_dir).is_dir() else []
    if merged_path.is_file():
        try:
            for d in results.load_any(merged_path):
                docs[d.key] = _no_mutant(d, merged_path)
        except results.ResultsError as exc:
            if not raw:
                raise
            log(f"bnspec: ignoring {merged_path} ({exc}); the report is made from {raw_dir} alone")
    for f in raw:
        d = _no_mutant(results.load(f), f)
        docs[d.key] = d
    if not docs:
        raise results.ResultsError(f"{raw_dir}: no results files and no {merged_path}; run the tests first (bnspec run)")
    if not raw:
        log(f"bnspec: no results in {raw_dir}; re-rendering from {merged_path}")
    return results.in_order(docs.values())


def _no_mutant(doc: Results, origin) -> Results:
    if doc.mutant:
        raise BnspecError(f"{origin}: these results were measured with the mutant {doc.mutant!r} (a deliberately "
                          "wrong BN layer, bnspec mutants); they are never merged into the report: move the file away")
    return doc


def _sections(out_dir: Path, fingerprint: str) -> tuple[list[str], dict[str, str]]:
    """REPORT.md's sections after the claims (short: a number, the figure, a link) and the pages they
    link to (name -> text), each from its own input."""
    from bnspec.report import bench, bench_gpu, mutants, paper, seeds

    lines, pages = [], {}
    doc = seeds.load(out_dir)
    if doc:
        lines += seeds.section(doc, fingerprint)
    doc = paper.load(out_dir)
    if doc:
        lines += paper.section(doc, table=False)
    mut = mutants.load(out_dir)
    if mut:
        pages["mutants/MUTANTS.md"] = mutants.page(mut)
        lines += ["## The mutation harness", "", mutants.section(mut)[0], "",
                  "The kill matrix (mutant x the claims that caught it): [mutants/MUTANTS.md](mutants/MUTANTS.md).", ""]
    doc, previous = bench.current(out_dir / "benchmarks" / "history")
    if doc:
        pages["BENCHMARKS.md"] = "\n".join(["# bnspec benchmarks: BN throughput against this machine's copy bandwidth", "",
                                            "Back to [the report](REPORT.md).", ""] + bench.render(doc, previous)
                                           + (bench_gpu.gpu_section(doc["gpu"]) if "gpu" in doc else [])) + "\n"
        lines += ["## Benchmarks", "", "BN throughput on TensorFlow, JAX and PyTorch against this machine's copy "
                  "bandwidth (`tox -e bench`): [BENCHMARKS.md](BENCHMARKS.md).", ""]
    return lines, pages


def render(docs: list[Results], out_dir: Path, fingerprint: str | None = None) -> dict[str, str]:
    """{page name: text}: REPORT.md, EVIDENCE.md and the pages sections link to, for these results;
    `fingerprint` is the current measuring code's (bnspec.provenance), against which results are marked stale."""
    from bnspec.report import timeline  # "on my version?": right after the surprises

    from bnspec.report import coverage

    page = v.Page.of(docs, fingerprint or provenance.fingerprint())
    lines = v.landing(page)
    lines += [f"Coverage of the anchors' own BN tests (Keras 3.15.1, PyTorch, ONNX): {coverage.headline()} — "
              "[COVERAGE.md](COVERAGE.md).", ""]
    lines += v.surprises(page)
    lines += v.gpu_section(page)
    lines += timeline.section(timeline.load(out_dir), page.fingerprint)
    lines += v.problems(page)
    lines += v.not_measured(page)
    more, pages = _sections(out_dir, page.fingerprint)
    lines += more
    lines += v.runs_table(page)
    return {"REPORT.md": "\n".join(lines).rstrip() + "\n", "CLAIMS.md": v.claims_page(page), "COVERAGE.md": coverage.render(),
            "EVIDENCE.md": v.evidence_page(page), **pages}


def write(raw_dir: Path, out_dir: Path, log=print) -> Path:
    docs = merged_docs(raw_dir, out_dir, log)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = render(docs, out_dir)
    paths.atomic_write_json(out_dir / "results.json", results.merged_document(docs))
    for name, text in pages.items():
        paths.atomic_write_bytes(out_dir / name, text.encode())
    report = pages["REPORT.md"]
    try:
        from bnspec.report import figure

        from bnspec.report import timeline

        figure.verdict_matrix(v.Page.of(docs, provenance.fingerprint()), out_dir / "verdict_matrix.png")
        timeline.figure(timeline.load(out_dir), out_dir / "history_timeline.png", provenance.fingerprint())
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
    pages = render(docs, out_dir)
    report = pages["REPORT.md"]
    problems = []
    for name, text in pages.items():
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

