"""The anchors' own tests (A01-A19): ONNX's BatchNormalization cases run through Keras, and the behaviours
PyTorch's and Keras' test files assert, measured on Keras' layer.

Size: one module for the topic's 19 claims (the registry wants a topic's tests in its twin module); the
ONNX helpers and the exact second-derivative formula are at the top, each claim's test below them.

Expected values never come from Keras: ONNX's cases come from the installed onnx (its own case definitions,
its reference evaluator, the stored outputs of its pytorch-converted models), PyTorch's from torch itself,
and everything else from the numpy float64 reference (bnspec.reference) or from closed forms derived here.
Each bound is derived beside the comparison that uses it; U32 = 2^-24 and U64 = 2^-53 are the unit roundoffs.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from bnspec import reference
from bnspec.measure.backend import to_numpy
from bnspec.reference import U32
from tests.claims import _kit as probes

U64 = 2.0**-53
NO_ONNX = ("onnx is not installed: A01-A03 run ONNX's own BatchNormalization cases and need its case definitions "
           "and reference evaluator (pip install onnx)")
NO_TORCH = "torch is not installed: this case measures PyTorch's own op (pip install -e '.[torch]')"
ONNX_DEFAULTS = {"momentum": 0.9, "epsilon": 1e-5}  # the operator spec's defaults (checked against the schema)
KERAS_DEFAULTS = {"momentum": 0.99, "epsilon": 1e-3}


def _ops(keras):
    """keras.ops on Keras 3 (any backend); on tf_keras (Keras 2 has no keras.ops) the TensorFlow functions used
    here under the same names."""
    if hasattr(keras, "ops"):
        return keras.ops
    import tensorflow as tf

    return SimpleNamespace(convert_to_tensor=tf.convert_to_tensor, sum=tf.reduce_sum)


# --------------------------------------------------------------------------- ONNX helpers

@pytest.fixture(scope="module")
def onnx():
    return pytest.importorskip("onnx", reason=NO_ONNX)


def _onnx_evidence(onnx) -> dict:
    """The onnx version and the schema's defaults next to Keras' (the evidence every ONNX case records)."""
    schema = onnx.defs.get_schema("BatchNormalization")
    defaults = {k: float(onnx.helper.get_attribute_value(schema.attributes[k].default_value))
                for k in ("momentum", "epsilon")}
    return {"onnx_version": onnx.__version__, "onnx_opset": int(schema.since_version),
            "onnx_default_momentum": defaults["momentum"], "onnx_default_epsilon": defaults["epsilon"],
            "keras_default_momentum": KERAS_DEFAULTS["momentum"], "keras_default_epsilon": KERAS_DEFAULTS["epsilon"]}


def _node_cases(onnx) -> dict:
    """ONNX's own BatchNormalization node cases (name -> TestCase with model and data set), from the installed
    onnx's case definitions. Importing the case module runs its export functions (each with numpy's seed 0,
    onnx.backend.test.case.base), which append to the node package's case list; onnx 1.23 ships no .pb files
    for them. Falls back to onnx's public collect_testcases (which imports every node module: slower)."""
    node = importlib.import_module("onnx.backend.test.case.node")
    try:
        importlib.import_module("onnx.backend.test.case.node.batch_normalization")
        found = list(getattr(node, "_NodeTestCases", []))
    except ImportError:
        found = []
    if not any(c.model.graph.node[0].op_type == "BatchNormalization" for c in found):
        found = node.collect_testcases("BatchNormalization")
    return {c.name: c for c in found if c.model.graph.node[0].op_type == "BatchNormalization"}


def _attributes(onnx, model, node) -> dict:
    """The node's attributes with the defaults of the schema at the model's opset filled in (epsilon, momentum,
    training_mode)."""
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    schema = onnx.defs.get_schema(node.op_type, max_inclusive_version=opset)
    out = {k: onnx.helper.get_attribute_value(a.default_value) for k, a in schema.attributes.items()
           if a.default_value.name}
    out.update({a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
    return out


def _evaluate(onnx, model, inputs) -> list[np.ndarray]:
    """ONNX's reference evaluator on the model (the expected outputs)."""
    from onnx.reference import ReferenceEvaluator

    names = [i.name for i in model.graph.input]
    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))]


def _other_order_bound(x, gamma, beta, mean, var, eps, axis, n_reduce=0):
    """Worst-case float32 error of gamma*(x-mean)/sqrt(var+eps)+beta evaluated in an order other than
    TensorFlow's: reference.bn_bound allows 4 roundings on the product path (rsqrt, *gamma, x*inv, mean*inv);
    ONNX's numpy evaluator rounds x-mean, s*(.), var+eps (half a rounding through the sqrt), sqrt and the
    division (4.5), PyTorch 0.3's CPU kernel (x-mean)*invstd*w+b with invstd = 1/sqrt(var+eps) at most 6: two
    more roundings of |x-mean|*inv <= (|x|+|mean|)*inv cover both; the statistics' reduction errors are
    bn_bound's (numpy's pairwise float32 sums are within the recursive-summation bound n*u)."""
    x = np.asarray(x, np.float64)
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    inv = np.abs(np.asarray(gamma, np.float64)).reshape(shape) / np.sqrt(np.asarray(var, np.float64).reshape(shape) + eps)
    extra = 2 * U32 * (np.abs(x) + np.abs(np.asarray(mean, np.float64).reshape(shape))) * inv
    return reference.bn_bound(x, gamma, beta, mean, var, eps, axis=axis, n_reduce=n_reduce) + extra


def _other_default_epsilon(eps: float) -> float:
    """The framework default the case does not use: Keras' 1e-3, or ONNX's 1e-5 where the case's epsilon is
    Keras' (ONNX stores float32 attributes: 1e-3 arrives as 0.0010000000475)."""
    return ONNX_DEFAULTS["epsilon"] if abs(eps - KERAS_DEFAULTS["epsilon"]) <= 1e-9 else KERAS_DEFAULTS["epsilon"]


def _keras_onnx_layer(keras, x_shape, scale, bias, mean, var, eps, momentum):
    layer = keras.layers.BatchNormalization(axis=1, epsilon=float(eps), momentum=float(momentum))
    layer.build((None,) + tuple(x_shape[1:]))
    probes.set_bn_state(layer, {"gamma": scale, "beta": bias, "mean": mean, "var": var})
    return layer


# --------------------------------------------------------------------------- A01: ONNX's node cases

NODE_CASES = ("test_batchnorm_example", "test_batchnorm_epsilon",
              "test_batchnorm_example_training_mode", "test_batchnorm_epsilon_training_mode")


@pytest.fixture(scope="module")
def node_cases(onnx):
    return _node_cases(onnx)


