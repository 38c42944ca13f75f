"""The float32 bound of `bnspec audit --export` (bnspec.audit.rules, bound, graph), without any export runtime:

* on chain models it is network_bound's (bnspec.subjects.export): equal with network_bound's ReLU rule, no
  larger with the audit's own (dead ReLU elements carry no error);
* on general graphs (ResNet50: stride-2 convolutions, ZeroPadding, MaxPooling, Add; and a zoo of the other
  layers it has rules for) every layer's float64 model reproduces Keras' float32 output within that layer's
  own rounding, and Keras' float32 activations lie within the propagated bound of the exact (float64)
  evaluation at every tensor: the Keras half of the bound holds, measured;
* a layer without a rule, or a model without a graph, gives no verdict (never an invented tolerance); NaN is
  never within the bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnspec.audit import bound, drift, graph, rules
from bnspec.audit import export as measuring
from bnspec.audit.findings import target
from bnspec.reference import LAMBDA
from bnspec.subjects import export as ex
from tests.audit.export_subjects import resnet50
from tests.claims.test_deploy import _set_weights as _randomise  # network_bound's test subjects' weights


def _chain(keras, kind: str, rng):
    L = keras.layers
    if kind == "mlp_tanh":
        layers = [L.Dense(100, name="d0"), L.BatchNormalization(name="b0"), L.Activation("tanh", name="t0"),
                  L.Dense(100, name="d1"), L.BatchNormalization(name="b1"), L.Activation("tanh", name="t1"),
                  L.Dense(10, name="head")]
        shape = (784,)
    else:
        cf = kind == "conv_nchw"
        fmt, axis = ("channels_first", 1) if cf else ("channels_last", -1)
        layers = [L.Conv2D(6, 3, use_bias=False, data_format=fmt, name="conv_0"), L.BatchNormalization(axis=axis, name="bn_0"),
                  L.ReLU(name="relu_0"), L.Conv2D(5, 3, padding="same", data_format=fmt, name="conv_1"),
                  L.BatchNormalization(axis=axis, name="bn_1"), L.ReLU(name="relu_1"),
                  L.GlobalAveragePooling2D(data_format=fmt, name="gap"), L.Dense(4, name="head")]
        shape = (3, 8, 8) if cf else (8, 8, 3)
    model = keras.Sequential([keras.Input(shape)] + layers) if kind == "conv_nhwc" else None
    if model is None:
        inp = h = keras.Input(shape)
        for layer in layers:
            h = layer(h)
        model = keras.Model(inp, h)
    x = rng.normal(0.0, 1.0, (7, *shape)).astype(np.float32)
    model(x)
    _randomise(layers, rng)
    return model, layers, x


def _float64_values(cap) -> dict:
    """Every tensor of the captured graph evaluated in float64 from the float32 input (rules.evaluate chained):
    the exact evaluation, to rounding of float64."""
    values = {t: np.asarray(cap.values[t], np.float64) for t in cap.inputs}
    for op in cap.ops:
        xs = [values[t] for t in op.inputs]
        zero = [np.zeros_like(a) for a in xs]
        values[op.output] = rules.evaluate(op, xs, zero, zero).y
    return values


@pytest.mark.parametrize("kind", ["conv_nhwc", "conv_nchw", "mlp_tanh"])
def test_bound_is_network_bound_on_chains(keras, kind):
    rng = np.random.default_rng(20150211)
    model, layers, x = _chain(keras, kind, rng)
    _, nb_keras, nb_export = ex.network_bound(x, ex.plan_of(layers))
    cap = graph.capture(model, x)
    exact = _float64_values(cap)  # the magnitudes network_bound reads: float64, not Keras' float32
    out = cap.outputs[0]
    same = bound.propagate(cap.ops, exact, cap.inputs, keep=cap.outputs, dead_relu=False)
    own = bound.propagate(cap.ops, exact, cap.inputs, keep=cap.outputs)
    assert same.ok and own.ok, same.why_not() + own.why_not()
    assert len(same.folded) == 2  # both BN layers follow a Dense/Conv: the export side carries the folding terms
    # float64 evaluations of one formula in another order: ~1e-16 relative per operation; 1e-9 leaves margin
    k, e = LAMBDA * same.sk[out], LAMBDA * same.se[out]
    if kind == "mlp_tanh":  # tanh: the audit's U_FN (8u, the kernels' few ulp) instead of network_bound's u
        assert np.all(k >= nb_keras * (1 - 1e-9)) and np.all(e >= nb_export * (1 - 1e-9))
        assert np.all(k <= 8 * nb_keras) and np.all(e <= 8 * nb_export)  # each term grows by at most U_FN/u
    else:
        np.testing.assert_allclose(k, nb_keras, rtol=1e-9)
        np.testing.assert_allclose(e, nb_export, rtol=1e-9)
        # the audit's ReLU rule only drops the error of elements every evaluation clips: never larger
        assert np.all(own.bound(out) <= (nb_keras + nb_export) * (1 + 1e-9))
        assert np.any(own.bound(out) < nb_keras + nb_export)  # and here it matters


def _zoo(keras, rng):
    """The other layers the bound has rules for, in one graph: strided 'same' convolutions on odd sizes (TF's
    asymmetric padding), dilation, depthwise, Conv1D, pooling of both kinds and paddings, merges, softmax."""
    L = keras.layers
    inp = keras.Input((9, 9, 3))
    a = L.Conv2D(4, 3, strides=2, padding="same", name="c_s2")(inp)
    a = L.BatchNormalization(name="bn_a")(a)
    a = L.LeakyReLU(negative_slope=0.1, name="leaky")(a)
    b = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(inp)
    b = L.BatchNormalization(name="bn_b")(b)
    b = L.ReLU(max_value=6.0, name="relu6")(b)
    b = L.Conv2D(4, 3, dilation_rate=2, padding="same", name="c_dil")(b)
    b = L.AveragePooling2D(3, strides=2, padding="same", name="avg")(b)
    m = L.Multiply(name="mul")([a, b])
    s = L.Subtract(name="sub")([a, b])
    c = L.Concatenate(name="cat")([m, s, L.Maximum(name="max")([a, b])])
    c = L.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(c)
    c = L.MaxPooling2D(2, padding="same", name="maxp")(c)
    c = L.Cropping2D(((0, 1), (1, 0)), name="crop")(c)
    c = L.Activation("sigmoid", name="sig")(c)
    r = L.Reshape((-1, 12), name="reshape")(c)
    r = L.Conv1D(5, 2, padding="same", name="c1d")(r)
    r = L.BatchNormalization(name="bn_r")(r)
    g = L.Average(name="avg2")([L.GlobalAveragePooling1D(name="gap1")(r), L.GlobalMaxPooling1D(name="gmp1")(r)])
    out = L.Softmax(name="softmax")(L.Dense(6, activation="tanh", name="d")(L.Flatten(name="flat")(g)))
    model = keras.Model(inp, out, name="zoo")
    x = rng.standard_normal((6, 9, 9, 3)).astype(np.float32)
    model(x)
    _randomise([layer for layer in model.layers if "BatchNorm" in type(layer).__name__], rng)
    return model, x


@pytest.mark.parametrize("subject", ["resnet50", "zoo"])
def test_keras_lies_within_its_half_of_the_bound(keras, subject):
    """Every layer self-checks (its float64 model reproduces Keras' output within its own rounding), and at
    every tensor |Keras' float32 value - the float64 evaluation| <= LAMBDA * sk."""
    rng = np.random.default_rng(7)
    model, x = resnet50(keras, rng) if subject == "resnet50" else _zoo(keras, rng)
    cap = graph.capture(model, x)
    every = {op.output for op in cap.ops}
    gb = bound.propagate(cap.ops, cap.values, cap.inputs, keep=every)
    assert gb.ok, gb.why_not()
    assert gb.checked == len(cap.ops) and gb.worst_self_check <= 1.0
    if subject == "resnet50":
        assert len(gb.bn) == 53 and len(gb.folded) == 53
        assert {op.kind for op in cap.ops} == {"conv", "bn", "act", "add", "shape", "maxpool", "gap", "dense"}
    exact = _float64_values(cap)
    worst = 0.0
    for t in every:
        err = np.abs(np.asarray(cap.values[t], np.float64) - exact[t])
        limit = LAMBDA * gb.sk[t]
        assert np.all(np.isfinite(err))
        assert np.all((err <= limit) | (err == 0)), f"Keras beyond its bound at {next(o.path for o in cap.ops if o.output == t)}"
        worst = max(worst, float(np.max(np.where(limit > 0, err / np.where(limit > 0, limit, 1), 0))))
    assert worst > 0  # the comparison saw rounding (not two copies of one array)
    np.testing.assert_array_equal(cap.output(), keras.ops.convert_to_numpy(model(x, training=False)))  # the capture is model(x, training=False)


def test_a_layer_without_a_rule_gives_no_verdict(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    h = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="conv")(inp))
    h = L.LayerNormalization(name="ln")(h)
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(h)), name="m")
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)
    run = measuring.measure(model, x, [], tmp_path)
    assert run.bound is None and "m/ln (LayerNormalization)" in run.why_no_bound
    assert np.all(np.isfinite(run.y_keras))


