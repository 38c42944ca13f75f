"""The mutation harness (bnspec.mutants): its catalogue, that every mutant is really wrong (and the
harness' own re-implementation of the layer is not), that installing one swaps Keras' class in every
route (including .keras loading), and the kill-matrix arithmetic on hand-written results."""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pytest

from bnspec import BnspecError, claims, mutants, reference
from tests.helpers import BLOCK_TF, run_python

# --------------------------------------------------------------------------- the catalogue (no TensorFlow)


def test_catalogue_is_complete_and_names_known_claims():
    assert len(mutants.CATALOGUE) >= 15
    assert len(mutants.BY_NAME) == len(mutants.CATALOGUE), "duplicate mutant names"
    for m in mutants.CATALOGUE:
        assert m.claims, f"{m.name} names no claim"
        unknown = set(m.claims) | set(m.extra) | set(mutants.PANEL)
        unknown -= set(claims.BY_ID)
        assert not unknown, f"{m.name}: unknown claim ids {unknown}"
        assert m.origin and m.deviation and m.shows, m.name
        assert set(m.claims) <= set(m.run_claims())
        assert set(m.shows) <= set(PROBES), f"{m.name}: unknown probe {set(m.shows) - set(PROBES)}"


def test_unknown_mutant_is_one_clear_error():
    with pytest.raises(BnspecError, match="unknown mutant 'nope'; known: torch-momentum"):
        mutants.get("nope")
    with pytest.raises(BnspecError, match="unknown mutant"):
        mutants.install(object(), "nope")  # refused before Keras is touched