@pytest.mark.claim("A01")
@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node_cases(verdict, keras, onnx, node_cases, case):
    if case not in node_cases:
        pytest.skip(f"onnx {onnx.__version__} defines no BatchNormalization node case {case!r} "
                    f"(it has: {', '.join(sorted(node_cases)) or 'none'})")
    tc = node_cases[case]
    node = tc.model.graph.node[0]
    attrs = _attributes(onnx, tc.model, node)
    inputs, stored = tc.data_sets[0]
    x, scale, bias, mean, var = (np.asarray(a) for a in inputs)
    eps, momentum, training = float(attrs["epsilon"]), float(attrs["momentum"]), bool(attrs.get("training_mode", 0))
    expected = _evaluate(onnx, tc.model, inputs)
    layer = _keras_onnx_layer(keras, x.shape, scale, bias, mean, var, eps, momentum)
    y = to_numpy(layer(x, training=training), np.float64)
    m = x.size // x.shape[1]
    xd = x.astype(np.float64)
    if training:
        exact, bmean, bvar = reference.bn_train(xd, scale, bias, eps, axis=1)
    else:
        bmean, bvar = np.asarray(mean, np.float64), np.asarray(var, np.float64)
        exact = reference.bn_inference(xd, scale, bias, bmean, bvar, eps, axis=1)
    n_reduce = m if training else 0
    b_keras = reference.bn_bound(xd, scale, bias, bmean, bvar, eps, axis=1, n_reduce=n_reduce)
    b_onnx = _other_order_bound(xd, scale, bias, bmean, bvar, eps, axis=1, n_reduce=n_reduce)
    # each is within its own bound of the exact result, so of each other within the sum
    ok = verdict.within("output_keras_vs_onnx", y - expected[0], b_keras + b_onnx)
    verdict.within("output_keras_vs_exact", y - exact, b_keras)
    verdict.within("output_onnx_vs_exact", expected[0].astype(np.float64) - exact, b_onnx)
    verdict.within("onnx_evaluator_vs_stored_case_output", expected[0].astype(np.float64) - stored[0], b_onnx * 2)
    # the alternatives a wrong port would show: the other mode, and Keras' default epsilon
    if training:
        other = reference.bn_inference(xd, scale, bias, mean, var, eps, axis=1)
    else:
        other = reference.bn_train(xd, scale, bias, eps, axis=1)[0]
    verdict.power("other_mode_alternative", other - exact, b_keras + b_onnx, measured=True)  # both roundings in the bound
    alt_eps = _other_default_epsilon(eps)
    verdict.power("other_default_epsilon_alternative",
                  reference.bn_inference(xd, scale, bias, bmean, bvar, alt_eps, axis=1) - exact, b_keras + b_onnx,
                  measured=True)
    if training:
        mom32 = float(np.float32(momentum))  # the float32 momentum both store: no representation error between them
        exp_mean, exp_var = reference.ema(mean, bmean, mom32), reference.ema(var, bvar, mom32)
        b_mean, b_var = reference.ema_bounds(xd, mean, var, mom32, axis=1)  # Keras' and numpy's EMA: 4 roundings each
        k_mean, k_var = to_numpy(layer.moving_mean, np.float64), to_numpy(layer.moving_variance, np.float64)
        ok &= verdict.within("running_mean_keras_vs_onnx", k_mean - expected[1], 2 * b_mean)
        ok &= verdict.within("running_var_keras_vs_onnx", k_var - expected[2], 2 * b_var)
        verdict.within("running_mean_onnx_vs_exact", expected[1] - exp_mean, b_mean)
        verdict.within("running_var_onnx_vs_exact", expected[2] - exp_var, b_var)
        verdict.power("pytorch_momentum_alternative", reference.ema(mean, bmean, 1 - mom32) - exp_mean, b_mean)
        unbiased = reference.ema(var, bvar * m / (m - 1), mom32)
        verdict.power("unbiased_variance_alternative", unbiased - exp_var, b_var)
        # tf_keras' fused kernel (4-D input) feeds the m/(m-1)-corrected batch variance into the moving variance;
        # its bound: the same EMA roundings, the corrected statistic m/(m-1) times larger
        verdict.mechanism("unbiased_moving_variance",
                          verdict.within("running_var_keras_vs_unbiased_ema", k_var - unbiased, b_var * m / (m - 1)),
                          "Keras' moving variance against the EMA of the Bessel-corrected batch variance")
    verdict.record(**_onnx_evidence(onnx), case=case, epsilon=eps, momentum=momentum, training_mode=int(training),
                   onnx_test_rtol=float(tc.rtol), onnx_test_atol=float(tc.atol), elements_per_feature=m)
    e = verdict.evidence["output_keras_vs_onnx"]
    tail = ""
    if training:
        rv, rm = verdict.evidence["running_var_keras_vs_onnx"], verdict.evidence["running_mean_keras_vs_onnx"]
        rm_within = rm["ratio"] != "inf" and rm["ratio"] <= 1
        tail = (f"; running variance vs ONNX's {rv['value']:.2e} (bound {rv['bound']:.1e}), running mean "
                f"{'within' if rm_within else 'beyond'} its bound")
    verdict.conclude(ok, f"{case} (onnx {onnx.__version__}, epsilon {eps:g}, training_mode {int(training)}): output vs "
                         f"ONNX's reference evaluator {e['value']:.2e} (bound {e['bound']:.1e})" + tail)


# --------------------------------------------------------------------------- A02: pytorch-converted models

CONVERTED = ("test_BatchNorm1d_3d_input_eval", "test_BatchNorm2d_eval", "test_BatchNorm2d_momentum_eval",
             "test_BatchNorm3d_eval", "test_BatchNorm3d_momentum_eval")


def _read_tensor(onnx, path):
    from onnx import numpy_helper

    t = onnx.TensorProto()
    with open(path, "rb") as fh:
        t.ParseFromString(fh.read())
    return numpy_helper.to_array(t)


@pytest.mark.claim("A02")
@pytest.mark.parametrize("model_name", CONVERTED)
def test_onnx_pytorch_converted_eval_models(verdict, keras, onnx, model_name):
    from onnx import numpy_helper

    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "pytorch-converted", model_name)
    if not os.path.isfile(os.path.join(root, "model.onnx")):
        pytest.skip(f"onnx {onnx.__version__} ships no {model_name} model (backend/test/data/pytorch-converted)")
    model = onnx.load(os.path.join(root, "model.onnx"))
    node = model.graph.node[0]
    assert node.op_type == "BatchNormalization", f"{model_name}: a {node.op_type} node, not BatchNormalization"
    attrs = _attributes(onnx, model, node)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scale, bias, mean, var = (np.asarray(inits[n]) for n in node.input[1:5])
    x = _read_tensor(onnx, os.path.join(root, "test_data_set_0", "input_0.pb"))
    stored = _read_tensor(onnx, os.path.join(root, "test_data_set_0", "output_0.pb")).astype(np.float64)
    eps = float(attrs["epsilon"])
    layer = _keras_onnx_layer(keras, x.shape, scale, bias, mean, var, eps, 0.99)
    y = to_numpy(layer(x, training=False), np.float64)
    xd = x.astype(np.float64)
    exact = reference.bn_inference(xd, scale, bias, mean, var, eps, axis=1)
    b_keras = reference.bn_bound(xd, scale, bias, mean, var, eps, axis=1)
    b_other = _other_order_bound(xd, scale, bias, mean, var, eps, axis=1)  # PyTorch 0.3's / ONNX's evaluation
    ok = verdict.within("output_keras_vs_stored", y - stored, b_keras + b_other)
    verdict.within("output_keras_vs_exact", y - exact, b_keras)
    verdict.within("stored_vs_exact", stored - exact, b_other)
    feeds = {i.name: (x if i.name == node.input[0] else inits[i.name]) for i in model.graph.input}
    evaluated = _evaluate(onnx, model, [feeds[i.name] for i in model.graph.input])[0].astype(np.float64)
    verdict.within("onnx_evaluator_vs_stored", evaluated - stored, 2 * b_other)
    verdict.power("training_mode_alternative", reference.bn_train(xd, scale, bias, eps, axis=1)[0] - exact,
                  b_keras + b_other, measured=True)  # both roundings in the bound
    alt_eps = _other_default_epsilon(eps)
    verdict.power("other_default_epsilon_alternative",
                  reference.bn_inference(xd, scale, bias, mean, var, alt_eps, axis=1) - exact, b_keras + b_other,
                  measured=True)
    verdict.record(**_onnx_evidence(onnx), model=model_name, producer=f"{model.producer_name} {model.producer_version}",
                   model_opset=int(model.opset_import[0].version), epsilon=eps,
                   momentum_attribute=float(attrs.get("momentum", float("nan"))), input_shape=list(x.shape))
    e = verdict.evidence["output_keras_vs_stored"]
    verdict.conclude(ok, f"{model_name} (onnx {onnx.__version__}, epsilon {eps:g}): Keras inference vs the stored "
                         f"output {e['value']:.2e} (bound {e['bound']:.1e})")


# --------------------------------------------------------------------------- A03: ONNX's conventions