def test_a_subclassed_model_gives_no_verdict(keras, tmp_path):
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.dense, self.bn = keras.layers.Dense(4), keras.layers.BatchNormalization()

        def call(self, x, training=None):
            return self.bn(self.dense(x), training=training)

    model = Net()
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    model(x)
    run = measuring.measure(model, x, [], tmp_path)
    assert run.bound is None and "no Keras 3 functional graph" in run.why_no_bound


class _Art:
    fmt, runtime, runtime_version, converter, converter_version, backend = "onnx", "rt", "1", "conv", "1", "tensorflow"

    def constants(self):
        return []


def test_nan_is_never_within_the_bound():
    y_keras = np.array([[0.5, 0.25]])
    run = measuring.ExportRun([], y_keras, 1, bound=np.full((1, 2), 1e-3))
    served = measuring.Served("onnx", art=_Art(), y=np.array([[0.5, np.nan]]), census=ex.Census({"Gemm": 1}),
                              locate_note="not compared here")
    run.served = [served]
    found, _, measured = drift.judge(run, target(None), "m")
    assert [(f.severity, f.check) for f in found] == [("error", "export-drift")]
    assert measured["onnx"]["within"] is False and measured["onnx"]["nonfinite_outputs"] == 1
    served.y = y_keras + 5e-4  # the control: finite and within
    found, _, _ = drift.judge(run, target(None), "m")
    assert [(f.severity, f.id) for f in found] == [("info", "D01")]
    run.bound = None  # no bound: NaN is still an error; a finite drift has no verdict, which the default
    assert drift.judge(run, target(None), "m")[0][0].severity == "warning"  # --fail-on warning reports
    served.y = np.array([[np.inf, 0.25]])
    assert drift.judge(run, target(None), "m")[0][0].severity == "error"


def test_a_loose_bound_is_said():
    """tightness: median bound / RMS output; a bound above the output's own scale is flagged in the finding
    (within it says little), a tight one is not."""
    y_keras = np.array([[0.5, 0.25]])
    run = measuring.ExportRun([], y_keras, 1, bound=np.full((1, 2), 1e-3))
    served = measuring.Served("onnx", art=_Art(), y=y_keras + 5e-4, census=ex.Census({"Gemm": 1}),
                              locate_note="not compared here")
    run.served = [served]
    assert drift.tightness(run) == pytest.approx(1e-3 / np.sqrt((0.25 + 0.0625) / 2))
    f = drift.judge(run, target(None), "m")[0][0]
    assert "loose" not in f.title and not any("loose" in c for c in f.confirmed)
    run.bound = np.full((1, 2), 2.0)  # a bound of 2 on outputs of 0.25-0.5
    found, _, measured = drift.judge(run, target(None), "m")
    assert (found[0].severity, found[0].id) == ("info", "D01") and "the bound is loose" in found[0].title
    assert measured["onnx"]["bound_over_output"] > 1.0
