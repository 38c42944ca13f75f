"""bnspec.report and bnspec.results from small hand-written results files: statuses, merging runs
per case, stale, inherited and unmeasured marks, the GPU runs beside their CPU columns, the landing page
against a golden file, and --check."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bnspec import BnspecError, claims, report, results
from bnspec.claims import HOLDS, REFUTED, Claim, Expect
from bnspec.measure import status as v
from bnspec.report import verdicts as rv

GOLDEN = Path(__file__).parent / "golden"


def _run(fingerprint="f00d", partial=False, keras="3.15.1", finished="2026-11-25T10:00:00", backend="tensorflow",
         gpu=None, **versions):
    return {"finished": finished, "seconds": 12.0,
            "environment": {"keras": keras, "tensorflow": "2.21.0", "python": "3.11.7", "cpu": "x", "cpu_count": 2,
                            "workers": "2", "backend": backend, **({"gpu": gpu, "driver": "580.1", "cuda": "13.0"} if gpu else {}),
                            **versions},
            "code": {"fingerprint": fingerprint, "commit": "c0ffee", "dirty": False},
            "selection": {"args": ["-k", "K01"] if partial else [], "partial": partial}}


def _t(nodeid, claim, outcome, observed, run="r1", params=None, summary="s", **ev):
    return {"nodeid": nodeid, "claim": claim, "outcome": outcome, "params": params or {}, "expected": observed,
            "observed": observed, "summary": summary, "evidence": ev, "message": "skip reason" if outcome == "skipped" else "",
            "run": run}


def _doc(tests, flavour="keras3", runs=None, backend="tensorflow", **extra) -> results.Results:
    return results.Results.from_dict({"schema": results.SCHEMA, "flavour": flavour, "backend": backend,
                                      "runs": runs or {"r1": _run()}, "tests": tests, **extra})


@pytest.fixture
def small_catalogue(monkeypatch):
    """Four claims of two topics, so the golden page does not change whenever a claim is added."""
    cs = (Claim("A01", "always holds", "A statement that holds.", "source A", topic="alpha", advice=""),
          Claim("A02", "refuted on keras3", "A statement refuted on Keras 3.", "source B", topic="alpha",
                expected=(Expect(REFUTED, flavour="keras3", why="because of the mechanism", mechanism="m"),
                          Expect(HOLDS)), advice="do the other thing"),
          Claim("B01", "mixed by case", "A statement that holds for case x only.", "source C", topic="beta",
                expected=(Expect(REFUTED, case="c=y", why="y is different", mechanism="m"), Expect(HOLDS)),
                note="read the numbers this way"),
          Claim("B02", "never measured", "A statement nobody measured.", "source D", topic="beta"))
    monkeypatch.setattr(claims, "CLAIMS", cs)
    monkeypatch.setattr(claims, "BY_ID", {c.id: c for c in cs})
    monkeypatch.setattr(claims, "TOPICS", {"alpha": "Alpha topic", "beta": "Beta topic"})
    from bnspec.report import coverage  # the anchors' table is real data: fixed here so the golden page stays small

    monkeypatch.setattr(coverage, "headline", lambda: "**1 of 2 anchor assertions covered by a claim; 1 not applicable.**")
    monkeypatch.setattr(coverage, "render", lambda: "# coverage\n")
    return cs


def _two_runs():
    keras3 = _doc([
        _t("t.py::a01[1]", "A01", "passed", "holds", err={"value": 1e-7, "bound": 1e-6, "ratio": 0.1}),
        _t("t.py::a02", "A02", "passed", "refuted", summary="moved by 0.5"),
        _t("t.py::b01[x]", "B01", "passed", "holds", params={"c": "x"}),
        _t("t.py::b01[y]", "B01", "passed", "refuted", params={"c": "y"}),
        _t("t.py::b01[gpu]", "B01", "skipped", None, params={"c": "gpu"}),
        _t("t.py::b02", "B02", "skipped", None),
    ])
    tfkeras = _doc([
        _t("t.py::a01[1]", "A01", "passed", "holds"),
        _t("t.py::a02", "A02", "passed", "holds"),
        _t("t.py::b01[x]", "B01", "failed", None),  # broke before concluding: an error, not a verdict
    ], flavour="tfkeras", runs={"r1": _run(fingerprint="0ld", keras="2.21.0")})
    return [keras3, tfkeras]


def test_statuses_marks_and_reasons(small_catalogue):
    keras3, tfkeras = _two_runs()
    s = v.summarise(keras3, "f00d")
    assert (s["A01"].status, s["A02"].status, s["B01"].status, s["B02"].status) == \
        (v.HOLDS, v.REFUTED, v.MIXED, v.UNMEASURED)
    assert s["B01"].partial and not s["A01"].partial
    assert s["B02"].skip_reasons == ["skip reason"]
    t = v.summarise(tfkeras, "f00d")
    assert t["A01"].stale and t["B01"].status == v.ERROR and t["B02"].status == v.UNMEASURED
    assert t["B02"].skip_reasons == ["no test collected"]


def test_expectations_are_recomputed_from_the_current_registry(small_catalogue, monkeypatch):
    keras3, _ = _two_runs()
    # the registry changed since the run: A02 is now expected to hold everywhere
    a02 = replace(claims.BY_ID["A02"], expected=(Expect(HOLDS),))
    monkeypatch.setitem(claims.BY_ID, "A02", a02)
    assert v.summarise(keras3, "f00d")["A02"].status == v.UNEXPECTED


def test_a_refutation_without_its_mechanism_is_unexpected(small_catalogue):
    keras3, _ = _two_runs()
    keras3.cases[1].mechanism_failed = True
    assert v.summarise(keras3, "f00d")["A02"].status == v.UNEXPECTED


def test_landing_page_matches_the_golden_file(small_catalogue, tmp_path):
    pages = report.render(_two_runs(), tmp_path, fingerprint="f00d")
    md = pages["REPORT.md"]
    for name, text in pages.items():
        golden = GOLDEN / name
        if not golden.is_file():  # first run writes it; review and commit it
            golden.write_text(text)
        assert text == golden.read_text(), f"{name} differs from {golden} (delete it to regenerate after review)"
    first = md.split("\n## ")[0]  # the first screen: sentence, matrix, legend
    assert first.startswith("# bnspec") and "8 claim verdicts (4 claims x 2 runs): 3 hold, 1 refuted as expected, 1 mixed as expected" in first
    assert "| [B01](CLAIMS.md#b01) | mixed by case | ◐° | ⚠† |" in first
    assert max(len(line) for line in md.splitlines()) <= report.MAX_LINE


def _write_raw(raw: Path, doc: results.Results) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{doc.key}.json").write_text(json.dumps(doc.to_dict()))


def test_write_then_check_then_a_change_is_caught(small_catalogue, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    for d in _two_runs():
        _write_raw(raw, d)
    report.write(raw, out, log=lambda m: None)
    assert (out / "verdict_matrix.png").stat().st_size > 1000
    assert report.check(out) == []
    page = out / "REPORT.md"
    page.write_text(page.read_text().replace("mixed by case", "edited by hand"))
    problems = report.check(out)
    assert len(problems) == 1 and "REPORT.md differs" in problems[0] and "run `bnspec report`" in problems[0]


def test_fresh_clone_rerenders_from_merged_results(small_catalogue, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    for d in _two_runs():
        _write_raw(raw, d)
    first = report.write(raw, out, log=lambda m: None).read_text()
    notes = []
    again = report.write(tmp_path / "no_raw", out, log=notes.append).read_text()
    assert "re-rendering" in notes[0] and first == again


def test_merge_run_per_case():
    old = _doc([_t("t::a", "K01", "passed", "holds"), _t("t::gpu", "K01", "passed", "holds"),
                _t("t::gone", "K02", "passed", "holds")])
    # a CPU-only full run: the GPU case is skipped now, the 'gone' test no longer exists
    new = _doc([_t("t::a", "K01", "passed", "holds", run="r2"), _t("t::gpu", "K01", "skipped", None, run="r2")],
               runs={"r2": _run()})
    merged = results.merge_run(old, new)
    by = {t.nodeid: t for t in merged.cases}
    assert by["t::a"].run == "r2" and by["t::gpu"].run == "r1" and by["t::gpu"].outcome == "passed"
    assert by["t::gpu"].kept == {"skipped_by": "r2", "reason": "skip reason"}  # kept, and marked as such
    assert "t::gone" not in by and set(merged.runs) == {"r1", "r2"}
    # a partial run replaces only what it measured and keeps the rest
    part = _doc([_t("t::a", "K01", "passed", "refuted", run="r3")], runs={"r3": _run(partial=True)})
    merged2 = results.merge_run(old, part)
    by2 = {t.nodeid: t for t in merged2.cases}
    assert by2["t::a"].observed == "refuted" and "t::gone" in by2 and not by2["t::gone"].kept
    # a case measured again after being kept is the new run's own again
    again = results.merge_run(merged, _doc([_t("t::gpu", "K01", "passed", "holds", run="r5")], runs={"r5": _run(partial=True)}))
    assert {t.nodeid: t for t in again.cases}["t::gpu"].kept is None


@pytest.mark.parametrize("content, message", [
    ('{"schema": 3, "flavour": "k", "runs": {}, "tests": [', "unreadable results JSON"),
    ('{"schema": 1, "flavour": "k", "environment": {}, "tests": []}', "schema 1"),
    ('{"schema": 2, "flavour": "k", "runs": {}, "tests": [{"nodeid": "x"}]}', "malformed"),
    ('{"schema": 2, "flavour": "k", "runs": {}, "tests": [{"nodeid": "x", "outcome": "passed", "run": "r9"}]}',
     "names run 'r9'"),
])
def test_bad_results_files_are_reported(tmp_path, content, message):
    (tmp_path / "keras3.json").write_text(content)
    with pytest.raises(results.ResultsError, match=message):
        results.load(tmp_path / "keras3.json")


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(results.ResultsError, match="run the tests first"):
        report.write(tmp_path / "raw", tmp_path / "out")


def test_compare_works_per_run_key_on_merged_files(tmp_path):
    a = _doc([_t("t::a", "K01", "passed", "holds")])
    b = _doc([_t("t::a", "K01", "passed", "refuted")])
    assert results.compare([a], [a]) == []
    assert results.compare([a], [b]) == ["keras3: t::a: concluded/holds vs concluded/refuted"]
    # the same observation judged against other expectations (passed then, failed now) is the same verdict
    assert results.compare([a], [_doc([_t("t::a", "K01", "failed", "holds")])]) == []
    # ... but a refutation for another reason is not
    r1, r2 = (_doc([{**_t("t::a", "K01", "passed", "refuted"), "mechanisms": {m: {"confirmed": True}}}]) for m in "xy")
    assert results.compare([r1], [r2]) == ["keras3: t::a: concluded/refuted (x) vs concluded/refuted (y)"]
    merged = tmp_path / "results.json"
    merged.write_text(json.dumps(results.merged_document([a, _doc([], flavour="tfkeras")])))
    assert [d.key for d in results.load_any(merged)] == ["keras3", "tfkeras"]
    assert results.compare(results.load_any(merged), [a]) == ["tfkeras: only in the first"]


# --------------------------------------------------------------------------- provenance: what measured each cell


def test_a_case_the_latest_run_skipped_is_kept_and_shown_as_inherited(small_catalogue, tmp_path):
    """Issue #21: a case measured earlier and skipped by the latest run (e.g. C25 without a tf_keras
    interpreter) is kept with a mark and the earlier environment named, never shown as the latest run's."""
    old = _doc([_t("t.py::a01[1]", "A01", "passed", "holds"), _t("t.py::a02", "A02", "passed", "refuted")],
               runs={"r1": _run(keras="3.14.1", finished="2026-11-26T10:00:00")})
    new = _doc([_t("t.py::a01[1]", "A01", "passed", "holds", run="r2"),
                {**_t("t.py::a02", "A02", "skipped", None, run="r2"), "message": "needs a tf_keras interpreter"}],
               runs={"r2": _run(finished="2026-12-04T10:00:00")})
    merged = results.merge_run(old, new)
    s = v.summarise(merged, "f00d")
    assert s["A02"].status == v.REFUTED and s["A02"].inherited and not s["A01"].inherited
    pages = report.render([merged], tmp_path, fingerprint="f00d")
    md, ev = pages["REPORT.md"], pages["EVIDENCE.md"]
    assert "| [A02](CLAIMS.md#a02) | refuted on keras3 | ✗ⁱ |" in md and "| [A01](CLAIMS.md#a01) | always holds | ✓ |" in md
    assert "1 of them rest partly on inherited cases (ⁱ)" in md
    # the runs line names both environments, with how many cases each measured
    assert "`keras3` = Keras 3.15.1, TensorFlow 2.21.0, Python 3.11.7, CPU (1 cases, 2026-12-04)" in md
    assert "ⁱ inherited from Keras 3.14.1, TensorFlow 2.21.0, Python 3.11.7, CPU (1 cases, 2026-11-26, 1 kept although" in md
    assert ("measured on Keras 3.14.1, TensorFlow 2.21.0, Python 3.11.7, CPU, 2026-11-26; skipped by the latest run: "
            "needs a tf_keras interpreter") in ev