@pytest.mark.claim("A03")
@pytest.mark.parametrize("momentum", [0.7, 0.99])
def test_onnx_conventions_are_keras(verdict, keras, onnx, rng, momentum):
    from onnx import TensorProto, helper

    n, c, length, eps = 16, 5, 3, 1e-3
    x = (rng.normal(0, 1, (n, c, length)) * rng.uniform(0.5, 3, (1, c, 1)) + rng.normal(0, 2, (1, c, 1))).astype(np.float32)
    scale, bias = rng.uniform(0.5, 2, c).astype(np.float32), rng.normal(0, 1, c).astype(np.float32)
    mean, var = rng.normal(0, 2, c).astype(np.float32), rng.uniform(0.5, 4, c).astype(np.float32)
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"],
                            epsilon=eps, momentum=momentum, training_mode=1)
    vi = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph([node], "bn", [vi("x", x.shape)] + [vi(k, (c,)) for k in "sbmv"],
                              [vi("y", x.shape), vi("rm", (c,)), vi("rv", (c,))])
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 15)])
    y_onnx, rm, rv = _evaluate(onnx, model, [x, scale, bias, mean, var])
    layer = _keras_onnx_layer(keras, x.shape, scale, bias, mean, var, eps, momentum)
    y = to_numpy(layer(x, training=True), np.float64)
    m = x.size // c
    xd = x.astype(np.float64)
    exact, bmean, bvar = reference.bn_train(xd, scale, bias, eps, axis=1)
    b_out = reference.bn_bound(xd, scale, bias, bmean, bvar, eps, axis=1, n_reduce=m) \
        + _other_order_bound(xd, scale, bias, bmean, bvar, eps, axis=1, n_reduce=m)
    ok = verdict.within("output_keras_vs_onnx", y - y_onnx, b_out)
    mom32 = float(np.float32(momentum))
    b_mean, b_var = reference.ema_bounds(xd, mean, var, mom32, axis=1)
    ok &= verdict.within("running_mean_keras_vs_onnx", to_numpy(layer.moving_mean, np.float64) - rm, 2 * b_mean)
    ok &= verdict.within("running_var_keras_vs_onnx", to_numpy(layer.moving_variance, np.float64) - rv, 2 * b_var)
    # the conventions ONNX could have had instead: PyTorch's momentum (weight of the new batch) and the
    # unbiased running variance; each must be far from ONNX's own output
    verdict.power("pytorch_momentum_alternative", reference.ema(mean, bmean, 1 - mom32) - rm, b_mean)
    verdict.power("unbiased_variance_alternative", reference.ema(var, bvar * m / (m - 1), mom32) - rv, b_var)
    ev = _onnx_evidence(onnx)
    # the defaults as the operator's schema and Keras' constructor state them (ONNX stores float32 attributes)
    onnx_defaults = (abs(ev["onnx_default_momentum"] - ONNX_DEFAULTS["momentum"]) <= U32
                     and abs(ev["onnx_default_epsilon"] - ONNX_DEFAULTS["epsilon"]) <= U32 * ONNX_DEFAULTS["epsilon"])
    fresh = keras.layers.BatchNormalization()
    keras_defaults = float(fresh.momentum) == KERAS_DEFAULTS["momentum"] and float(fresh.epsilon) == KERAS_DEFAULTS["epsilon"]
    verdict.record(**ev, momentum=momentum, epsilon=eps, onnx_defaults_as_stated=onnx_defaults,
                   keras_defaults_as_stated=keras_defaults, elements_per_feature=m)
    ok = ok and onnx_defaults and keras_defaults
    e = verdict.evidence["running_mean_keras_vs_onnx"]
    verdict.conclude(ok, f"momentum {momentum}: Keras' running mean vs ONNX's {e['value']:.2e} (bound {e['bound']:.1e}); "
                         f"defaults ONNX {ev['onnx_default_momentum']:.4g}/{ev['onnx_default_epsilon']:.3g}, "
                         f"Keras {fresh.momentum}/{fresh.epsilon}")


# --------------------------------------------------------------------------- A04: second derivatives

def _exact_hvp(x, v, c, gamma, beta, eps, training, mean=None, var=None):
    """The Hessian-vector product H v of L = 0.5*sum(c*y^2), y = BN(x), per feature over the m rows, and the
    same formula with absolute values (for the rounding bound), and the alternative with stop_gradient on
    the mean inside the variance.

    Training mode (s = sqrt(var_B + eps), x_hat = (x - mean_B)/s, u = dL/dy = c*y):
      J w    = gamma * dx_hat(w),   dx_hat(w) = (w - mean(w) - x_hat*mean(x_hat*w)) / s
      J^T u  = gamma/s * (u - mean(u) - x_hat*mean(u*x_hat))            (= reference.bn_backward(u)["x"])
      H v    = J^T (c * J v) + d/dt[J(x+tv)^T] u
             = J^T (c * J v) - (mean(x_hat*v)/s) * J^T u - gamma/s * (a*dx_hat(v) + x_hat*mean(u*dx_hat(v)))
    with a = mean(u*x_hat); the last two terms differentiate s (ds = mean(x_hat*v)), x_hat and a along v.
    With stop_gradient on the mean inside the variance (tf.nn.moments), d var/dx = 2(x - sg(mean))/m loses the
    -2/m^2 * 1 1^T part when differentiated again: H_sg v = H v + 2*G*mean(v)/m per feature, G = dL/dvar =
    -(gamma*m*a)/(2 s^2), i.e. H_sg v = H v - gamma*a*mean(v)/s^2.
    Inference mode (fixed mean, var): y is affine in x, H v = gamma^2 * c * v / (var + eps)."""
    x, v, c = (np.asarray(a, np.float64) for a in (x, v, c))
    gamma, beta = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
    if not training:
        h = gamma**2 * c * v / (np.asarray(var, np.float64) + eps)
        return h, np.abs(h), h
    mu, var_b = x.mean(0), x.var(0)
    s = np.sqrt(var_b + eps)
    xh = (x - mu) / s
    u = c * (gamma * xh + beta)

    def dxh(w, xh_):
        return (w - w.mean(0) - xh_ * (xh_ * w).mean(0)) / s

    def jt(w, xh_):
        return gamma / s * (w - w.mean(0) - xh_ * (w * xh_).mean(0))

    a = (u * xh).mean(0)
    d = dxh(v, xh)
    h = jt(c * gamma * d, xh) - ((xh * v).mean(0) / s) * jt(u, xh) - gamma / s * (a * d + xh * (u * d).mean(0))
    h_sg = h - gamma * a * v.mean(0) / s**2
    # the same terms with every quantity and operation taken in absolute value (sums of absolute values), with
    # |x_hat| inflated by mean|x|/s: the centring x - mean cancels, and its rounding is relative to |x|, not |x - mean|
    ga, xa, va, ca = np.abs(gamma), np.abs(xh) + np.abs(x).mean(0) / s, np.abs(v), np.abs(c)
    ua = ca * (ga * xa + np.abs(beta))
    da = (va + va.mean(0) + xa * (xa * va).mean(0)) / s

    def jta(w):
        return ga / s * (w + w.mean(0) + xa * (w * xa).mean(0))

    aa = (ua * xa).mean(0)
    h_abs = jta(ca * ga * da) + ((xa * va).mean(0) / s) * jta(ua) + ga / s * (aa * da + xa * (ua * da).mean(0))
    return h, h_abs, h_sg


def _gradient_abs(x, c, gamma, beta, eps, training, mean=None, var=None):
    """The gradient dL/dx of L = 0.5*sum(c*y^2) with every term in absolute value (the scale of its rounding
    error): training gamma/s*(|u| + mean|u| + |x_hat|*mean|u*x_hat|) with u = c*y and |x_hat| inflated as in
    _exact_hvp; inference |gamma|/sqrt(var+eps)*|c|*|y|."""
    x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
    ga, ba = np.abs(np.asarray(gamma, np.float64)), np.abs(np.asarray(beta, np.float64))
    if not training:
        r = 1.0 / np.sqrt(np.asarray(var, np.float64) + eps)
        return ga * r * np.abs(c) * (ga * r * (np.abs(x) + np.abs(mean)) + ba)
    s = np.sqrt(x.var(0) + eps)
    xa = np.abs(x - x.mean(0)) / s + np.abs(x).mean(0) / s
    ua = np.abs(c) * (ga * xa + ba)
    return ga / s * (ua + ua.mean(0) + xa * (ua * xa).mean(0))


def _hvp_bound(h_abs, m, unit):
    """Rounding bound of any evaluation of H v: each of its terms is a product of at most 6 factors computed
    through at most 3 nested reductions of length m (mean, the variance, then mean(x_hat*w) and mean(u*dx_hat)),
    so its relative error is at most (3m + 16) roundings of the term's absolute value (Higham's gamma_k for the
    sums, a few more for the products and the statistics' square root): |fl(Hv) - Hv| <= (3m+16)*unit*H_abs."""
    return (3 * m + 16) * unit * h_abs


