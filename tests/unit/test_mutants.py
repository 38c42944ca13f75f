"""The mutation harness without TensorFlow: its catalogue and families (bnspec.subjects.mutants), the
kill-matrix arithmetic on hand-written results (bnspec.harness.mutants), what `--only` keeps and how the
rendered matrix (bnspec.report.mutants) shows it. The layers themselves: test_mutants_layers.py."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from bnspec import BnspecError, claims, results
from bnspec import results as results_mod
from bnspec.harness import mutants as harness
from bnspec.report import mutants as report
from bnspec.run import Environment
from bnspec.subjects import mutants
from tests.helpers import BLOCK_TF, ROOT, run_python

PROBES = {"train", "inference", "inference_none", "inference_state", "update", "conv_update", "conv", "frozen",
          "mask", "offset", "gradient", "mixed", "mixed_update", "renorm_train", "float64", "config", "weights",
          "save_load"}  # test_mutants_layers.PROBES (which checks this list)
# Named claims other engineers are adding to the registry (K17: renorm's training output, K18: float64 layers
# compute in float64); until they exist the harness runs without them and reports the mutants as gaps.
PENDING = {"K17", "K18"}

# --------------------------------------------------------------------------- the catalogue (no TensorFlow)


def test_catalogue_is_complete_and_names_known_claims():
    assert len(mutants.CATALOGUE) >= 15
    assert len(mutants.BY_NAME) == len(mutants.CATALOGUE), "duplicate mutant names"
    for m in mutants.CATALOGUE:
        assert m.claims, f"{m.name} names no claim"
        assert all(re.fullmatch(r"[A-Z]\d\d", c) for c in m.claims + m.extra), m.name
        unknown = set(m.extra) | set(harness.PANEL)
        unknown -= set(claims.BY_ID)
        assert not unknown, f"{m.name}: unknown claim ids {unknown}"
        not_yet = set(m.claims) - set(claims.BY_ID)
        assert not_yet <= PENDING, f"{m.name}: unknown claim ids {not_yet - PENDING}"
        assert m.origin and m.deviation and m.shows, m.name
        assert set(m.claims) <= set(harness.run_claims(m))
        assert set(m.shows) <= PROBES, f"{m.name}: unknown probe {set(m.shows) - PROBES}"


def test_every_mutant_has_one_class_in_its_family_module():
    """One module per family; each defines exactly the classes of its catalogue entries (no Keras needed)."""
    defined = {}
    for family in mutants.FAMILIES:
        classes = mutants.family_classes(family)
        assert classes, family
        for name, cls in classes.items():
            assert name not in defined, f"{name} defined in {family} and {defined[name]}"
            defined[name] = family
            assert cls.__module__ == f"bnspec.subjects.mutants.{family}"
    assert defined == {m.name: m.family for m in mutants.CATALOGUE}
    assert all(mutants.sources(m.name)[1].name == f"{m.family}.py" for m in mutants.CATALOGUE)


def test_the_new_mutants_name_their_claims():
    m = mutants.BY_NAME
    assert m["mixed-16bit-moving-average"].claims == ("C06",) and m["mixed-16bit-moving-average"].family == "keras_history"
    assert m["renorm-correction-ignored"].claims == ("K17",) and m["renorm-correction-ignored"].family == "handwritten"
    assert m["float64-computes-in-float32"].claims == ("K18",) and m["float64-computes-in-float32"].family == "numerics"


def test_mutant_code_changes_with_its_family_module_only():
    a, b = mutants.code("torch-momentum"), mutants.code("torch-epsilon")
    assert a == b  # same family module and base
    assert a != mutants.code("beta-ignored") and a != mutants.code(mutants.CONTROL)


def test_unknown_mutant_is_one_clear_error():
    with pytest.raises(BnspecError, match="unknown mutant 'nope'; known: torch-momentum"):
        mutants.get("nope")
    with pytest.raises(BnspecError, match="unknown mutant"):
        mutants.install(object(), "nope")  # refused before Keras is touched


def test_unknown_mutant_on_the_command_line(capsys):
    from bnspec import cli

    assert cli.main(["mutants", "--only", "torch-momentum,nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mutant 'nope'" in err


def test_claims_not_in_the_registry_are_left_out_with_a_note():
    """K18 missing from the registry: the run selects everything else, says so in one line, and the mutant
    is a gap (no test can kill it), not a crash; with K18 registered there is no note."""
    m = mutants.BY_NAME["float64-computes-in-float32"]
    registry = set(claims.BY_ID) - {"K18"}
    selected, notes = harness.plan([m], registry)
    assert "K18" not in selected and set(harness.PANEL) <= set(selected)
    assert notes == ["K18 (named by float64-computes-in-float32) is not in the claim registry yet: it is not run, "
                     "and cannot kill"]
    assert harness.plan([m], registry | {"K18"}) == (sorted(harness.run_claims(m)), [])
    row = harness.judge(m, {"killers": {}}, registry)
    assert row["verdict"] == "gap" and row["missing"] == ["K18"] and row["pending"] == ["K18"]
    assert harness.judge(m, {"killers": {}}, registry | {"K18"})["verdict"] == "survived"
    assert "pending" not in harness.judge(m, {"killers": {"K18": ["a"]}}, registry | {"K18"})
    why = [ln for ln in report.render_section(_doc({m.name: row})) if ln.startswith("- `float64")]
    assert why == ["- `float64-computes-in-float32` (gap): no test case flipped; K18 is not in the claim registry "
                   "yet: no test can kill it"]


# --------------------------------------------------------------------------- kill matrix (no TensorFlow)


def _results(*tests, mutant=None) -> results_mod.Results:
    return results_mod.Results.from_dict({
        "schema": 3, "flavour": "keras3", "runs": {"r1": {}}, **({"mutant": mutant} if mutant else {}),
        "tests": [{"nodeid": n, "claim": c, "outcome": o, "expected": "holds", "observed": v, "run": "r1"}
                  for n, c, o, v in tests]})


BASE = _results(("t::k03[a]", "K03", "passed", "holds"), ("t::k03[b]", "K03", "passed", "holds"),
                ("t::x01", "X01", "passed", "holds"), ("t::k01", "K01", "passed", "holds"),
                ("t::broken", "K02", "failed", "refuted"), ("t::k04", "K04", "passed", "holds"))


def test_kills_count_flipped_failures_only():
    mutated = _results(("t::k03[a]", "K03", "failed", "refuted"), ("t::k03[b]", "K03", "passed", "holds"),
                       ("t::x01", "X01", "error", None), ("t::k01", "K01", "passed", "holds"),
                       ("t::broken", "K02", "failed", "refuted"), ("t::k04", "K04", "skipped", None))
    k = harness.kills(BASE, mutated)
    assert k["killers"] == {"K03": ["t::k03[a]"], "X01": ["t::x01"]}
    assert k["crashed"] == ["t::x01"]  # an exception kills, but is marked
    assert k["broken"] == ["t::broken"]  # fails on the baseline too: not a kill
    changed = _results(("t::broken", "K02", "failed", "holds"))  # fails on the baseline, differently
    k = harness.kills(BASE, changed)
    assert k["killers"] == {"K02": ["t::broken"]} and k["shaky"] == ["t::broken"]
    row = harness.judge(mutants.BY_NAME["torch-epsilon"], k)
    assert row["killers"]["K02"] == {"cases": 1, "by_exception": 0, "also_failing_on_baseline": 1}


def test_judge_killed_gap_survived_error():
    m = mutants.BY_NAME["torch-momentum"]  # named K03, X01
    both = harness.judge(m, {"killers": {"K03": ["a"], "X01": ["b"], "K01": ["c"]}})
    assert both["verdict"] == "killed" and both["missing"] == []
    gap = harness.judge(m, {"killers": {"K03": ["a"], "K01": ["c"]}})
    assert gap["verdict"] == "gap" and gap["missing"] == ["X01"]
    bystander = harness.judge(m, {"killers": {"K01": ["c"]}})
    assert bystander["verdict"] == "gap" and bystander["missing"] == ["K03", "X01"]
    assert harness.judge(m, {"killers": {}})["verdict"] == "survived"
    blunt = harness.judge(m, {"killers": {"K03": ["a"], "X01": ["b"]}, "crashed": ["b"],
                              "messages": {"b": "NoPower: cannot tell"}})
    assert blunt["verdict"] == "gap" and blunt["missing"] == ["X01"]  # an exception is not a verdict
    assert blunt["notes"] == {"X01": "NoPower: cannot tell"}
    line = [ln for ln in report.render_section(_doc({m.name: blunt})) if ln.startswith("| `")]
    assert "X01* ✗" in line[0]
    assert harness.judge(m, {"error": "pytest exit 3"})["verdict"] == "error"


def test_a_shaky_kill_of_a_named_claim_is_a_gap():
    """Issue #24 item 8: a named claim that flips only on a case that also fails on the baseline has not
    shown it sees the mutant; the mutant is a gap, with the shaky cases in the row and the rendered reason."""
    m = mutants.BY_NAME["torch-momentum"]  # named K03, X01
    mutated = _results(("t::k03[a]", "K03", "passed", "holds"), ("t::x01", "X01", "failed", "refuted"),
                       ("t::broken", "K03", "failed", "holds"))  # fails on the baseline (refuted), differently
    base = _results(("t::k03[a]", "K03", "passed", "holds"), ("t::x01", "X01", "passed", "holds"),
                    ("t::broken", "K03", "failed", "refuted"))
    row = harness.judge(m, harness.kills(base, mutated))
    assert row["verdict"] == "gap" and row["missing"] == ["K03"]
    assert row["shaky"] == {"K03": ["t::broken"]}
    assert row["killers"]["K03"] == {"cases": 1, "by_exception": 0, "also_failing_on_baseline": 1}
    lines = report.render_section(_doc({m.name: row}))
    assert any("| K03? ✗, X01 ✓ |" in ln and "**gap**" in ln for ln in lines)
    assert "- `torch-momentum` (gap): K03 flipped only on test cases that also fail without the mutant " \
           "(t::broken): a shaky kill, not counted" in lines
    # one sharp case besides the shaky one is enough
    sharp = harness.judge(m, {"killers": {"K03": ["s", "t::broken"], "X01": ["b"]}, "shaky": ["t::broken"]})
    assert sharp["verdict"] == "killed" and "shaky" not in sharp


# --------------------------------------------------------------------------- documents and rendering


HEADER = {"flavour": "keras3", "code": {"fingerprint": "f" * 16, "commit": "abc", "dirty": False},
          "environment": Environment(keras="3.15.1", backend="tensorflow", tensorflow="2.21.0", python="3.12.3",
                                     flavour="keras3").as_dict()}


def _doc(rows, seconds=60.0, **kwargs):
    rows = {n: r | {"measured": harness.measured(HEADER, n)} for n, r in rows.items()}
    return harness.document(rows, HEADER, seconds, **kwargs)


def _rows():
    m1, m2, m3 = (mutants.BY_NAME[n] for n in ("torch-momentum", "config-drops-momentum", "mask-ignored"))
    return {m1.name: harness.judge(m1, {"killers": {"K03": ["a"], "X01": ["b"], "X02": ["c"]}, "crashed": ["c"]}),
            m2.name: harness.judge(m2, {"killers": {"K14": ["d"]}}),
            m3.name: harness.judge(m3, {"killers": {}})}


def test_render_section_numbers_first_then_the_matrix():
    doc = _doc(_rows(), 600.0)
    assert doc["counts"] == {"killed": 1, "gap": 1, "survived": 1, "error": 0}
    lines = report.render_section(doc)
    assert lines[0].startswith("**1 of 3 mutants killed") and "10.0 min" in lines[0]
    assert "Keras 3.15.1, TensorFlow 2.21.0, measuring code ffffffffffffffff" in lines[0] and "kept" not in lines[0]
    table = {ln.split("`")[1]: ln for ln in lines if ln.startswith("| `")}
    assert list(table) == [n for n in mutants.BY_NAME if n in table]  # the catalogue's order
    assert len(table) == 3
    assert "K03 ✓, X01 ✓" in table["torch-momentum"] and "X02*" in table["torch-momentum"]
    row = table["config-drops-momentum"]
    assert "K13 ✗" in row and "| K14 |" in row and "**gap**" in row
    assert "**survived**" in table["mask-ignored"]
    assert any("config-drops-momentum" in ln and "K13 did not flip" in ln for ln in lines)
    assert report.KEPT not in "\n".join(lines)


def test_every_catalogue_row_renders_as_one_table_row():
    rows = {m.name: harness.judge(m, {"killers": {}}, set(claims.BY_ID) | PENDING) for m in mutants.CATALOGUE}
    rows["beta-ignored"] = rows["beta-ignored"] | {"deviation": "y = |x| (a pipe)"}
    table = [ln for ln in report.render_section(_doc(rows)) if ln.startswith("| `")]
    assert len(table) == len(mutants.CATALOGUE)
    assert all(len(re.findall(r"(?<!\\)\|", ln)) == 7 for ln in table), "a cell holds an unescaped pipe"
    assert any("y = \\|x\\| (a pipe)" in ln for ln in table)


def test_results_round_trip_and_render_without_tensorflow(tmp_path):
    doc = _doc(_rows(), 61.0)
    path = tmp_path / "results.json"
    harness.write(doc, tmp_path)
    assert harness.load(path) == doc == report.read(path)
    code = BLOCK_TF + (f"from bnspec.report import mutants\nfrom pathlib import Path\n"
                       f"print(mutants.render_section(mutants.read(Path({str(path)!r})))[0])\n"
                       f"print(mutants.write_page(Path({str(tmp_path)!r})))\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 3 mutants killed" in proc.stdout
    assert (tmp_path / "MUTANTS.md").read_text().startswith("# Mutation harness: kill matrix\n\n**1 of 3 mutants")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BnspecError, match="not a mutant results file"):
        harness.load(tmp_path / "bad.json")
    with pytest.raises(BnspecError, match="regenerate it with `bnspec mutants`"):
        report.read(tmp_path / "bad.json")


def test_the_committed_results_still_load_and_render_as_the_report_says():
    """reports/mutants/results.json (schema 1) loads, and renders the line REPORT.md carries."""
    doc = report.load(ROOT / "reports")
    assert doc is not None and doc["schema"] in results.MUTANTS_READABLE
    head = report.render_section(doc)[0]
    if doc["schema"] == 1:
        assert head in (ROOT / "reports" / "REPORT.md").read_text().splitlines()
        assert report.KEPT not in "\n".join(report.render_section(doc))


# --------------------------------------------------------------------------- --only: kept rows keep what measured them


def _args(out: Path, home: Path, *extra: str):
    parser = argparse.ArgumentParser()
    harness.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["mutants", "--out", str(out), "--home", str(home), *extra])


def _fake_harness(header, edited=()):
    """harness.harness without pytest: every selected mutant killed by its named claims, the control clean;
    the mutants in `edited` ran after the measuring code was edited."""
    def fake(run, selected, out, home_root, jobs=2, workers=1, timeout=900, control=True, log=print):
        rows = {m.name: harness.judge(m, {"killers": {c: [f"t::{c}"] for c in m.claims}}) | {"measured": harness.measured(
            header, m.name, {"fingerprint": "e" * 16} if m.name in edited else None)} for m in selected}
        ctl = {"claims_run": [], "killers": {}, "verdict": "clean",
               "measured": harness.measured(header, mutants.CONTROL)} if control else None
        doc = harness.document(rows, header, 30.0, baseline={"claims": [], "test_cases": 0, "broken": []}, control=ctl)
        harness.write(doc, out)
        return doc
    return fake


def test_only_keeps_earlier_rows_with_what_measured_them(tmp_path, monkeypatch, capsys):
    """An --only run after a full run under Keras 3.14 (schema 1, as committed): the kept rows and the kept
    control carry Keras 3.14 and an unrecorded code; the header speaks for the rerun row only and the
    rendered matrix marks the others."""
    out = tmp_path / "out"
    out.mkdir()
    m1, m2 = mutants.BY_NAME["torch-momentum"], mutants.BY_NAME["mask-ignored"]
    old_rows = {m.name: harness.judge(m, {"killers": {c: ["x"] for c in m.claims}}) for m in (m1, m2)}
    (out / "results.json").write_text(json.dumps({
        "schema": 1, "flavour": "keras3", "keras": "3.14.0", "tensorflow": "2.20.0", "seconds": 100,
        "counts": {"killed": 2, "gap": 0, "survived": 0, "error": 0}, "panel": [], "mutants": old_rows,
        "control": {"claims_run": [], "killers": {}, "verdict": "clean"}}))
    monkeypatch.setattr(harness, "harness", _fake_harness(HEADER))
    code = harness.run(_args(out, tmp_path / "home", "--only", "beta-ignored", "--no-control"), publish=report.write_page)
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 of 1 mutants killed" in printed and "2 other row(s) kept" in printed
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["mutants"]) == {"torch-momentum", "mask-ignored", "beta-ignored"}
    for name in ("torch-momentum", "mask-ignored"):
        m = doc["mutants"][name]["measured"]
        assert m["environment"]["keras"] == "3.14.0" and m["environment"]["tensorflow"] == "2.20.0"
        assert m["code"] == {} and m["mutant_code"] is None
    assert doc["control"]["measured"]["environment"]["keras"] == "3.14.0"
    assert doc["mutants"]["beta-ignored"]["measured"]["environment"]["keras"] == "3.15.1"
    assert doc["counts"] == {"killed": 1, "gap": 0, "survived": 0, "error": 0}
    page = (out / "MUTANTS.md").read_text().splitlines()
    head = page[2]
    assert len(head) <= 300  # bnspec.report.MAX_LINE: REPORT.md carries this line
    assert head.startswith("**1 of 1 mutants killed") and "Keras 3.15.1, TensorFlow 2.21.0" in head
    assert "3.14" not in head and head.endswith(" 2 row(s) measured under another environment or code (†) "
                                                "are not counted.")
    table = {ln.split("`")[1]: ln for ln in page if ln.startswith("| `")}
    assert list(table) == ["torch-momentum", "mask-ignored", "beta-ignored"]  # the catalogue's order
    assert table["beta-ignored"].endswith("| killed |")
    assert table["torch-momentum"].endswith("| killed † |") and table["mask-ignored"].endswith("| killed † |")
    kept = [ln for ln in page if ln.startswith("- `torch-momentum`:")]
    assert kept == ["- `torch-momentum`: Keras 3.14.0, TensorFlow 2.20.0; measuring code not recorded (differs from "
                    "this run in: Keras, TensorFlow, measuring code, the mutant's code)"]
    control = [ln for ln in page if ln.startswith("Control")]
    assert len(control) == 1 and control[0].startswith("Control †: not measured as the header says (kept from an earlier run, or the "
                                                      "code changed while it ran); it was clean (Keras 3.14.0,")


def test_only_counts_a_kept_row_measured_alike_and_marks_older_code(tmp_path, monkeypatch):
    """Schema 2: a kept row measured with this environment and code is as current as a rerun one; a row
    from older measuring code is marked, and a rerun control replaces the kept one."""
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(harness, "harness", _fake_harness(HEADER))
    assert harness.run(_args(out, tmp_path / "home", "--only", "torch-momentum,mask-ignored")) == 0
    older = HEADER | {"code": {"fingerprint": "0" * 16}}
    monkeypatch.setattr(harness, "harness", _fake_harness(older))
    assert harness.run(_args(out, tmp_path / "home", "--only", "gamma-ignored")) == 0
    monkeypatch.setattr(harness, "harness", _fake_harness(HEADER))
    assert harness.run(_args(out, tmp_path / "home", "--only", "beta-ignored")) == 0
    doc = report.read(out / "results.json")
    now = {n for n, r in doc["mutants"].items() if report.current(doc, n, r)}
    assert now == {"torch-momentum", "mask-ignored", "beta-ignored"}
    assert report.current(doc, mutants.CONTROL, doc["control"])
    lines = report.render_section(doc)
    assert lines[0].startswith("**3 of 3 mutants killed") and " 1 row(s) measured under another" in lines[0]
    assert [ln for ln in lines if ln.startswith("- `gamma-ignored`:")] == [
        "- `gamma-ignored`: Keras 3.15.1, TensorFlow 2.21.0, Python 3.12.3; measuring code 0000000000000000 on "
        f"{doc['mutants']['gamma-ignored']['measured']['finished']} (differs from this run in: measuring code)"]
    assert doc["counts"]["killed"] == 1  # the JSON's counts: the rows this (last) run measured


def test_a_kept_row_of_a_changed_mutant_is_marked():
    m = mutants.BY_NAME["beta-ignored"]
    doc = _doc({m.name: harness.judge(m, {"killers": {c: ["x"] for c in m.claims}})})
    assert report.current(doc, "beta-ignored", doc["mutants"]["beta-ignored"])
    doc["mutants"]["beta-ignored"]["measured"]["mutant_code"] = "changed"
    assert not report.current(doc, "beta-ignored", doc["mutants"]["beta-ignored"])
    assert "(differs from this run in: the mutant's code)" in "\n".join(report.render_section(doc))


def test_a_row_measured_after_the_code_changed_mid_run_is_marked(tmp_path, monkeypatch, capsys):
    """The measuring code is edited while the harness runs (a shared working tree): the rows measured after
    the edit carry the new fingerprint, are marked and not counted by the header, and the run says so."""
    monkeypatch.setattr(harness, "harness", _fake_harness(HEADER, edited=("mask-ignored",)))
    out = tmp_path / "out"
    assert harness.run(_args(out, tmp_path / "home", "--only", "torch-momentum,mask-ignored")) == 0
    assert "the measuring code changed during the runs of mask-ignored (marked)" in capsys.readouterr().out
    doc = report.read(out / "results.json")
    lines = report.render_section(doc)
    assert lines[0].startswith("**1 of 1 mutants killed") and " 1 row(s) measured under another" in lines[0]
    assert [ln for ln in lines if ln.startswith("- `mask-ignored`:")][0].endswith(
        "(differs from this run in: measuring code)")
