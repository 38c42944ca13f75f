"""Judging moving statistics far from the data (bnspec.audit.statistics), on hand-made measurements (no
Keras): stale (L03, PreciseBN repairs it) or a train/inference shift (L04, PreciseBN cannot help), issue #24.
The mechanism on a real deep network is tests/audit/test_shift.py."""

from __future__ import annotations

import numpy as np
import pytest

from bnspec.audit import findings as fmod
from bnspec.audit.measurements import BNState, Measurements, Moments
from bnspec.audit.statistics import STALE_SHARE, judge_statistics

TARGET = fmod.Target("keras3", "3.15.1", "tensorflow", "installed")
N, F = 64, 8  # examples and features of the hand-made measurements


def _state(mean=0.0, var=1.0) -> BNState:
    return BNState(moving_mean=np.full(F, mean), moving_variance=np.full(F, var), gamma=np.ones(F), beta=np.zeros(F),
                   epsilon=1e-3, momentum=0.99, axis=-1, trainable=True,
                   initial={"moving_mean": 0.0, "moving_variance": 1.0, "gamma": 1.0, "beta": 0.0})


def _moments(rng, mean=0.0, std=1.0) -> list[Moments]:
    return [Moments.of(rng.standard_normal((N, F)) * std + mean, -1)]


def _measured(inference: dict, training: dict | None, error: str | None = None) -> Measurements:
    """Two BN layers, m/bn0 then m/bn1, with moving statistics (0.5, 1) (not their initial (0, 1))."""
    m = Measurements(examples=N, bn_layers=len(inference))
    m.bn_state = {p: _state(mean=0.5) for p in inference}
    m.bn_inputs = inference
    m.bn_inputs_training = training
    m.training_pass_error = error
    return m


def _ids(found) -> set:
    return {(f.id, f.layer) for f in found}


@pytest.fixture
def rng():
    return np.random.default_rng(24)


def test_far_in_both_modes_is_stale(rng):
    """Inputs 5 moving-standard-deviations off in inference and training mode alike: stale (L03)."""
    far = _moments(rng, mean=5.5)
    found = judge_statistics(_measured({"m/bn0": far}, {"m/bn0": far}), "m", [], TARGET, data_given=True)
    assert _ids(found) == {("L03", "m/bn0")}
    assert "PreciseBN" in found[0].fix and found[0].evidence["features_far_in_training_mode"] == F


def test_far_in_inference_mode_only_is_a_shift(rng):
    """Variance 9x the moving variance in inference mode, matching it in training mode: L04, and the fix
    says why PreciseBN cannot help."""
    found = judge_statistics(_measured({"m/bn1": _moments(rng, mean=0.5, std=3.0)},
                                       {"m/bn1": _moments(rng, mean=0.5)}), "m", [], TARGET, data_given=True)
    assert _ids(found) == {("L04", "m/bn1")}
    (f,) = found
    assert f.evidence["features_far_in_training_mode"] == 0
    assert "cannot help" in f.fix and "layer by layer in inference mode" in f.fix


def test_a_shift_that_training_mode_mostly_removes_is_still_a_shift(rng):
    """Beyond the limit in training mode too, but by less than STALE_SHARE of the inference-mode distance:
    the upstream layers' mode explains most of it (the training pass runs at the audit's batch size)."""
    inference, training = _moments(rng, mean=0.5, std=100.0), _moments(rng, mean=0.5, std=3.0)
    found = judge_statistics(_measured({"m/bn1": inference}, {"m/bn1": training}), "m", [], TARGET, data_given=True)
    assert _ids(found) == {("L04", "m/bn1")}
    lo_inf, _ = found[0].evidence["distance_in_limits_range"]
    _, hi_train = found[0].evidence["training_mode"]["distance_in_limits_range"]
    assert 1.0 < hi_train < STALE_SHARE * lo_inf  # the case this test is about
    assert found[0].evidence["features_far_in_training_mode"] == F


def test_without_the_training_mode_pass_far_statistics_are_reported_stale_with_why(rng):
    far = _moments(rng, mean=0.5, std=3.0)
    found = judge_statistics(_measured({"m/bn0": far}, None, error="RuntimeError: boom"), "m", [], TARGET,
                             data_given=True)
    assert _ids(found) == {("L03", "m/bn0")}
    assert found[0].evidence["training_mode"] == "not measured: RuntimeError: boom"
    assert "could not be measured" in found[0].fix


def test_a_shift_below_a_stale_layer_is_attached_to_it(rng):
    """bn0 stale (its input is off in both modes); bn1 off in inference mode only because bn0 normalises
    with its stale statistics there: one finding, bn0's, with bn1's measurement attached."""
    m = _measured({"m/bn0": _moments(rng, mean=5.5), "m/bn1": _moments(rng, mean=0.5, std=3.0)},
                  {"m/bn0": _moments(rng, mean=5.5), "m/bn1": _moments(rng, mean=0.5)})
    found = judge_statistics(m, "m", [], TARGET, data_given=True)  # no tree: upstream = called earlier
    assert _ids(found) == {("L03", "m/bn0")}
    assert any(c.startswith("m/bn1:") and "inference mode only" in c and "of m/bn0 upstream" in c
               for c in found[0].confirmed)


def test_random_inputs_judge_no_distance(rng):
    far = _moments(rng, mean=5.5)
    assert judge_statistics(_measured({"m/bn0": far}, None), "m", [], TARGET, data_given=False) == []