def _keras_hvp(name, keras, loss_fn, x, v, dtype):
    """(H v, gradient) at x by double backprop through the run's backend."""
    if name == "tensorflow":
        import tensorflow as tf

        xt, vt = tf.constant(x, dtype=dtype), tf.constant(v, dtype=dtype)
        with tf.GradientTape() as outer:
            outer.watch(xt)
            with tf.GradientTape() as inner:
                inner.watch(xt)
                loss = loss_fn(xt)
            g = inner.gradient(loss, xt)
            gv = tf.reduce_sum(g * vt)
        return to_numpy(outer.gradient(gv, xt), np.float64), to_numpy(g, np.float64)
    if name == "torch":
        import torch

        xt = keras.ops.convert_to_tensor(x, dtype=dtype).detach().clone().requires_grad_(True)
        vt = keras.ops.convert_to_tensor(v, dtype=dtype)
        (g,) = torch.autograd.grad(loss_fn(xt), xt, create_graph=True)
        (h,) = torch.autograd.grad((g * vt).sum(), xt)
        return to_numpy(h, np.float64), to_numpy(g, np.float64)
    if name == "jax":
        import jax
        import jax.numpy as jnp

        def pure(xv):  # Keras' layer reads its variables inside a stateless scope (no state updates under tracing)
            with keras.StatelessScope():
                return loss_fn(xv)

        grad = jax.grad(pure)
        xj, vj = jnp.asarray(x, dtype=dtype), jnp.asarray(v, dtype=dtype)
        h = jax.grad(lambda xv: jnp.vdot(grad(xv), vj))(xj)
        return to_numpy(h, np.float64), to_numpy(grad(xj), np.float64)
    raise ValueError(f"unknown backend {name!r}")


def _torch_hvp(torch, x, v, c, gamma, beta, mean, var, eps, training, dtype):
    """(H v, gradient) of the same loss through torch.nn.functional.batch_norm (PyTorch's own double backward)."""
    import torch.nn.functional as F

    tdt = torch.float64 if dtype == "float64" else torch.float32
    t = lambda a: torch.tensor(np.asarray(a), dtype=tdt)  # noqa: E731
    xt = t(x).requires_grad_(True)
    y = F.batch_norm(xt, None if training else t(mean), None if training else t(var), t(gamma), t(beta),
                     training=training, eps=eps)
    (g,) = torch.autograd.grad(0.5 * (t(c) * y * y).sum(), xt, create_graph=True)
    (h,) = torch.autograd.grad((g * t(v)).sum(), xt)
    return h.detach().numpy().astype(np.float64), g.detach().numpy().astype(np.float64)


def _float64_computed(keras, name) -> str:
    """Why this backend's Keras layer cannot run this case in float64, or '' when it can: JAX keeps float64
    only with jax_enable_x64, and a layer that computes a float64 input in float32 internally (K18) makes a
    float64 bound meaningless. Measured: the forward output of a float64 layer against the float64 reference."""
    probe = np.asarray([[0.1, 1.0], [0.3, 2.0], [0.7, 4.5]], np.float64)
    with warnings.catch_warnings():  # JAX warns that it truncates float64 to float32: what this probe detects
        warnings.simplefilter("ignore", UserWarning)
        kept = to_numpy(_ops(keras).convert_to_tensor(probe, dtype="float64")).dtype == np.float64
    if not kept:
        return f"{name} keeps no float64 tensors here (JAX without jax_enable_x64): the float32 case measures it"
    layer = keras.layers.BatchNormalization(dtype="float64")
    y = to_numpy(layer(_ops(keras).convert_to_tensor(probe, dtype="float64"), training=True), np.float64)
    ref, mean, var = reference.bn_train(probe, np.ones(2), np.zeros(2), 1e-3)
    bound = reference.bn_bound(probe, np.ones(2), np.zeros(2), mean, var, 1e-3, n_reduce=3) * (U64 / U32)
    if np.any(np.abs(y - ref) > bound):
        return (f"Keras' float64 BatchNormalization on {name} computes in float32 (forward error "
                f"{np.abs(y - ref).max():.1e} > float64 bound {bound.max():.1e}; K18): the float32 case measures it")
    return ""


@pytest.mark.claim("A04")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["training", "inference"])
@pytest.mark.parametrize("impl", ["keras_layer", "torch_F_batch_norm"])
def test_second_derivatives_are_exact(verdict, keras, backend_name, rng, impl, mode, dtype):
    m, f, eps = 60, 8, 1e-3
    training = mode == "training"
    x = rng.normal(0, 1, (m, f)) * rng.uniform(0.5, 3, f) + rng.normal(0, 2, f)
    v = rng.normal(0.5, 1, (m, f))  # non-zero mean per feature: the stop_gradient term is proportional to mean(v)
    c = rng.uniform(0.5, 2, (m, f))
    gamma, beta = rng.uniform(0.5, 2, f), rng.normal(0, 1, f)
    mmean, mvar = rng.normal(0, 2, f), rng.uniform(0.5, 4, f)
    if dtype == "float32":  # the inputs as the float32 case sees them: the exact formula is evaluated on these
        x, v, c, gamma, beta, mmean, mvar = (np.asarray(a, np.float32).astype(np.float64)
                                             for a in (x, v, c, gamma, beta, mmean, mvar))
    unit = U64 if dtype == "float64" else U32
    if impl == "keras_layer":
        if dtype == "float64":
            why = _float64_computed(keras, backend_name)
            if why:
                pytest.skip(why)
        layer = keras.layers.BatchNormalization(dtype=dtype, epsilon=eps)
        layer.build((None, f))
        probes.set_bn_state(layer, {"gamma": gamma, "beta": beta, "mean": mmean, "var": mvar})
        if dtype == "float64":
            for var_, val in ((layer.gamma, gamma), (layer.beta, beta), (layer.moving_mean, mmean), (layer.moving_variance, mvar)):
                var_.assign(np.asarray(val, np.float64))
        ops = _ops(keras)
        ct = ops.convert_to_tensor(c, dtype=dtype)

        def loss_fn(xt):
            y = layer(xt, training=training)
            return 0.5 * ops.sum(ct * y * y)

        def run(point):
            return _keras_hvp(backend_name, keras, loss_fn, point, v, dtype)
    else:
        torch = pytest.importorskip("torch", reason=NO_TORCH)

        def run(point):
            return _torch_hvp(torch, point, v, c, gamma, beta, mmean, mvar, eps, training, dtype)

    h, g = run(x)
    exact, h_abs, h_sg = _exact_hvp(x, v, c, gamma, beta, eps, training, mmean, mvar)
    bound = _hvp_bound(h_abs, m, unit)
    ok = verdict.within("hvp_vs_exact", h - exact, bound)
    # the exact formula is checked against central differences of the paper's first derivatives (numpy float64,
    # reference.bn_backward): D(h) = (g(x+hv) - g(x-hv))/2h; D(h/2) errs by about |D(h) - D(h/2)|/3 (Richardson,
    # error ~ h^2), so |D(h) - D(h/2)| bounds it three times over, plus the rounding of the difference quotient
    # (each float64 gradient within (m+4)*u64 of its absolute-value sum, reference.bn_backward_bound's count)
    if training:
        def grad_ref(point):
            mu, s = point.mean(0), np.sqrt(point.var(0) + eps)
            return reference.bn_backward(c * (gamma * (point - mu) / s + beta), point, gamma, eps)["x"]
    else:
        def grad_ref(point):
            return gamma**2 * c * (point - mmean) / (mvar + eps) + gamma * c * beta / np.sqrt(mvar + eps)
    step = 1e-3
    d1 = (grad_ref(x + step * v) - grad_ref(x - step * v)) / (2 * step)
    d2 = (grad_ref(x + step / 2 * v) - grad_ref(x - step / 2 * v)) / step
    g_abs = _gradient_abs(x, c, gamma, beta, eps, training, mmean, mvar)
    fd_bound = np.abs(d1 - d2) + 4 * (m + 4) * U64 * g_abs / step + _hvp_bound(h_abs, m, U64)
    if not verdict.within("exact_formula_vs_finite_differences", d2 - exact, fd_bound):
        pytest.fail("the exact Hessian-vector formula disagrees with finite differences of the paper's gradient: "
                    "the test's oracle is wrong, not the implementation", pytrace=False)
    if training:
        verdict.power("stop_gradient_mean_alternative", h_sg - exact, bound)
        verdict.mechanism("stop_gradient_mean", verdict.within("hvp_vs_stop_gradient_mean_formula", h - h_sg, bound),
                          "H v against the exact formula minus gamma*a*mean(v)/s^2 (tf.nn.moments' stop_gradient)")
    else:
        verdict.power("training_mode_alternative", _exact_hvp(x, v, c, gamma, beta, eps, True)[0] - exact, bound)
    if dtype == "float64":
        # finite differences of the implementation's own first derivatives: the Hessian of the function it
        # computes, whatever its double backprop does
        own = (run(x + step * v)[1] - run(x - step * v)[1]) / (2 * step)
        own2 = (run(x + step / 2 * v)[1] - run(x - step / 2 * v)[1]) / step
        verdict.within("own_gradient_finite_differences_vs_exact", own2 - exact,
                       np.abs(own - own2) + 4 * (m + 4) * U64 * g_abs / step + bound)
    rel = float(np.abs(h - exact).max() / np.abs(exact).max())
    verdict.record(relative_max_error=rel, dtype=dtype, rows=m, features=f, gradient_max=float(np.abs(g).max()),
                   **({"relative_stop_gradient_term": float(np.abs(h_sg - exact).max() / np.abs(exact).max()),
                       "relative_max_diff_to_stop_gradient_formula": float(np.abs(h - h_sg).max() / np.abs(exact).max())}
                      if training else {}))
    e = verdict.evidence["hvp_vs_exact"]
    verdict.conclude(ok, f"{impl}, {mode}, {dtype}: H v by double backprop vs the exact formula: max relative error "
                         f"{rel:.2e} (worst element {e['value']:.2e}, bound {e['bound']:.1e})"
                         + (f"; vs the stop_gradient(mean) formula {verdict.evidence['hvp_vs_stop_gradient_mean_formula']['value']:.1e}"
                            if training else ""))