def test_unknown_mutant_on_the_command_line(capsys):
    assert mutants.main(["--only", "torch-momentum,nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mutant 'nope'" in err


# --------------------------------------------------------------------------- kill matrix (no TensorFlow)


def _doc(*tests):
    return {"schema": 1, "flavour": "keras3", "tests": [
        {"nodeid": n, "claim": c, "outcome": o, "expected": "holds", "observed": v} for n, c, o, v in tests]}


BASE = _doc(("t::k03[a]", "K03", "passed", "holds"), ("t::k03[b]", "K03", "passed", "holds"),
            ("t::x01", "X01", "passed", "holds"), ("t::k01", "K01", "passed", "holds"),
            ("t::broken", "K02", "failed", "refuted"), ("t::k04", "K04", "passed", "holds"))


def test_kills_count_flipped_failures_only():
    mutated = _doc(("t::k03[a]", "K03", "failed", "refuted"), ("t::k03[b]", "K03", "passed", "holds"),
                   ("t::x01", "X01", "error", None), ("t::k01", "K01", "passed", "holds"),
                   ("t::broken", "K02", "failed", "refuted"), ("t::k04", "K04", "skipped", None))
    k = mutants.kills(BASE, mutated)
    assert k["killers"] == {"K03": ["t::k03[a]"], "X01": ["t::x01"]}
    assert k["crashed"] == ["t::x01"]  # an exception kills, but is marked
    assert k["broken"] == ["t::broken"]  # fails on the baseline too: not a kill
    changed = _doc(("t::broken", "K02", "failed", "holds"))  # fails on the baseline, differently
    k = mutants.kills(BASE, changed)
    assert k["killers"] == {"K02": ["t::broken"]} and k["shaky"] == ["t::broken"]
    row = mutants.judge(mutants.BY_NAME["torch-epsilon"], k)
    assert row["killers"]["K02"] == {"cases": 1, "by_exception": 0, "also_failing_on_baseline": 1}


def test_judge_killed_gap_survived_error():
    m = mutants.BY_NAME["torch-momentum"]  # named K03, X01
    both = mutants.judge(m, {"killers": {"K03": ["a"], "X01": ["b"], "K01": ["c"]}})
    assert both["verdict"] == "killed" and both["missing"] == []
    gap = mutants.judge(m, {"killers": {"K03": ["a"], "K01": ["c"]}})
    assert gap["verdict"] == "gap" and gap["missing"] == ["X01"]
    bystander = mutants.judge(m, {"killers": {"K01": ["c"]}})
    assert bystander["verdict"] == "gap" and bystander["missing"] == ["K03", "X01"]
    assert mutants.judge(m, {"killers": {}})["verdict"] == "survived"
    blunt = mutants.judge(m, {"killers": {"K03": ["a"], "X01": ["b"]}, "crashed": ["b"],
                              "messages": {"b": "NoPower: cannot tell"}})
    assert blunt["verdict"] == "gap" and blunt["missing"] == ["X01"]  # an exception is not a verdict
    assert blunt["notes"] == {"X01": "NoPower: cannot tell"}
    line = [ln for ln in mutants.render_section(mutants.document({m.name: blunt}, {}, 1.0)) if ln.startswith("| `")]
    assert "X01* ✗" in line[0]
    assert mutants.judge(m, {"error": "pytest exit 3"})["verdict"] == "error"


def _rows():
    m1, m2, m3 = (mutants.BY_NAME[n] for n in ("torch-momentum", "config-drops-momentum", "mask-ignored"))
    return {m1.name: mutants.judge(m1, {"killers": {"K03": ["a"], "X01": ["b"], "X02": ["c"]}, "crashed": ["c"]}),
            m2.name: mutants.judge(m2, {"killers": {"K14": ["d"]}}),
            m3.name: mutants.judge(m3, {"killers": {}})}


def test_render_section_numbers_first_then_the_matrix():
    doc = mutants.document(_rows(), {"flavour": "keras3", "keras": "3.15.1", "tensorflow": "2.21.0"}, 600.0)
    assert doc["counts"] == {"killed": 1, "gap": 1, "survived": 1, "error": 0}
    lines = mutants.render_section(doc)
    assert lines[0].startswith("**1 of 3 mutants killed") and "10.0 min" in lines[0]
    table = [ln for ln in lines if ln.startswith("| `")]
    assert len(table) == 3
    assert "K03 ✓, X01 ✓" in table[0] and "X02*" in table[0]
    assert "K13 ✗" in table[1] and "| K14 |" in table[1] and "**gap**" in table[1]
    assert "**survived**" in table[2]
    assert any("config-drops-momentum" in ln and "K13 did not flip" in ln for ln in lines)


def test_results_round_trip_and_render_without_tensorflow(tmp_path):
    doc = mutants.document(_rows(), {"flavour": "keras3", "keras": "3.15.1", "tensorflow": "2.21.0"}, 61.0)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    assert mutants.load(path) == doc
    code = BLOCK_TF + (f"from bnspec import mutants\nfrom pathlib import Path\n"
                       f"print(mutants.render_section(mutants.load(Path({str(path)!r})))[0])\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 3 mutants killed" in proc.stdout
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BnspecError, match="not a mutant results file"):
        mutants.load(tmp_path / "bad.json")


# --------------------------------------------------------------------------- every mutant is really wrong


@pytest.fixture(scope="module")
def keras():
    from bnspec import flavours

    if flavours.FAMILY[flavours.current()] != "keras3":
        pytest.skip("mutants patch Keras 3's BatchNormalization")
    try:
        return flavours.keras_module()
    except BnspecError as exc:
        pytest.skip(str(exc))


def _layer(cls, rng, shape=(None, 8), **kwargs):
    layer = cls(**kwargs)
    layer.build(shape)
    n = shape[layer.axis]
    layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    layer.beta.assign(rng.normal(0.0, 1.0, n).astype(np.float32))
    layer.moving_mean.assign(rng.normal(0.0, 2.0, n).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 4.0, n).astype(np.float32))
    return layer


def _state(layer):
    return {k: np.array(getattr(layer, a).numpy(), np.float64) for k, a in
            (("gamma", "gamma"), ("beta", "beta"), ("mean", "moving_mean"), ("var", "moving_variance"))}


def _x(rng, shape, offset=1.0):
    return (rng.normal(0, 1, shape) * rng.uniform(0.5, 3, shape[-1]) + rng.normal(0, offset, shape[-1])).astype(np.float32)


def _beyond(err, bound) -> bool:
    return bool(np.any(np.asarray(err) > np.asarray(bound)))


# Each probe builds a layer of `cls`, runs it and returns True when it deviates from the numpy
# reference beyond the float32 bound the claim tests use (False: consistent with BN as specified).


def probe_train(cls, rng, keras):
    layer = _layer(cls, rng)
    s, x = _state(layer), _x(rng, (60, 8), 0.3)
    y = np.asarray(layer(x, training=True), np.float64)
    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], 1e-3)
    return _beyond(np.abs(y - ref), reference.bn_bound(x, s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=60))


