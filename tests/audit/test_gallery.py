"""The gallery: each trap model is reported with exactly its one finding (claim id + layer path);
clean models, including keras.applications architectures with many BN layers, get no finding at
warning or above. Run on the installed flavour (tests written for keras3; the tf_keras-specific
verdicts come from the catalogue)."""

from __future__ import annotations

import numpy as np
import pytest

from bnspec.audit import check
from tests.audit import gallery


def _show(result) -> str:
    return "\n" + result.table()


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.mark.parametrize("name", sorted(gallery.TRAPS))
def test_trap_is_found_with_its_claim_and_layer(keras, rng, name):
    case = gallery.TRAPS[name](keras, rng)
    before = [v.numpy().copy() for v in case.model.variables]
    result = check(case.model, data=case.data, dynamic=case.dynamic)
    assert result.ids("info") == case.expected, _show(result)
    for (cid, path), severity in case.severity.items():
        assert [f.severity for f in result if (f.id, f.layer) == (cid, path)] == [severity], _show(result)
    for f in result:  # every finding says what it rests on
        assert f.verdict and f.fix and (f.evidence or f.confirmed), f
    # the audit leaves the model as it found it (NaN compares equal to NaN here)
    after = [v.numpy() for v in case.model.variables]
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after))


@pytest.mark.parametrize("name", sorted(gallery.FILE_TRAPS))
def test_file_trap_is_found_statically(keras, rng, tmp_path, name):
    case = gallery.FILE_TRAPS[name](keras, rng, tmp_path)
    result = check(case.model, dynamic=False)
    assert result.ids("info") == case.expected, _show(result)


@pytest.mark.parametrize("name", sorted(gallery.CLEAN))
def test_clean_model_has_no_finding(keras, rng, name):
    case = gallery.CLEAN[name](keras, rng)
    result = check(case.model, data=case.data)
    assert result.ids("info") == set(), _show(result)
    assert result.measured["examples"] >= 2


def test_hardcoded_training_is_confirmed_by_measurement(keras, rng):
    """On Keras 3.0-3.15 the functional N05 trap acts on model(x): the measurement is attached to the
    static finding (variables written, batch dependence) instead of becoming findings of its own."""
    case = gallery.hardcoded_training_true(keras, rng)
    (finding,) = check(case.model)
    measured = " ".join(finding.confirmed)
    if finding.verdict_detail and "entry=call: holds" in finding.verdict_detail:
        assert "model(x) changed m/bn: moving_mean" in measured, measured
        assert "batch-mates" in measured, measured


def test_flag_carried_downstream_is_attached_not_reported_twice(keras, rng):
    case = gallery.hardcoded_training_true_then_bn(keras, rng)
    result = check(case.model)
    (finding,) = result
    assert finding.evidence["bn_downstream"] == ["m/bn_2"]
    # whether model(x) reaches bn_2 depends on the Keras version (3.15: it does); what was measured
    # there is attached to the N05 finding, not reported as a second finding
    reached = any(v.startswith("m/bn_2:") for v in result.measured["variables_changed_by"].get("call", []))
    assert reached == any("changed m/bn_2:" in c for c in finding.confirmed), finding.confirmed


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_trap_in_a_saved_file(keras, rng, tmp_path, suffix):
    """The same trap read from a saved file (.keras archive, or the legacy .h5 Keras still writes):
    statically (config only) and with the loaded model."""
    case = gallery.resizing_upstream(keras, rng)
    path = tmp_path / f"m{suffix}"
    case.model.save(path)
    assert check(str(path), dynamic=False).ids() == case.expected
    assert check(str(path)).ids() == case.expected


def test_non_finite_measurement_is_never_clean(keras, rng):
    """NaN inputs: every output is NaN, so no comparison can pass as clean; the finding says NaN."""
    case = gallery.clean_functional(keras, rng)
    data = rng.standard_normal((8, 8)).astype("float32")
    data[2, 0] = np.nan
    result = check(case.model, data=data)
    assert result.errors and {f.id for f in result.errors} == {"C10"}, _show(result)