# --------------------------------------------------------------------------- A05: eval-mode gradients

EVAL_LAYOUTS = {"dense": (32, 6), "nhwc": (4, 3, 3, 5)}


@pytest.mark.claim("A05")
@pytest.mark.parametrize("layout", list(EVAL_LAYOUTS))
def test_eval_mode_gradients(verdict, keras, B, rng, layout):
    shape = EVAL_LAYOUTS[layout]
    f = shape[-1]
    layer = probes.make_bn(keras, f, rng, input_shape=(None,) + shape[1:])
    s = probes.bn_state(layer)
    x = (rng.normal(0, 2, shape) + rng.normal(0, 1, f)).astype(np.float32)
    dy = rng.normal(0, 1, shape).astype(np.float32)
    before = probes.moving_state([layer])

    ops = _ops(keras)

    def loss(xt):
        return ops.sum(layer(xt, training=False) * ops.convert_to_tensor(dy))

    gx1, (gg1, gb1) = B.gradients(loss, x, [layer.gamma, layer.beta])
    gx2, (gg2, gb2) = B.gradients(loss, x, [layer.gamma, layer.beta])
    xd, dyd = x.astype(np.float64), dy.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    r = 1.0 / np.sqrt(s["var"] + s["eps"])
    exp_x = dyd * s["gamma"] * r
    exp_gamma = (dyd * (xd - s["mean"]) * r).sum(axis=axes)
    exp_beta = dyd.sum(axis=axes)
    n = x.size // f
    # dx = dy * (gamma*rsqrt(var+eps)): rsqrt, *gamma, *dy: <= 4 roundings of |dx|. dgamma = r * (sum dy*x -
    # mean*sum dy) in whatever order autodiff takes: <= (n+4) roundings of r*sum|dy|*(|x|+|mean|). dbeta: a sum
    # of n terms, <= (n+2) roundings of sum|dy|.
    b_x = 4 * U32 * np.abs(exp_x)
    b_gamma = (n + 4) * U32 * r * (np.abs(dyd) * (np.abs(xd) + np.abs(s["mean"]))).sum(axis=axes)
    b_beta = (n + 2) * U32 * np.abs(dyd).sum(axis=axes)
    ok = verdict.within("dx_err", gx1 - exp_x, b_x)
    ok &= verdict.within("dgamma_err", gg1 - exp_gamma, b_gamma)
    ok &= verdict.within("dbeta_err", gb1 - exp_beta, b_beta)
    ok &= verdict.equal("second_pass_dx_bitwise", gx2, gx1)
    ok &= verdict.equal("second_pass_dgamma_bitwise", gg2, gg1)
    ok &= verdict.equal("moving_statistics_unchanged", probes.moving_state([layer]), before)
    train = reference.bn_backward(dyd.reshape(-1, f), xd.reshape(-1, f), s["gamma"], s["eps"])
    verdict.power("training_mode_gradient_alternative", train["x"].reshape(shape) - exp_x, b_x, measured=True)  # measured gradient
    verdict.record(elements_per_feature=n)
    e = verdict.evidence["dx_err"]
    verdict.conclude(ok, f"{layout}: inference-mode dx vs gamma*dy/sqrt(var+eps) {e['value']:.2e} (bound {e['bound']:.1e}); "
                         "dgamma, dbeta within their bounds, a second pass bitwise equal, moving statistics unchanged"
                         if ok else f"{layout}: eval-mode gradients differ from the fixed affine map's")


# --------------------------------------------------------------------------- A06, A07: argument validation

@pytest.mark.claim("A06")
@pytest.mark.parametrize("epsilon", [0.0, -1.0])
def test_nonpositive_epsilon_is_refused(verdict, keras, rng, epsilon):
    f = 4
    x = (rng.normal(0, 1, (16, f)) * np.array([1.0, 0.5, 0.2, 3.0])).astype(np.float32)
    x[:, 0] = 3.0  # a constant feature: batch variance exactly 0
    torch_message = None
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        torch = None
    if torch is not None:
        try:
            torch.nn.BatchNorm1d(f, eps=epsilon).train()(torch.from_numpy(x))
            torch_message = "accepted"
        except ValueError as exc:
            torch_message = str(exc)
    try:
        layer = keras.layers.BatchNormalization(epsilon=epsilon)
    except ValueError as exc:
        refused = "epsilon" in str(exc).lower()
        verdict.record(keras_message=str(exc), torch_message=torch_message)
        verdict.conclude(refused, f"epsilon={epsilon}: Keras refuses it: {exc}")
        return
    y = to_numpy(layer(x, training=True), np.float64)
    var = x.astype(np.float64).var(axis=0)
    # where a rounding-free evaluation must fail: var + eps <= 0 gives rsqrt of 0 (inf * 0 = NaN) or of a negative
    doomed = var + epsilon <= 0
    per_feature = (~np.isfinite(y)).sum(axis=0)
    nonfinite = verdict.count_nonfinite("nonfinite_outputs", y)
    verdict.record(nonfinite_features=[int(i) for i in np.flatnonzero(per_feature)],
                   features_with_var_plus_eps_le_0=[int(i) for i in np.flatnonzero(doomed)],
                   stored_epsilon=float(layer.epsilon), torch_message=torch_message)
    verdict.mechanism("accepts_nonpositive_epsilon",
                      nonfinite > 0 and bool(np.array_equal(per_feature > 0, doomed)),
                      "constructed without error; NaN exactly in the features whose var + epsilon <= 0")
    verdict.conclude(False, f"epsilon={epsilon}: Keras accepts it (stores {layer.epsilon}); {nonfinite} non-finite "
                            f"outputs in features {[int(i) for i in np.flatnonzero(per_feature)]}; torch says: "
                            f"{torch_message or 'torch not installed'}")


@pytest.mark.claim("A07")
@pytest.mark.parametrize("momentum", [-0.1, 1.5, 0.0, 1.0])
def test_momentum_outside_unit_interval_is_refused(verdict, keras, rng, momentum):
    f = 4
    inside = 0.0 <= momentum <= 1.0
    try:
        layer = keras.layers.BatchNormalization(momentum=momentum)
    except ValueError as exc:
        verdict.record(keras_message=str(exc))
        verdict.conclude(not inside and "momentum" in str(exc),
                         f"momentum={momentum}: refused ({exc})")
        return
    layer.build((None, f))
    old = rng.normal(0, 1, f).astype(np.float32)
    layer.moving_mean.assign(old)
    x = (rng.normal(0, 1, (32, f)) + 3.0).astype(np.float32)
    layer(x, training=True)
    new = to_numpy(layer.moving_mean, np.float64)
    mom32 = float(np.float32(momentum))
    bmean = x.astype(np.float64).mean(axis=0)
    expected = reference.ema(old, bmean, mom32)
    # reference.ema_bounds' derivation for any momentum: 4 roundings of |m*old| + |(1-m)*batch| and the batch
    # mean's reduction error (n*u*mean|x|) scaled by |1-m| (ema_bounds assumes 0 <= m <= 1)
    n = x.shape[0]
    b_mean = 4 * U32 * (abs(mom32) * np.abs(old) + abs(1 - mom32) * np.abs(bmean)) \
        + abs(1 - mom32) * n * U32 * np.abs(x.astype(np.float64)).mean(axis=0)
    follows = verdict.within("moving_mean_vs_ema", new - expected, b_mean)
    lo, hi = np.minimum(old, bmean), np.maximum(old, bmean)
    outside = bool(np.all((new < lo - b_mean) | (new > hi + b_mean)))
    verdict.record(moving_mean_outside_old_and_batch=outside, old=old, batch_mean=bmean, new=new)
    if inside:
        verdict.conclude(follows, f"momentum={momentum}: accepted, as the claim says of the boundary values")
        return
    verdict.mechanism("moving_mean_extrapolates", follows and outside,
                      "accepted; the moving mean follows old*m + batch*(1-m) outside [old, batch]")
    verdict.conclude(False, f"momentum={momentum}: accepted; one training call moves the moving mean from "
                            f"{old[0]:.3f} to {new[0]:.3f} with batch mean {bmean[0]:.3f} (extrapolated)")


