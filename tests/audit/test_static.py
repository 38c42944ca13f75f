"""The static checks on hand-written configs in both serialized formats (Keras 3 and tf_keras), the
claim lookup (a missing claim never crashes; a present one decides), and the version gates.
No Keras needed here except where a test says so."""

from __future__ import annotations

import json

import pytest

from bnspec.audit import findings as fmod
from bnspec.audit import saved, static
from bnspec.audit.checks import training_mode

KERAS3 = fmod.Target("keras3", "3.15.1", "tensorflow", "installed")
KERAS316 = fmod.Target("keras-nightly", "3.16.0.dev2026080100", "tensorflow", "installed")
TFKERAS = fmod.Target("tfkeras", "2.21.0", "tensorflow", "installed")


def _tensor(src):
    return {"class_name": "__keras_tensor__", "config": {"shape": [None, 8], "dtype": "float32",
                                                          "keras_history": [src, 0, 0]}}


def k3_layer(cls, name, inbound=(), kwargs=None, **cfg):
    """A layer as Keras 3 writes it into config.json."""
    nodes = [{"args": [_tensor(s) for s in inbound], "kwargs": kwargs or {}}] if inbound else []
    return {"module": "keras.layers", "class_name": cls, "name": name, "inbound_nodes": nodes,
            "config": {"name": name, "trainable": True, **cfg}}


def k2_layer(cls, name, inbound=(), kwargs=None, **cfg):
    """A layer as tf_keras writes it (inbound nodes are lists of [layer, node, tensor, kwargs])."""
    nodes = [[[s, 0, 0, kwargs or {}] for s in inbound]] if inbound else []
    return {"class_name": cls, "name": name, "inbound_nodes": nodes, "config": {"name": name, "trainable": True, **cfg}}


def functional(layers, name="m", out=None):
    return {"class_name": "Functional", "config": {"name": name, "trainable": True, "layers": layers,
                                                   "input_layers": [[layers[0]["name"], 0, 0]],
                                                   "output_layers": [[out or layers[-1]["name"], 0, 0]]}}


def ids(config, target=KERAS3):
    _, found, _ = static.audit_config(config, target)
    return {(f.id, f.layer) for f in found}


@pytest.mark.parametrize("make", [k3_layer, k2_layer], ids=["keras3_format", "tf_keras_format"])
def test_hardcoded_training_in_either_format(make):
    cfg = functional([make("InputLayer", "x"), make("Dense", "d", ["x"], use_bias=False),
                      make("BatchNormalization", "bn", ["d"], kwargs={"training": True})])
    assert ids(cfg) == {("N05", "m/bn")}
    (finding,) = static.audit_config(cfg, KERAS3)[1]
    assert finding.severity == "error" and finding.evidence["kwargs"] == {"training": True}


def test_clean_config_has_no_finding():
    cfg = functional([k3_layer("InputLayer", "x"), k3_layer("Dense", "d", ["x"], use_bias=False),
                      k3_layer("BatchNormalization", "bn", ["d"], momentum=0.99, epsilon=1e-3),
                      k3_layer("Dense", "head", ["bn"])])
    assert ids(cfg) == set()


def _nested_false():
    base = {"class_name": "Sequential", "name": "base", "inbound_nodes": [
        {"args": [_tensor("x")], "kwargs": {"training": False}}],
        "config": {"name": "base", "trainable": True, "layers": [
            {"class_name": "InputLayer", "config": {"name": "base_in"}},
            {"class_name": "Dense", "config": {"name": "d", "trainable": True, "use_bias": False}},
            {"class_name": "BatchNormalization", "config": {"name": "bn", "trainable": True}}]}}
    return functional([k3_layer("InputLayer", "x"), base, k3_layer("Dense", "head", ["base"])])


