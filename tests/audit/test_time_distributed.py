"""`TimeDistributed(BatchNormalization())` (issue #24): found statically, from a saved config in either format
and from a live model (the wrapper's inner layer), reported as what it is (C29: BN applied per time step),
never as stale statistics with PreciseBN as the fix; and the fix it names (BN on the (batch, time, features)
tensor directly) is clean on the same data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bnspec.audit import check, check_file, static
from bnspec.audit import findings as fmod
from tests.audit import gallery
from tests.audit.test_cli import RUN_BLOCKED
from tests.helpers import run_python

C29 = "C29"  # the claim (bnspec/claims/field_training.py; bnspec.audit.checks.sharing.TIME_DISTRIBUTED_CLAIM)
KERAS3 = fmod.Target("keras3", "3.15.1", "tensorflow", "installed")
TFKERAS = fmod.Target("tfkeras", "2.21.0", "tensorflow", "installed")


def _td_config(keras3_format: bool) -> dict:
    """Input (5, 4) -> TimeDistributed(BatchNormalization(momentum=0.9)), as Keras 3 / tf_keras write it."""
    bn = {"class_name": "BatchNormalization", "config": {"name": "bn", "trainable": True, "axis": -1,
                                                         "momentum": 0.9, "epsilon": 0.001}}
    if keras3_format:
        bn["module"] = "keras.layers"
        inbound = [{"args": [{"class_name": "__keras_tensor__", "config": {"shape": [None, 5, 4],
                                                                           "keras_history": ["x", 0, 0]}}],
                    "kwargs": {}}]
    else:
        inbound = [[["x", 0, 0, {}]]]
    td = {"class_name": "TimeDistributed", "name": "td", "inbound_nodes": inbound,
          "build_config": {"input_shape": [None, 5, 4]},
          "config": {"name": "td", "trainable": True, "layer": bn}}
    return {"class_name": "Functional", "config": {
        "name": "m", "trainable": True, "input_layers": [["x", 0, 0]], "output_layers": [["td", 0, 0]],
        "layers": [{"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_shape": [None, 5, 4]},
                    "inbound_nodes": []}, td]}}


@pytest.mark.parametrize("keras3_format", [True, False], ids=["keras3_format", "tf_keras_format"])
def test_found_in_a_config_in_either_format(keras3_format):
    root, found, _ = static.audit_config(_td_config(keras3_format), KERAS3)
    assert [(f.id, f.layer, f.severity) for f in found] == [(C29, "m/td", "warning")]
    (f,) = found
    assert [x.path for x in root.walk() if x.is_bn] == ["m/td/bn"] == f.affects
    assert f.evidence["time_steps"] == 5 and f.evidence["ema_updates_per_training_step"] == 5
    assert f.evidence["effective_momentum_per_training_step"] == [round(0.9 ** 5, 6)]
    assert "once per time step" in f.fix and "BatchNormalization() to the (batch, time, ...) tensor" in f.fix
    from bnspec.audit.checks.sharing import TIME_DISTRIBUTED_CLAIM

    assert TIME_DISTRIBUTED_CLAIM == C29


def test_tf_keras_gets_its_own_mechanism():
    """tf_keras reshapes its own BN to (batch x time) (C29 holds there): an info note for a move to Keras 3."""
    (f,) = static.audit_config(_td_config(False), TFKERAS)[1]
    assert "tf_keras" in f.fix and "merged (batch x time)" in f.fix and f.severity == "info"
    assert "ema_updates_per_training_step" not in f.evidence


def test_the_claim_id_degrades_gracefully(monkeypatch):
    from bnspec import claims

    monkeypatch.delitem(claims.BY_ID, C29, raising=False)
    (f,) = static.audit_config(_td_config(True), KERAS3)[1]
    assert f.id == C29 and f.verdict == fmod.NOT_IN_CATALOGUE and json.dumps(f.to_dict())


def test_live_model_with_data_gets_c29_and_per_step_evidence_not_stale(keras):
    """The old audit said L03 at m/td/bn ("stale", fix: PreciseBN); the variance it saw is the spread
    between time steps that one shared moving statistic cannot describe."""
    case = gallery.time_distributed_bn(keras, np.random.default_rng(3))
    result = check(case.model, data=case.data)
    assert result.ids("info") == {("C29", "m/td")}, result.table()
    (f,) = result
    assert f.affects == ["m/td/bn"]
    (measured,) = f.confirmed
    assert measured.startswith("m/td/bn: 5 time steps") and "step(s) beyond 6 sigma" in measured


def test_saved_file_static_audit_finds_it_without_tensorflow(keras, tmp_path):
    path = tmp_path / "td.keras"
    gallery.time_distributed_bn(keras, np.random.default_rng(3)).model.save(path)
    assert check_file(path).ids() == {("C29", "m/td")}
    proc = run_python(RUN_BLOCKED, str(path), "--static", "--json")
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert [(f["id"], f["layer"]) for f in out["findings"]] == [("C29", "m/td")]
    assert out["context"]["bn_layers"] == 1


def test_the_named_fix_is_clean_on_the_same_data(keras):
    """BatchNormalization() on the (batch, time, features) tensor normalises over batch and time: trained on
    the same sequences, the audit on the same data finds nothing."""
    rng = np.random.default_rng(3)
    steps, features = 5, 4
    inp = keras.Input((steps, features), name="x")
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(inp)
    m = keras.Model(inp, keras.layers.Dense(3, name="head")(keras.layers.Flatten(name="flat")(h)), name="m")

    def batch(n):
        return (rng.standard_normal((n, steps, features)) + np.arange(steps)[None, :, None]).astype("float32")

    for _ in range(60):
        m(batch(32), training=True)
    result = check(m, data=batch(64))
    assert result.ids("info") == set(), result.table()