# --------------------------------------------------------------------------- A08: wrong shapes

@pytest.mark.claim("A08")
@pytest.mark.parametrize("via", ["assign", "set_weights"])
@pytest.mark.parametrize("size", [9, 11])
@pytest.mark.parametrize("variable", ["moving_mean", "moving_variance", "gamma", "beta"])
def test_wrong_shape_statistics_are_refused(verdict, keras, rng, variable, size, via):
    layer = probes.make_bn(keras, 10, rng)
    before = {w: to_numpy(getattr(layer, w), np.float64) for w in ("gamma", "beta", "moving_mean", "moving_variance")}
    wrong = rng.normal(0, 1, size).astype(np.float32)
    message = None
    try:
        if via == "assign":
            getattr(layer, variable).assign(wrong)
        else:
            order = ["gamma", "beta", "moving_mean", "moving_variance"]  # Keras' weight order
            layer.set_weights([wrong if n == variable else before[n].astype(np.float32) for n in order])
    except ValueError as exc:
        message = str(exc)
    unchanged = all([verdict.equal(f"{w}_unchanged", to_numpy(getattr(layer, w), np.float64), before[w]) for w in before])
    raised = message is not None and "shape" in message
    verdict.record(message=message or "no error")
    verdict.conclude(raised and unchanged, f"{variable} of {size} values (10 features) via {via}: "
                     + (f"ValueError ({message[:80]}...)" if message else "accepted") + ("; unchanged" if unchanged else ""))


# --------------------------------------------------------------------------- A09: momentum=1.0

@pytest.mark.claim("A09")
@pytest.mark.parametrize("layout", ["dense", "nhwc"])
def test_momentum_one_keeps_statistics(verdict, keras, rng, layout):
    shape = EVAL_LAYOUTS[layout]
    f = shape[-1]
    layer = probes.make_bn(keras, f, rng, input_shape=(None,) + shape[1:], momentum=1.0)
    s = probes.bn_state(layer)
    before = probes.moving_state([layer])
    batches = [(rng.normal(0, 2, shape) + rng.normal(0, 3, f)).astype(np.float32) for _ in range(5)]
    ys = [to_numpy(layer(b, training=True), np.float64) for b in batches]
    ok = verdict.equal("moving_statistics_bitwise", probes.moving_state([layer]), before)
    ref, mean, var = reference.bn_train(batches[-1], s["gamma"], s["beta"], s["eps"])
    n = batches[-1].size // f
    b_out = reference.bn_bound(batches[-1], s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=n)
    ok &= verdict.within("output_uses_batch_statistics", ys[-1] - ref, b_out)
    # what Keras' default momentum would have stored after these calls (numpy EMA): distinguishable from bitwise
    em, ev = reference.ema_stream(batches, 0.99, s["mean"], s["var"])
    verdict.power("default_momentum_alternative", np.concatenate([em - s["mean"], ev - s["var"]]), U32 * np.abs(before))
    verdict.conclude(ok, f"{layout}: 5 training calls with momentum=1.0 leave the moving statistics bitwise unchanged; "
                         "outputs use the batch statistics" if ok else f"{layout}: the statistics moved")


# --------------------------------------------------------------------------- A10: center / scale

@pytest.mark.claim("A10")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("center,scale", [(True, True), (True, False), (False, True), (False, False)])
def test_center_scale_false_is_beta0_gamma1(verdict, keras, B, rng, center, scale, training):
    f, n = 6, 40
    layer = keras.layers.BatchNormalization(center=center, scale=scale)
    layer.build((None, f))
    g_rand, b_rand = rng.uniform(0.5, 2, f), rng.normal(0, 1, f)
    if scale:
        layer.gamma.assign(g_rand.astype(np.float32))
    if center:
        layer.beta.assign(b_rand.astype(np.float32))
    layer.moving_mean.assign(rng.normal(0, 2, f).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 4, f).astype(np.float32))
    mm, mv = to_numpy(layer.moving_mean, np.float64), to_numpy(layer.moving_variance, np.float64)
    eps = float(layer.epsilon)
    gamma = to_numpy(layer.gamma, np.float64) if scale else np.ones(f)
    beta = to_numpy(layer.beta, np.float64) if center else np.zeros(f)
    x = (rng.normal(0, 2, (n, f)) + rng.normal(0, 1, f)).astype(np.float32)
    dy = rng.normal(0, 1, (n, f)).astype(np.float32)
    counts = (len(layer.trainable_weights), len(layer.non_trainable_weights))
    want_counts = (int(center) + int(scale), 2)
    ops = _ops(keras)
    gx, _ = B.gradients(lambda xt: ops.sum(layer(xt, training=training) * ops.convert_to_tensor(dy)), x)
    y = to_numpy(layer(x, training=training), np.float64)
    if training:
        ref, mean, var = reference.bn_train(x, gamma, beta, eps)
        b_y = reference.bn_bound(x, gamma, beta, mean, var, eps, n_reduce=n)
        ref_dx = reference.bn_backward(dy, x, gamma, eps)["x"]
        b_dx = reference.bn_backward_bound(dy, x, gamma, eps)["x"]
        alt_gamma = np.ones(f) if scale else g_rand
        alt_beta = np.zeros(f) if center else b_rand
        alt = reference.bn_train(x, alt_gamma, alt_beta, eps)[0]
    else:
        ref = reference.bn_inference(x, gamma, beta, mm, mv, eps)
        b_y = reference.bn_bound(x, gamma, beta, mm, mv, eps)
        ref_dx = dy * gamma / np.sqrt(mv + eps)
        b_dx = 4 * U32 * np.abs(ref_dx)  # rsqrt, *gamma, *dy (A05)
        alt = reference.bn_inference(x, np.ones(f) if scale else g_rand, np.zeros(f) if center else b_rand, mm, mv, eps)
    # the alternative: the absent weight applied (as if scale=False still multiplied by a gamma) or the present one ignored
    verdict.power("other_affine_alternative", alt - ref, b_y)
    ok = verdict.within("output_vs_beta0_gamma1_reference", y - ref, b_y)
    ok &= verdict.within("dx_vs_beta0_gamma1_reference", gx - ref_dx, b_dx)
    verdict.record(trainable_weights=counts[0], non_trainable_weights=counts[1], expected_counts=list(want_counts),
                   weights=[getattr(w, "path", None) or w.name for w in layer.weights])
    ok = ok and counts == want_counts
    e = verdict.evidence["output_vs_beta0_gamma1_reference"]
    verdict.conclude(ok, f"center={center}, scale={scale}, training={training}: output vs beta {'' if center else '0 '}"
                         f"gamma {'' if scale else '1 '}reference {e['value']:.1e} (bound {e['bound']:.1e}); "
                         f"{counts[0]} trainable / {counts[1]} non-trainable weights (expected {want_counts[0]}/{want_counts[1]})")


# --------------------------------------------------------------------------- A11: regularizer losses