def test_a_case_from_another_keras_version_is_not_this_run_s(small_catalogue, tmp_path):
    """A partial run on a new Keras merges into a file whose other cases were measured on an older Keras: those
    cases are inherited (another environment), even though no run skipped them."""
    old = _doc([_t("t.py::a01[1]", "A01", "passed", "holds"), _t("t.py::a02", "A02", "passed", "refuted")],
               runs={"r1": _run(keras="3.14.1")})
    new = _doc([_t("t.py::a01[1]", "A01", "passed", "holds", run="r2")], runs={"r2": _run(partial=True)})
    merged = results.merge_run(old, new)
    s = v.summarise(merged, "f00d")
    assert s["A02"].inherited and not s["A01"].inherited
    assert not merged.inherited(merged.cases[0])
    # the same partial run in the same environment inherits nothing
    same = results.merge_run(_doc(old.to_dict()["tests"], runs={"r1": _run()}), new)
    assert not any(st.inherited for st in v.summarise(same, "f00d").values())


def test_a_gpu_run_is_compared_with_its_cpu_column_not_added_to_the_matrix(small_catalogue, tmp_path):
    cpu = _doc([_t("t.py::a01[cpu-1]", "A01", "passed", "holds", params={"device": "cpu", "n": 1}),
                _t("t.py::a02", "A02", "passed", "refuted")], backend="jax", runs={"r1": _run(backend="jax", jax="0.10.2")})
    gpu = _doc([_t("t.py::a01[gpu-1]", "A01", "passed", "holds", params={"device": "gpu", "n": 1}),
                _t("t.py::a02", "A02", "passed", "holds")], backend="jax", device="gpu",
               runs={"r1": _run(backend="jax", gpu="1 x NVIDIA H200", jax="0.11.2", fingerprint="0ld")})
    assert gpu.key == "keras3-jax-gpu"
    md = report.render([cpu, gpu], tmp_path, fingerprint="f00d")["REPORT.md"]
    assert "| claim | title | keras3-jax |" in md  # one column: the GPU run is not a column
    gpu_part = " ".join(md.split("## On the GPU")[1].split("\n## ")[0].split())  # unwrapped
    assert "Keras 3.15.1, jax 0.11.2, Python 3.11.7, GPU 1 x NVIDIA H200 (driver 580.1, CUDA 13.0)" in gpu_part
    assert "† stale" in gpu_part  # measured by older code: never shown as current
    assert "Same verdict as the CPU on 1 of 2 paired cases" in gpu_part
    assert "- A02 (1 case: -): GPU ‼ unexpected, CPU ✗ refuted" in gpu_part


def test_results_of_a_mutant_are_never_merged_into_the_report(small_catalogue, tmp_path):
    raw = tmp_path / "raw"
    _write_raw(raw, _doc([_t("t.py::a01[1]", "A01", "passed", "holds")], mutant="beta-ignored"))
    with pytest.raises(BnspecError, match="measured with the mutant 'beta-ignored'"):
        report.write(raw, tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out" / "REPORT.md").exists()


def test_schema_2_files_are_read_and_upgraded(tmp_path):
    """The committed release history is schema 2: it loads, and its environment keeps the GPU unnamed."""
    doc2 = {"schema": 2, "flavour": "keras3", "backend": "jax", "device": "gpu",
            "runs": {"r1": {**_run(), "environment": {"keras": "3.15.1", "tensorflow": None, "backend": "jax",
                                                       "model_cache": {"entry": "e"}}}},
            "tests": [_t("t::a", "K01", "passed", "holds")]}
    (tmp_path / "f.json").write_text(json.dumps(doc2))
    d = results.load(tmp_path / "f.json")
    assert d.key == "keras3-jax-gpu" and d.runs["r1"].model == {"entry": "e"} and d.runs["r1"].environment.gpu is None
    assert d.to_dict()["schema"] == results.SCHEMA