def _inference(cls, rng, training):
    layer = _layer(cls, rng)
    s, x = _state(layer), _x(rng, (60, 8), 2.0)
    y = np.asarray(layer(x) if training is None else layer(x, training=training), np.float64)
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
    moved = not (np.array_equal(_state(layer)["mean"], s["mean"]) and np.array_equal(_state(layer)["var"], s["var"]))
    return _beyond(np.abs(y - ref), reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)), moved


def probe_inference(cls, rng, keras):
    return any(_inference(cls, rng, False))


def probe_inference_none(cls, rng, keras):
    return any(_inference(cls, rng, None))


def probe_inference_state(cls, rng, keras):
    return _inference(cls, rng, False)[1]


def _update(cls, rng, shape, momentum):
    layer = _layer(cls, rng, (None,) + shape[1:], momentum=momentum)
    s, x = _state(layer), _x(rng, shape)
    layer(x, training=True)
    mean, var = reference.batch_stats(x)
    b_mean, b_var = reference.ema_bounds(x, s["mean"], s["var"], momentum)
    after = _state(layer)
    return _beyond(np.abs(after["mean"] - reference.ema(s["mean"], mean, momentum)), b_mean) or \
        _beyond(np.abs(after["var"] - reference.ema(s["var"], var, momentum)), b_var)


def probe_update(cls, rng, keras):
    return _update(cls, rng, (60, 8), 0.9)


def probe_conv_update(cls, rng, keras):
    return _update(cls, rng, (8, 4, 4, 3), 0.0)


def probe_conv(cls, rng, keras):
    layer = _layer(cls, rng, (None, 4, 4, 3))
    s, x = _state(layer), _x(rng, (8, 4, 4, 3))
    y = np.asarray(layer(x, training=True), np.float64)
    ref, mean, var = reference.bn_train(x, s["gamma"], s["beta"], 1e-3)
    return _beyond(np.abs(y - ref), reference.bn_bound(x, s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=128))


def probe_frozen(cls, rng, keras):
    layer = _layer(cls, rng)
    layer.trainable = False
    s, x = _state(layer), _x(rng, (60, 8), 2.0)
    y = np.asarray(layer(x, training=True), np.float64)
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
    return _beyond(np.abs(y - ref), reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)) or \
        not np.array_equal(_state(layer)["mean"], s["mean"])


def probe_mask(cls, rng, keras):
    layer = _layer(cls, rng, (None, 6, 3))
    s = _state(layer)
    x = _x(rng, (5, 6, 3))
    mask = rng.random((5, 6)) > 0.3
    mask[:, 0] = True
    x[~mask] = 50.0
    y = np.asarray(layer(x, training=True, mask=mask), np.float64)[mask]
    ref, mean, var = reference.bn_train(x[mask], s["gamma"], s["beta"], 1e-3)
    return _beyond(np.abs(y - ref), reference.bn_bound(x[mask], s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=30))


def probe_offset(cls, rng, keras):
    # features at 1e4 +- 1: a two-pass variance is still accurate in float32, E[x^2]-E[x]^2 is not
    layer = _layer(cls, rng)
    s = _state(layer)
    x = (1e4 + rng.normal(0, 1, (60, 8))).astype(np.float32)
    y = np.asarray(layer(x, training=True), np.float64)
    ref = reference.bn_train(x, s["gamma"], s["beta"], 1e-3)[0]
    return not np.all(np.abs(y - ref) <= 0.05)  # also True for NaN


