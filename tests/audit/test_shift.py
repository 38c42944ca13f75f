"""A train/inference shift is not stale statistics (issue #24), on a real deep network calibrated with
PreciseBN (bnspec.subjects.popstats.recompute), through the public API only (bnspec.audit.check).

The deep net: 8 x (Dense(32, no bias) -> BN -> ReLU), random weights, its statistics recomputed with frozen
weights over 100 batches of 4 (Algorithm 2 with the unbiased factor 4/3), audited on 64 fresh examples of
the same distribution. Small batches make the gap between training mode (every BN normalises with its
batch's statistics) and inference mode (population statistics) grow with depth (L04): measured here
(Keras 3.15.1, TensorFlow 2.21, CPU), features of bn2 and bn4..bn7 (1, 1, 10, 11, 20 of 32) reach an
inference-mode input variance of 0.17-0.45 of the moving variance, beyond the 6-sigma limit, while the
training-mode pass keeps every feature within it (at most 0.78 of the limit). The old audit reported them
as stale statistics (L03) with PreciseBN as the fix; fed 3x+2 scaled data, it reported L03 on all 8 layers
where only the first is stale."""

from __future__ import annotations

import numpy as np
import pytest

from bnspec.audit import check



DEPTH, WIDTH, BATCH, BATCHES = 8, 32, 4, 100


def _deep_mlp(keras, rng):
    """DEPTH x (Dense -> BN -> ReLU), statistics recomputed with PreciseBN over BATCHES batches of BATCH."""
    from bnspec.subjects import popstats

    inp = keras.Input((WIDTH,), name="x")
    h = inp
    for i in range(DEPTH):
        h = keras.layers.Dense(WIDTH, use_bias=False, name=f"dense{i}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
        h = keras.layers.Activation("relu", name=f"relu{i}")(h)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(h), name="m")
    popstats.recompute(model, [rng.standard_normal((BATCH, WIDTH)).astype("float32") for _ in range(BATCHES)])
    return model


@pytest.fixture(scope="module")
def calibrated(keras):
    keras.utils.set_random_seed(24)
    return _deep_mlp(keras, np.random.default_rng(24))


def test_precise_bn_calibrated_deep_net_shows_a_shift_not_stale_statistics(keras, calibrated):
    """Issue #24: the old audit called these layers stale and advised PreciseBN, which had just been
    applied. Now: L04 on the deep layers, no L03 anywhere, and the model's variables as they were."""
    data = np.random.default_rng(25).standard_normal((64, WIDTH)).astype("float32")
    before = [v.numpy().copy() for v in calibrated.variables]
    result = check(calibrated, data=data)
    assert [f for f in result if f.id == "L03"] == [], result.table()
    shifted = [f for f in result if f.id == "L04"]
    assert len(shifted) >= 3, result.table()
    assert "m/bn0" not in {f.layer for f in shifted}  # no BN upstream of bn0: its inputs are the same in both modes
    for f in shifted:
        assert f.severity == "warning" and f.evidence["features_far_in_training_mode"] == 0, f.evidence
    assert result.measured["training_mode_inputs"] is True
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, calibrated.variables))


def test_wrong_preprocessing_is_stale_at_the_first_layer_and_explains_the_rest(keras, calibrated):
    """The same net fed 3x+2 scaled data: bn0's statistics are stale in both modes (L03); every later
    layer's distance, gone in training mode where bn0 renormalises, is attached to bn0's finding."""
    data = (np.random.default_rng(25).standard_normal((64, WIDTH)) * 3 + 2).astype("float32")
    result = check(calibrated, data=data)
    assert result.ids("warning") == {("L03", "m/bn0")}, result.table()
    (stale,) = result.at_least("warning")
    assert any(c.startswith("m/bn") and "follows from the stale statistics of m/bn0" in c for c in stale.confirmed), \
        stale.confirmed
