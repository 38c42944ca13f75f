"""bnspec.report / bnspec.results from small hand-written results files."""

import json

import pytest

from bnspec import report, results


def _test(nodeid, claim, outcome, expected, observed, summary="s", **ev):
    return {"nodeid": nodeid, "claim": claim, "outcome": outcome, "params": {}, "expected": expected,
            "expected_why": "because", "observed": observed, "summary": summary, "evidence": ev,
            "message": "", "duration": 0.1}


def _doc(tests, flavour="keras3"):
    return {"schema": results.SCHEMA, "flavour": flavour, "seconds": 1.0, "finished": "t",
            "environment": {"keras": "3.0", "tensorflow": "2.0", "python": "3.11", "cpu": "x", "cpu_count": 2,
                            "workers": "2"},
            "model_cache": {"entry": "e", "created": False, "train_seconds": 12.0, "test_accuracy": 0.97},
            "tests": tests}


def test_statuses_are_derived_from_the_cases():
    doc = _doc([
        _test("t.py::a[1]", "K01", "passed", "holds", "holds", "err 1e-7", max_abs_err=1e-7),
        _test("t.py::a[2]", "K01", "passed", "holds", "holds"),
        _test("t.py::b", "N02", "passed", "refuted", "refuted", "moved 0"),
        _test("t.py::c[x]", "N05", "passed", "holds", "holds"),
        _test("t.py::c[y]", "N05", "passed", "refuted", "refuted"),
        _test("t.py::d", "K02", "failed", "holds", "refuted", "off by 1"),
        _test("t.py::e", "K03", "error", None, None),
        _test("t.py::f", "K04", "skipped", None, None),
        _test("u.py::lib", None, "passed", None, None),
    ])
    s = report.summarise(doc)
    assert (s["K01"]["status"], s["K01"]["observed"], s["K01"]["passed"]) == (report.OK, "holds", 2)
    assert (s["N02"]["status"], s["N02"]["observed"]) == (report.OK, "refuted")
    assert s["N05"]["status"] == report.OK and s["N05"]["observed"].startswith("mixed: holds for x")
    assert s["K02"]["status"] == report.UNEXPECTED
    assert s["K03"]["status"] == report.ERROR
    assert s["K04"]["status"] == report.SKIPPED
    assert s["M04"]["status"] == report.NOT_RUN
    md = report.render([doc])
    assert "### K02 on keras3: UNEXPECTED" in md
    assert "max_abs_err=1e-07" in md
    assert "1 passed" in md  # bnspec's own tests


def test_each_flavour_gets_a_column_in_flavour_order(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for flav, obs in (("tfkeras", "holds"), ("keras-nightly", "holds"), ("keras3", "refuted")):
        (raw / f"{flav}.json").write_text(json.dumps(_doc([_test("t::n", "N05", "passed", obs, obs)], flav)))
    target = report.write(raw, tmp_path)
    md = target.read_text()
    header = next(line for line in md.splitlines() if line.startswith("| id") and "keras3 (3.0)" in line)
    assert header.index("keras3 (3.0)") < header.index("tfkeras (3.0)") < header.index("keras-nightly (3.0)")
    merged = json.loads((tmp_path / "results.json").read_text())
    assert merged["flavours"]["tfkeras"]["claims"]["N05"]["observed"] == "holds"


def test_surprises_list_claims_that_differ_or_fail(tmp_path):
    docs = [_doc([_test("t::n", "N05", "passed", "refuted", "refuted", "spread 0.26"),
                  _test("t::k", "K01", "passed", "holds", "holds")], "keras3"),
            _doc([_test("t::n", "N05", "passed", "holds", "holds"),
                  _test("t::k", "K01", "passed", "holds", "holds")], "tfkeras")]
    md = report.render(docs)
    section = md.split("## What surprised us")[1].split("## Claims")[0]
    assert "**N05**" in section and "differs between flavours" in section and "spread 0.26" in section
    assert "**K01**" not in section  # holds everywhere: no surprise


@pytest.mark.parametrize("content, message", [
    ('{"schema": 1, "flavour": "k", "environment": {}, "tests": [', "unreadable results JSON"),
    ('{"schema": 0, "flavour": "k", "environment": {}, "tests": []}', "schema 0"),
    ('{"schema": 1, "flavour": "k", "environment": {}, "tests": [{"nodeid": "x"}]}', "malformed"),
])
def test_bad_results_files_are_reported(tmp_path, content, message):
    (tmp_path / "keras3.json").write_text(content)
    with pytest.raises(results.ResultsError, match=message):
        results.load_dir(tmp_path)


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(results.ResultsError, match="run the tests first"):
        results.load_dir(tmp_path)


def test_report_is_rerendered_from_merged_results_without_raw(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "keras3.json").write_text(json.dumps(_doc([_test("t::k", "K01", "passed", "holds", "holds", "err 1e-7")])))
    first = report.write(raw, tmp_path / "out", log=lambda m: None).read_text()
    empty = tmp_path / "empty_raw"  # a fresh clone: no raw results, but the committed results.json
    notes = []
    again = report.write(empty, tmp_path / "out", log=notes.append).read_text()
    assert notes and "re-rendering" in notes[0]
    strip = lambda md: md.split("## Summary")[1]  # noqa: E731
    assert strip(first) == strip(again)


def test_flavours_not_rerun_are_kept_from_the_merged_results(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    for flav in ("keras3", "tfkeras"):
        (raw / f"{flav}.json").write_text(json.dumps(_doc([_test("t::k", "K01", "passed", "holds", "holds")], flav)))
    report.write(raw, out, log=lambda m: None)
    (raw / "tfkeras.json").unlink()  # the next run tests keras3 only
    notes = []
    md = report.write(raw, out, log=notes.append).read_text()
    assert any("tfkeras not re-run: kept" in n for n in notes)
    assert "tfkeras (earlier run, kept)" in md and "tfkeras (3.0)" in md