def probe_gradient(cls, rng, keras):
    import tensorflow as tf

    layer = _layer(cls, rng)
    s, x = _state(layer), _x(rng, (60, 8))
    dy = rng.normal(0, 1, (60, 8)).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer(xt, training=True) * dy)
    gx = np.asarray(tape.gradient(loss, xt), np.float64)
    ref = reference.bn_backward(dy, x, s["gamma"], 1e-3)["x"]
    return _beyond(np.abs(gx - ref), reference.bn_backward_bound(dy, x, s["gamma"], 1e-3)["x"])


def probe_mixed(cls, rng, keras):
    layer = _layer(cls, rng, (None, 16), dtype="mixed_float16")
    layer.moving_mean.assign((200 + rng.normal(0, 1, 16)).astype(np.float32))
    s = _state(layer)
    x = (200 + rng.normal(0, 3, (60, 16))).astype(np.float32)
    xin = x.astype(np.float16).astype(np.float64)
    deviates = False
    for training in (True, False):
        y = np.asarray(layer(x, training=training), np.float64)
        if training:
            ref, mean, var = reference.bn_train(xin, s["gamma"], s["beta"], 1e-3)
            bound = reference.bn_bound(xin, s["gamma"], s["beta"], mean, var, 1e-3, n_reduce=60)
        else:
            ref = reference.bn_inference(xin, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
            bound = reference.bn_bound(xin, s["gamma"], s["beta"], s["mean"], s["var"], 1e-3)
        deviates |= _beyond(np.abs(y - ref), reference.float16_output_bound(ref, bound))
        s = _state(layer)  # the training call moved the moving statistics
    return deviates


def probe_config(cls, rng, keras):
    layer = _layer(cls, rng, momentum=0.9, epsilon=1e-2)
    clone = cls.from_config(layer.get_config())
    return (clone.momentum, clone.epsilon) != (0.9, 1e-2)


def probe_weights(cls, rng, keras):
    layer = _layer(cls, rng)
    names = sorted(w.path.split("/")[-1] for w in layer.trainable_weights)
    return names != ["beta", "gamma"] or layer.count_params() != 32


def probe_save_load(cls, rng, keras):
    import tempfile

    layer = _layer(cls, rng)
    model = keras.Sequential([keras.Input((8,)), layer])
    with tempfile.TemporaryDirectory() as tmp, _resolving(keras, cls):
        model.save(f"{tmp}/m.keras")
        loaded = keras.models.load_model(f"{tmp}/m.keras").layers[-1]
    assert type(loaded) is cls, "the .keras file did not load back into the same class"
    return not all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), loaded.get_weights()))


@contextlib.contextmanager
def _resolving(keras, cls):
    """`.keras` loading resolves BatchNormalization to `cls` inside the block (mutants.installed)."""
    name = getattr(cls, "bnspec_mutant", None)
    if name is None:
        yield
        return
    with mutants.installed(keras, name) as installed:
        assert installed is cls
        yield


PROBES = {name.removeprefix("probe_"): fn for name, fn in globals().items() if name.startswith("probe_")}


@pytest.mark.parametrize("name", [m.name for m in mutants.CATALOGUE])
def test_every_mutant_is_really_wrong(keras, name):
    cls = mutants.mutant_class(keras, name)
    assert cls.bnspec_mutant == name and issubclass(cls, keras.layers.BatchNormalization)
    assert cls.__name__ == "BatchNormalization"  # what bnspec.model.is_bn and .keras files see
    rng = np.random.default_rng(5)
    deviates = {p: PROBES[p](cls, rng, keras) for p in mutants.BY_NAME[name].shows}
    assert all(deviates.values()), f"{name} matches the reference on {[p for p, d in deviates.items() if not d]}"