def test_nested_training_false_depends_on_the_keras_version(monkeypatch):
    from bnspec import claims

    monkeypatch.delitem(claims.BY_ID, "C01", raising=False)  # the fallback range decides
    assert ids(_nested_false(), KERAS3) == {("C01", "m/base")}
    assert ids(_nested_false(), KERAS316) == set()  # fixed in 3.16 (keras PR #23364)
    assert ids(_nested_false(), TFKERAS) == set()
    (finding,) = static.audit_config(_nested_false(), KERAS3)[1]
    assert finding.verdict == fmod.NOT_IN_CATALOGUE and "believed range" in finding.verdict_detail


def test_nested_training_false_with_the_real_catalogue():
    """Where the catalogue holds C01 (measured: refuted on Keras 3.15 Functional, holds on tf_keras and
    3.16), its verdict gates the check."""
    if not fmod.lookup("C01", KERAS3)["known"]:
        pytest.skip("C01 is not in this catalogue")
    expected = {t: fmod.lookup("C01", t, [{"kind": "functional"}])["verdict"] == "refuted"
                for t in (KERAS3, KERAS316, TFKERAS)}
    for t, live in expected.items():
        assert ids(_nested_false(), t) == ({("C01", "m/base")} if live else set()), t


class FakeClaim:
    """A catalogue entry with one rule (the real Claim's constructor is being restructured)."""

    statement = "a claim for the test"

    def __init__(self, verdict):
        self.verdict = verdict

    def expectation(self, flavour, version, params, backend="tensorflow"):
        return type("Rule", (), {"verdict": self.verdict, "why": "test rule"})()


@pytest.mark.parametrize("verdict, reported", [("refuted", True), ("holds", False)])
def test_the_catalogue_decides_when_the_claim_exists(monkeypatch, verdict, reported):
    """C02 in the catalogue: its verdict on this Keras decides, not the fallback range."""
    from bnspec import claims

    monkeypatch.setitem(claims.BY_ID, "C02", FakeClaim(verdict))
    cfg = functional([k3_layer("InputLayer", "x"), k3_layer("Resizing", "resize", ["x"], height=8, width=8),
                      k3_layer("Conv2D", "conv", ["resize"], use_bias=False),
                      k3_layer("BatchNormalization", "bn", ["conv"])])
    for target in (KERAS3, KERAS316, TFKERAS):
        got = ids(cfg, target)
        assert got == ({("C02", "m/resize")} if reported else set()), target
    if reported:
        (finding,) = static.audit_config(cfg, KERAS3)[1]
        assert finding.verdict == "refuted" and finding.claim == FakeClaim.statement
        assert finding.evidence["bn_downstream"] == ["m/bn"]


def test_upstream_leak_only_reaches_bn_downstream(monkeypatch):
    from bnspec import claims

    monkeypatch.delitem(claims.BY_ID, "C02", raising=False)
    # the RandomFlip branch does not feed the BN: no finding
    cfg = functional([k3_layer("InputLayer", "x"), k3_layer("Dense", "d", ["x"], use_bias=False),
                      k3_layer("BatchNormalization", "bn", ["d"]), k3_layer("RandomFlip", "flip", ["x"]),
                      k3_layer("Concatenate", "cat", ["bn", "flip"])], out="cat")
    assert ids(cfg) == set()
    # Resizing's default exists only from Keras 3.6 (believed range): not on 3.5
    cfg = functional([k3_layer("InputLayer", "x"), k3_layer("Resizing", "r", ["x"]),
                      k3_layer("Conv2D", "c", ["r"], use_bias=False), k3_layer("BatchNormalization", "bn", ["c"])])
    assert ids(cfg, fmod.Target("keras3", "3.5.0", "tensorflow", "installed")) == set()
    assert ids(cfg, KERAS3) == {("C02", "m/r")}


def test_shared_layer_and_nested_model_called_twice():
    shared = k3_layer("BatchNormalization", "bn", ["a"])
    shared["inbound_nodes"].append({"args": [_tensor("b")], "kwargs": {}})
    cfg = functional([k3_layer("InputLayer", "x"), k3_layer("Dense", "a", ["x"], use_bias=False),
                      k3_layer("Dense", "b", ["x"], use_bias=False), shared])
    assert ids(cfg) == {("N08", "m/bn")}


