"""`bnspec seeds` (bnspec.harness.seeds) and its report section (bnspec.report.seeds), on hand-written results:
which claims it runs, how it finds a verdict that changes with the training seed. No TensorFlow."""

import pytest

from bnspec.harness import seeds
from bnspec.report import seeds as section


def _doc(observed_by_seed: dict[str, str | None], ratio=0.5) -> dict:
    cases = {s: {"t.py::test_l04": {"claim": "L04", "outcome": "passed" if o else "failed", "observed": o,
                                    "evidence": {"step": {"value": 1.0, "bound": 2.0, "ratio": ratio}}, "message": ""}}
             for s, o in observed_by_seed.items()}
    return {"schema": 1, "run": "keras3", "claims": ["L04"], "seeds": list(observed_by_seed), "cases": cases,
            "seconds": 60, "code": {"fingerprint": "f00d"}}


def test_the_trained_model_claims_are_found_in_the_tests():
    found = seeds.trained_claims()
    assert {"L04", "M04", "E07", "L03"} <= set(found)  # each uses the `trained` or `trained_explicit` fixture
    assert "K01" not in found  # a layer-level claim: no trained model


def test_a_verdict_that_changes_with_the_seed_is_found_and_shown():
    same = _doc({"100": "holds", "101": "holds", "102": "holds"})
    assert seeds.unstable(same) == []
    text = "\n".join(section.section(same, "f00d"))
    assert "keep their verdict on 1 of 1 cases across 3 trainings" in text and "- L04: 1 case, holds on every seed" in text
    assert "ratio 0.5 (seed" in text and "†" not in text
    lucky = _doc({"100": "holds", "101": "refuted", "102": "holds"})
    assert seeds.unstable(lucky) == ["t.py::test_l04: seed 100 passed/holds, seed 101 passed/refuted, seed 102 passed/holds"]
    text = "\n".join(section.section(lucky, "beef"))
    assert "on 0 of 1 cases" in text and "**verdict changes with the seed** in 1" in text and "older code `f00d` †" in text


def test_too_few_seeds_is_one_clear_error():
    from bnspec.cli import main

    with pytest.raises(Exception, match="at least two seeds"):
        seeds.main(type("A", (), {"seeds": "100", "out": None, "workers": "0"}))
    assert main(["seeds", "--seeds", "1,x"]) == 1