@pytest.mark.claim("A11")
@pytest.mark.parametrize("which", ["beta", "gamma", "both"])
def test_regularizer_losses(verdict, keras, rng, which):
    f = 8
    kwargs = {f"{w}_regularizer": "l2" for w in (("beta", "gamma") if which == "both" else (which,))}
    layer = keras.layers.BatchNormalization(**kwargs)
    layer.build((None, 4, 4, f))
    layer.gamma.assign(rng.uniform(0.5, 2, f).astype(np.float32))
    layer.beta.assign(rng.normal(0, 1, f).astype(np.float32))
    layer(rng.normal(0, 1, (2, 4, 4, f)).astype(np.float32), training=True)
    got = sorted(float(to_numpy(v)) for v in layer.losses)
    l2 = 0.01  # keras.regularizers.L2's default factor ("l2")
    weights = [to_numpy(getattr(layer, w), np.float64) for w in ("beta", "gamma") if f"{w}_regularizer" in kwargs]
    want = sorted(l2 * float(np.sum(w**2)) for w in weights)
    # a float32 sum of f squares (f + 1 roundings) times the float32 factor 0.01 (2 more): (f + 3)*u relative
    bounds = [(f + 3) * U32 * w for w in want]
    ok = len(got) == len(want)
    if ok:
        ok = verdict.within("loss_values", np.asarray(got) - np.asarray(want), np.asarray(bounds))
        verdict.power("no_regularization_alternative", np.asarray(want), np.asarray(bounds))
    verdict.record(losses=got, expected=want, number_of_losses=len(got), expected_number=len(want))
    verdict.conclude(ok, f"{which}_regularizer='l2': {len(got)} loss(es) {['%.6g' % g for g in got]} "
                         f"(expected {['%.6g' % w for w in want]})")


# --------------------------------------------------------------------------- A12: a mask in inference

@pytest.mark.claim("A12")
@pytest.mark.parametrize("mask_via", ["argument", "masking_layer"])
def test_mask_ignored_in_inference(verdict, keras, rng, mask_via):
    batch, steps, f = 8, 10, 4
    layer = probes.make_bn(keras, f, rng, input_shape=(None, steps, f))
    s = probes.bn_state(layer)
    x = (rng.normal(0, 2, (batch, steps, f)) + 1).astype(np.float32)
    mask = rng.random((batch, steps)) > 0.3
    mask[:, 0] = True
    x[~mask] = 0.0  # the masked steps are what Masking(mask_value=0) masks
    before = probes.moving_state([layer])
    plain = to_numpy(layer(x, training=False), np.float64)
    if mask_via == "argument":
        masked = to_numpy(layer(x, training=False, mask=mask), np.float64)
    else:
        model = keras.Sequential([keras.Input(shape=(steps, f)), keras.layers.Masking(mask_value=0.0), layer])
        masked = to_numpy(model(x, training=False), np.float64)
    ok = verdict.equal("masked_vs_unmasked_bitwise", masked, plain)
    ok &= verdict.equal("moving_statistics_unchanged", probes.moving_state([layer]), before)
    ref = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    ok &= verdict.within("output_vs_inference_reference", masked - ref, bound)
    # the alternative a mask-aware inference could take: masked steps zeroed in the output
    verdict.power("masked_steps_zeroed_alternative", np.where(mask[..., None], ref, 0.0) - ref, bound)
    verdict.record(masked_fraction=float(1 - mask.mean()))
    verdict.conclude(ok, f"mask via {mask_via}, training=False: output bitwise the unmasked call's" if ok
                     else f"mask via {mask_via}: the mask changed the inference output")


# --------------------------------------------------------------------------- A13: fit() with Masking

@pytest.mark.claim("A13")
@pytest.mark.parametrize("mask_value", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("run_eagerly", [True, False])
def test_fit_with_masking_uses_unmasked_steps(verdict, keras, run_eagerly, mask_value):
    # the anchor's data: 10 sequences of [1, 5], [2, 5] then two steps of the mask value
    data = np.array([[[1, 5], [2, 5], [mask_value, mask_value], [mask_value, mask_value]] for _ in range(10)], np.float32)
    inputs = keras.layers.Input((None, 2))
    bn = keras.layers.BatchNormalization(momentum=0.0)
    model = keras.Model(inputs, bn(keras.layers.Masking(mask_value=mask_value)(inputs)))
    model.compile("rmsprop", loss="mse", run_eagerly=run_eagerly)
    model.fit(x=data, y=data, batch_size=10, epochs=5, verbose=0)
    kept = data[:, :2, :].reshape(-1, 2).astype(np.float64)
    mean, var = kept.mean(axis=0), kept.var(axis=0)  # [1.5, 5], [0.25, 0]
    n = data.shape[0] * data.shape[1]
    # masked moments: float32 sums over all n positions: mean <= (n+2)*u*E|x|, variance <= 4*(n+2)*u*E[x^2]
    # (the derivation of tests/claims/test_field_numerics.py::_weighted_stats), E over the kept steps
    b_mean = (n + 2) * U32 * np.abs(kept).mean(axis=0)
    b_var = 4 * (n + 2) * U32 * (kept**2).mean(axis=0)
    got_mean, got_var = to_numpy(bn.moving_mean, np.float64), to_numpy(bn.moving_variance, np.float64)
    ok = verdict.within("moving_mean_vs_unmasked_steps", got_mean - mean, b_mean)
    ok &= verdict.within("moving_variance_vs_unmasked_steps", got_var - var, b_var)
    everything = data.reshape(-1, 2).astype(np.float64)
    verdict.power("mask_ignored_alternative", np.concatenate([everything.mean(0) - mean, everything.var(0) - var]),
                  np.concatenate([b_mean, b_var]))
    verdict.record(moving_mean=got_mean, moving_variance=got_var, expected_mean=mean, expected_variance=var)
    verdict.conclude(ok, f"run_eagerly={run_eagerly}, mask value {mask_value}: moving mean {np.round(got_mean, 6).tolist()}, "
                         f"variance {np.round(got_var, 6).tolist()} (unmasked steps: {mean.tolist()}, {var.tolist()})")


# --------------------------------------------------------------------------- A14: AutocastScope

def _float16_overflows(value: float) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.isinf(np.float16(value)))


@pytest.mark.claim("A14")
def test_large_moving_variance_within_autocast_scope(verdict, keras, run):
    scope = getattr(getattr(getattr(keras, "src", None), "backend", None), "AutocastScope", None)
    if scope is None:
        pytest.skip(f"{run.flavour}: this Keras has no keras.src.backend.AutocastScope (Keras 3's autocasting scope)")
    layer = keras.layers.BatchNormalization()
    layer.build((1, 4, 4, 3))
    value = 70000.0  # above float16's largest finite value, 65504
    with scope("float16"):
        layer.moving_variance.assign(keras.ops.full(layer.moving_variance.shape, value))
        inside = to_numpy(layer.moving_variance.value, np.float64)
    ok = verdict.equal("moving_variance_kept", inside, np.full(3, value))
    verdict.record(float16_max=float(np.finfo(np.float16).max), variable_dtype=str(getattr(layer.moving_variance, "dtype", "")),
                   float16_of_value_is_inf=_float16_overflows(value))
    verdict.conclude(ok, f"assigned {value:g} inside AutocastScope('float16'): reads back {inside[0]:g}")


# --------------------------------------------------------------------------- A15-A17: renorm bookkeeping

@pytest.mark.claim("A15")
@pytest.mark.parametrize("clipping", ["none", "rmax3_rmin0.3_dmax5"])
def test_renorm_weights_and_initial_values(verdict, keras, clipping):
    kwargs = {"renorm": True, "moving_variance_initializer": keras.initializers.Constant(4.0)}
    if clipping != "none":
        kwargs["renorm_clipping"] = {"rmax": 3.0, "rmin": 0.3, "dmax": 5.0}
    layer = probes.bn_layer(keras, **kwargs)
    layer.build((None, 5))
    counts = (len(layer.trainable_weights), len(layer.non_trainable_weights))
    stddevs = {n: to_numpy(getattr(layer, n), np.float64) for n in ("moving_stddev", "renorm_stddev")}
    # sqrt(4) = 2 exactly; a float32 sqrt of a float32 4 is exact, one rounding allowed for an sqrt(4 + tiny)
    ok = all([verdict.within(f"{n}_vs_sqrt_initial_variance", v - 2.0, np.full(v.shape, 2 * U32 * 2.0))
              for n, v in stddevs.items()])
    verdict.power("variance_instead_of_stddev_alternative", np.full(5, 4.0 - 2.0), np.full(5, 2 * U32 * 2.0))
    verdict.record(trainable_weights=counts[0], non_trainable_weights=counts[1],
                   weights=[getattr(w, "path", None) or w.name for w in layer.weights])
    ok = ok and counts == (2, 5)
    verdict.conclude(ok, f"renorm=True, clipping {clipping}: {counts[0]} trainable / {counts[1]} non-trainable weights; "
                         f"moving_stddev {stddevs['moving_stddev'][0]:g}, renorm_stddev {stddevs['renorm_stddev'][0]:g}")