def test_tf_keras_h5_arguments_and_epsilon_clamp(monkeypatch):
    """A tf_keras config: Keras-2-only arguments (error on Keras 3, info on tf_keras) and an epsilon
    below the fused clamp on a 4-D input (live on tf_keras, a port note on Keras 3)."""
    from bnspec import claims

    monkeypatch.delitem(claims.BY_ID, "C09", raising=False)  # the believed range decides
    bn = k2_layer("BatchNormalization", "bn", ["c"], axis=[3], epsilon=1e-5, momentum=0.99,
                  virtual_batch_size=4)
    bn["build_config"] = {"input_shape": [None, 6, 6, 4]}
    cfg = functional([k2_layer("InputLayer", "x", batch_input_shape=[None, 8, 8, 3]),
                      k2_layer("Conv2D", "c", ["x"], use_bias=False, activation="linear"), bn])
    sev = lambda t: {(f.id, f.severity) for f in static.audit_config(cfg, t)[1]}  # noqa: E731
    assert sev(KERAS3) == {("C12", "error"), ("C09", "info")}
    assert sev(TFKERAS) == {("C12", "info"), ("C09", "warning")}
    bn["config"]["epsilon"] = 1.001e-5  # ResNet50's value: at the clamp, not below it
    assert {i for i, _ in sev(TFKERAS)} == {"C12"}


def test_bfloat16_statistics_only_on_keras3(monkeypatch):
    from bnspec import claims

    monkeypatch.delitem(claims.BY_ID, "C06", raising=False)
    cfg = functional([k3_layer("InputLayer", "x"), k3_layer(
        "BatchNormalization", "bn", ["x"], dtype={"module": "keras", "class_name": "DTypePolicy",
                                                  "config": {"name": "bfloat16"}})])
    assert ids(cfg, KERAS3) == {("C06", "m/bn")}
    assert ids(cfg, TFKERAS) == set()
    mixed = json.loads(json.dumps(cfg).replace('"bfloat16"', '"mixed_bfloat16"'))
    assert ids(mixed, KERAS3) == set()  # mixed policies keep float32 variables


def test_unknown_claim_id_never_crashes():
    f = fmod.make("Z99", "some-check", "warning", "m/bn", "title", KERAS3, evidence={"x": 1})
    assert f.id == "Z99" and f.verdict == fmod.NOT_IN_CATALOGUE and f.claim == ""
    assert json.dumps(f.to_dict())


def test_json_is_strict_with_non_finite_numbers():
    result = fmod.Findings([fmod.make("C10", "non-finite", "error", "m/bn", "t", KERAS3,
                                      evidence={"value": float("nan"), "big": float("inf")})])
    text = json.dumps(result.to_json(), allow_nan=False)
    assert '"nan"' in text and '"inf"' in text


def test_unreadable_files_are_usage_errors(tmp_path):
    for content, name in ((b"not a model", "m.keras"), (b"PK\x03\x04broken", "z.keras")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(fmod.UsageError):
            saved.read_file(path)
    with pytest.raises(fmod.UsageError):
        saved.read_file(tmp_path / "missing.keras")
    with pytest.raises(fmod.UsageError):
        saved.read_file(tmp_path)


def test_training_default_table_matches_the_installed_keras(keras, flavour):
    """The static table of layers whose call defaults training=True equals what the installed Keras 3
    says (inspect.signature), so a new preprocessing layer cannot slip through unnoticed."""
    import inspect

    if flavour == "tfkeras":
        pytest.skip("the table describes Keras 3 (tf_keras' defaults do not leak: C02 holds there)")
    found = set()
    for name in dir(keras.layers):
        obj = getattr(keras.layers, name)
        if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer):
            param = inspect.signature(obj.call).parameters.get("training")
            if param is not None and param.default is True:
                found.add(name)
    assert found == set(training_mode.TRAINING_TRUE_DEFAULT)