@pytest.mark.parametrize("which", ["keras", "identity"])
def test_real_layer_and_the_harness_control_pass_every_probe(keras, which):
    """The probes have no false alarms: Keras' own layer, and the harness' hooked re-implementation
    with no deviation, agree with the reference on every one."""
    cls = keras.layers.BatchNormalization if which == "keras" else mutants.mutant_class(keras, "identity")
    rng = np.random.default_rng(5)
    deviates = [p for p, fn in PROBES.items() if fn(cls, rng, keras)]
    assert deviates == []


def test_identity_is_bitwise_keras(keras):
    """The hooked call() computes exactly what Keras' call() does: outputs and moving statistics."""
    rng = np.random.default_rng(9)
    identity = mutants.mutant_class(keras, "identity")
    for shape in ((None, 8), (None, 4, 4, 3)):
        a = _layer(keras.layers.BatchNormalization, rng, shape, momentum=0.9)
        b = _layer(identity, rng, shape, momentum=0.9)
        b.set_weights(a.get_weights())
        x = _x(rng, (6,) + shape[1:])
        for training in (True, False, None):
            ya = np.asarray(a(x) if training is None else a(x, training=training))
            yb = np.asarray(b(x) if training is None else b(x, training=training))
            assert np.array_equal(ya, yb), (shape, training)
        assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


# --------------------------------------------------------------------------- installing (a child process)

INSTALL = """
import os, sys, tempfile
import numpy as np
os.environ["BNSPEC_MUTANT"] = "gamma-ignored"
from bnspec import flavours, probes
from bnspec.model import ModelSpec, bn_layers, build
keras = flavours.keras_module()
import keras.src.layers as src_layers
from keras.src.layers.normalization import batch_normalization as bn_module
cls = keras.layers.BatchNormalization
assert cls.bnspec_mutant == "gamma-ignored" and flavours.keras_module().layers.BatchNormalization is cls
assert src_layers.BatchNormalization is cls and bn_module.BatchNormalization is cls
rng = np.random.default_rng(0)
layer = probes.make_bn(keras, 4, rng)
assert type(layer) is cls
model = build(ModelSpec(), keras)
assert all(type(b) is cls for b in bn_layers(model)), "the notebook model holds the mutant"
probes.randomise_model_bn(model, rng)
path = os.path.join(tempfile.mkdtemp(), "m.keras")
model.save(path)
loaded = keras.models.load_model(path)
assert all(type(b) is cls for b in bn_layers(loaded)), [type(b) for b in bn_layers(loaded)]
x = rng.normal(0, 1, (5, 784)).astype(np.float32)
assert np.allclose(np.asarray(model(x)), np.asarray(loaded(x)), atol=1e-5)
seq = keras.Sequential([keras.Input((4,)), layer])
y = np.asarray(layer(np.ones((3, 4), "float32"), training=False))
s = probes.bn_state(layer)
with_gamma = s["gamma"] * (1 - s["mean"]) / np.sqrt(s["var"] + s["eps"]) + s["beta"]
assert not np.allclose(y[0], with_gamma, atol=1e-4), "gamma was applied"
print("ok", cls.__module__)
"""


def test_install_swaps_the_class_everywhere_including_keras_files(keras):
    env = dict(os.environ)
    env.pop("BNSPEC_MUTANT", None)
    proc = run_python(INSTALL, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")


def test_unknown_mutant_in_the_environment_is_one_clear_error(keras):
    code = "from bnspec import flavours\ntry:\n    flavours.keras_module()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    proc = run_python(code, env=dict(os.environ, BNSPEC_MUTANT="wrongbn"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("BnspecError unknown mutant 'wrongbn'; known:")


def test_installed_swaps_and_restores_in_process(keras):
    real = keras.layers.BatchNormalization
    with mutants.installed(keras, "beta-ignored") as cls:
        assert keras.layers.BatchNormalization is cls and cls.bnspec_mutant == "beta-ignored"
        with pytest.raises(BnspecError, match="already installed"):
            mutants.install(keras, "gamma-ignored")
    assert keras.layers.BatchNormalization is real
    from keras.src import api_export

    assert api_export.get_symbol_from_name("keras.layers.BatchNormalization") is real