INVALID_CLIPPING = {
    "unknown_key": ({"random_key": 1.0}, "Received invalid keys"),
    "rmax_below_rmin": ({"rmax": 0.0, "rmin": 1.0}, "rmax should be"),
    "negative_dmax": ({"rmax": 1.0, "dmax": -1.0}, "dmax should be non-negative"),
}


@pytest.mark.claim("A16")
@pytest.mark.parametrize("problem", list(INVALID_CLIPPING))
def test_invalid_renorm_clipping_is_refused(verdict, keras, problem):
    clipping, fragment = INVALID_CLIPPING[problem]
    probes.bn_layer(keras, renorm=True)  # not applicable where this Keras has no renorm
    try:
        keras.layers.BatchNormalization(renorm=True, renorm_clipping=clipping)
    except ValueError as exc:
        message = str(exc)
        placeholders = [p for p in ("{rmax}", "{rmin}", "{dmax}") if p in message]
        verdict.record(message=message, message_shows_literal_placeholders=placeholders)
        verdict.conclude(fragment in message, f"{problem}: ValueError {message!r}"
                         + (f" (prints the literal {', '.join(placeholders)}: not an f-string)" if placeholders else ""))
        return
    stored = probes.bn_layer(keras, renorm=True, renorm_clipping=clipping).renorm_clipping
    verdict.record(stored_renorm_clipping=dict(stored or {}))
    verdict.mechanism("clipping_accepted", dict(stored or {}) == clipping,
                      "constructed without error; the layer stores the invalid clipping as given")
    verdict.conclude(False, f"{problem}: renorm_clipping={clipping} accepted (stored {dict(stored or {})})")


@pytest.mark.claim("A17")
def test_renorm_config_round_trip(verdict, keras):
    layer = probes.bn_layer(keras, renorm=True, renorm_clipping={"rmax": 3.0, "rmin": 0.3, "dmax": 5.0},
                            renorm_momentum=0.95)
    config = layer.get_config()
    rebuilt = type(layer).from_config(config)
    same = rebuilt.get_config() == config
    kept = {k: config.get(k) for k in ("renorm", "renorm_clipping", "renorm_momentum")}
    verdict.record(renorm_config=kept, rebuilt_equal=same)
    verdict.conclude(same and kept == {"renorm": True, "renorm_clipping": {"rmax": 3.0, "rmin": 0.3, "dmax": 5.0},
                                       "renorm_momentum": 0.95},
                     f"get_config/from_config: {kept}; rebuilt config equal: {same}")


@pytest.mark.claim("A18")
def test_renorm_statistics_after_one_step(verdict, keras):
    eps, momentum, renorm_momentum, f = 1e-3, 0.9, 0.8, 3
    layer = probes.bn_layer(keras, axis=-1, epsilon=eps, momentum=momentum, renorm=True, renorm_momentum=renorm_momentum)
    layer.build((None, f))
    init_rng = np.random.default_rng(1337)  # the anchor's initial values, drawn as it draws them
    init = {"moving_mean": init_rng.normal(0.0, 1.0, f)}
    init["moving_variance"] = np.abs(init_rng.normal(1.0, 0.5, f))
    init["moving_stddev"] = np.sqrt(init["moving_variance"])
    init["renorm_mean"] = init_rng.normal(0.0, 1.0, f)
    init["renorm_stddev"] = np.abs(init_rng.normal(1.0, 0.5, f))
    for name, value in init.items():
        getattr(layer, name).assign(value.astype(np.float32))
    init = {k: to_numpy(getattr(layer, k), np.float64) for k in init}  # as stored (float32)
    x = np.array([[4.0, 6.0, 2.0], [8.0, -2.0, 5.0], [6.0, 4.0, 3.0]], np.float32)  # the anchor's batch
    layer(x, training=True)
    got = {k: to_numpy(getattr(layer, k), np.float64) for k in init}
    xd = x.astype(np.float64)
    n = x.shape[0]
    mean, var = xd.mean(axis=0), xd.var(axis=0)
    std = np.sqrt(var + eps)
    m32, r32 = float(np.float32(momentum)), float(np.float32(renorm_momentum))
    want = {"renorm_mean": reference.ema(init["renorm_mean"], mean, r32),
            "renorm_stddev": reference.ema(init["renorm_stddev"], std, r32),
            "moving_mean": reference.ema(init["moving_mean"], mean, m32),
            "moving_stddev": reference.ema(init["moving_stddev"], std, m32)}
    want["moving_variance"] = want["moving_stddev"] ** 2 - eps
    # bounds: the batch mean and variance as in reference.bn_bound (n*u*mean|x|, 2(n+2)*u*mean(x^2)); the stddev
    # sqrt(var + eps) adds d_var/(2*std) and 2 roundings; each EMA 4 roundings of |old| + |new| plus (1 - m) times
    # the statistic's error; moving_variance = s^2 - eps: 2*|s|*d_s plus 3 roundings of s^2 + eps
    d_mean = n * U32 * np.abs(xd).mean(axis=0)
    d_std = 2 * (n + 2) * U32 * (xd**2).mean(axis=0) / (2 * std) + 2 * U32 * std
    b = {"renorm_mean": 4 * U32 * (np.abs(init["renorm_mean"]) + np.abs(mean)) + (1 - r32) * d_mean,
         "renorm_stddev": 4 * U32 * (init["renorm_stddev"] + std) + (1 - r32) * d_std,
         "moving_mean": 4 * U32 * (np.abs(init["moving_mean"]) + np.abs(mean)) + (1 - m32) * d_mean,
         "moving_stddev": 4 * U32 * (init["moving_stddev"] + std) + (1 - m32) * d_std}
    b["moving_variance"] = 2 * want["moving_stddev"] * b["moving_stddev"] + 3 * U32 * (want["moving_stddev"] ** 2 + eps)
    ok = all([verdict.within(f"{k}_err", got[k] - want[k], b[k]) for k in want])
    verdict.power("momenta_swapped_alternative", reference.ema(init["renorm_mean"], mean, m32) - want["renorm_mean"],
                  b["renorm_mean"])
    verdict.power("variance_ema_alternative", reference.ema(init["moving_variance"], var, m32) - want["moving_variance"],
                  b["moving_variance"])
    e = verdict.evidence["moving_variance_err"]
    verdict.conclude(ok, "one renorm training step: renorm_mean/stddev (renorm_momentum 0.8), moving_mean/stddev "
                         f"(momentum 0.9) and moving_variance = moving_stddev^2 - eps within their bounds "
                         f"(moving_variance off by {e['value']:.1e}, bound {e['bound']:.1e})" if ok
                     else "renorm statistics differ from the anchor's formulas")


@pytest.mark.claim("A19")
@pytest.mark.parametrize("synchronized", [False, True])
def test_fully_masked_zero_batch_outputs_zeros(verdict, keras, backend_name, rng, synchronized):
    if synchronized:
        probes.skip_if_synchronized_refused(keras, backend_name)  # TensorFlow-only, where Keras refuses it
    norm = probes.bn_layer(keras, scale=False, center=False, synchronized=synchronized)
    x = np.zeros((4, 5), np.float32)
    mask = np.zeros((4,), np.float32)
    y = to_numpy(norm(x, mask=mask, training=True), np.float64)
    bad = verdict.count_nonfinite("nonfinite_outputs", y)  # 0/0 would be NaN: evidence for this claim
    zeros = bad == 0 and verdict.equal("output_is_zero", y, np.zeros_like(y))
    # a fully masked non-zero batch: the masked statistics are 0 (sums / (count + 1e-7)), so y = x/sqrt(eps)
    x2 = rng.normal(0, 1, (4, 5)).astype(np.float32)
    y2 = to_numpy(norm(x2, mask=mask, training=True), np.float64)
    if verdict.count_nonfinite("nonfinite_outputs_nonzero_batch", y2) == 0:
        ref2 = x2 / np.sqrt(float(norm.epsilon))
        verdict.within("nonzero_batch_vs_x_over_sqrt_eps", y2 - ref2, 4 * U32 * np.abs(ref2))
    verdict.conclude(zeros, f"synchronized={synchronized}: a fully masked zero batch gives "
                            + ("exactly 0" if zeros else f"{bad} non-finite / non-zero outputs"))
