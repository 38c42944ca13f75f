"""Field traps about Keras' API around BN: fine-tuning a nested model, preprocessing layers upstream of
BN, exports (SavedModel serve endpoint, LiteRT/TFLite), Keras 2 arguments, the tf.compat.v1 layer, a
tensor `training` flag in tf.function, and tf_keras SavedModels reloaded by Keras 3.

A mode is identified by comparing outputs with the float64 reference of that mode (bnspec.reference)
within its float32 bound, after checking that the other mode's reference lies beyond the bounds (the
test's power). "Unchanged" is finite and bitwise equal (verdict.equal). Claims about Keras run on every
Keras 3 backend; claims about TensorFlow itself (tf.function, SavedModel, TFLite, tf.compat.v1,
TFSMLayer) skip elsewhere. Artefacts made by tf_keras for Keras 3 to load (C12's .h5, C25's SavedModel)
come from the run's tf_keras interpreter (bnspec.run.tfkeras_python, else the tfkeras tox environment) in a
subprocess with the tfkeras run's environment (bnspec.run.Run.child_env), cached under BNSPEC_HOME; the
tf_keras and TensorFlow versions that made them are recorded as evidence. Evidence named `context_...` is
recorded for the reader and is not part of the verdict. "Rejected" (C12) is the specific refusal, never any
exception."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from bnspec import paths, reference
from bnspec.run import Run, tfkeras_python
from bnspec.measure.backend import to_numpy
from bnspec.subjects import cache
from tests.claims import _kit as probes
from bnspec.measure.verdict import finite, not_applicable
from bnspec.reference import U32


# --------------------------------------------------------------------------- helpers

ROOT = Path(__file__).resolve().parents[2]


def _tensorflow_only(run, what: str) -> None:
    if run.backend != "tensorflow":
        pytest.skip(f"{what}: TensorFlow-specific")


def _ema_step(verdict, name, before, after, x, momentum):
    """Whether `after` is one EMA step of the moving statistics `before` towards the batch statistics of x
    (float64 reference, within reference.ema_bounds: probes.ema_step); recorded as evidence."""
    mean, var, b_mean, b_var = probes.ema_step(x, before["mean"], before["var"], momentum)
    ok_m = verdict.within(f"{name}_moving_mean_vs_one_ema_step", after["mean"] - mean, b_mean)
    ok_v = verdict.within(f"{name}_moving_variance_vs_one_ema_step", after["var"] - var, b_var)
    return ok_m and ok_v


# tf_keras artefacts for Keras 3 (C12's .h5, C25's SavedModel)

TFKERAS_SCRIPT = r'''
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
import tf_keras as keras
out = sys.argv[1]
rng = np.random.default_rng(20150211)
# C25: Input(8) -> BN with distinctive state, saved as a TF SavedModel
m = keras.Sequential([keras.Input((8,)), keras.layers.BatchNormalization(name="bn")])
st = [rng.uniform(0.5, 2.0, 8), rng.normal(0.0, 1.0, 8), rng.normal(0.0, 2.0, 8), rng.uniform(0.5, 4.0, 8)]
m.layers[0].set_weights([s.astype(np.float32) for s in st])
m.save(os.path.join(out, "bn_savedmodel"), save_format="tf")
np.savez(os.path.join(out, "bn_savedmodel_state.npz"), gamma=st[0], beta=st[1], mean=st[2], var=st[3],
         eps=m.layers[0].epsilon, momentum=m.layers[0].momentum)
# C12: BN normalising over axes [1, 2] of (3, 3, 2) inputs, saved as .h5
inp = keras.Input((3, 3, 2))
bn = keras.layers.BatchNormalization(axis=[1, 2], name="bn")
h5 = keras.Model(inp, bn(inp))
bn.set_weights([rng.uniform(0.5, 2.0, (1, 3, 3, 1)).astype(np.float32) for _ in range(4)])
h5.save(os.path.join(out, "multi_axis_bn.h5"))
json.dump({"tf_keras": keras.__version__, "tensorflow": tf.__version__, "axis": list(bn.axis)},
          open(os.path.join(out, "made_by.json"), "w"))
'''

FILES = ("bn_savedmodel", "bn_savedmodel_state.npz", "multi_axis_bn.h5", "made_by.json")


def _tfkeras_python() -> Path | None:
    """The interpreter that writes the tf_keras artefacts: the run's BNSPEC_TFKERAS_PYTHON
    (bnspec.run.tfkeras_python), else the tfkeras tox environment's."""
    explicit = tfkeras_python()
    for cand in ([Path(explicit)] if explicit else []) + [ROOT / ".tox" / "tfkeras" / "bin" / "python"]:
        if cand.is_file():
            return cand
    return None


@pytest.fixture(scope="session")
def tfkeras_artifacts():
    """A directory with the tf_keras-made artefacts (FILES), made once by the tfkeras interpreter in a child
    whose environment is the tfkeras run's (bnspec.run.Run.child_env: flavour, legacy Keras, no mutant)."""
    py = _tfkeras_python()
    if py is None:
        pytest.skip("needs a tf_keras interpreter to make the artefact (.tox/tfkeras or BNSPEC_TFKERAS_PYTHON)")
    dist = sorted(p.name for p in py.parent.parent.glob("lib/python*/site-packages/tf_keras-*.dist-info"))
    key = {"script": hashlib.sha256(TFKERAS_SCRIPT.encode()).hexdigest(), "python": str(py), "tf_keras": dist}

    def create(tmp: Path) -> dict:
        base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the child's own site-packages only
        env = Run("tfkeras").child_env(base)
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        run = subprocess.run([str(py), "-c", TFKERAS_SCRIPT, str(tmp)], capture_output=True, text=True, env=env,
                             timeout=300, check=False)
        if run.returncode:
            raise RuntimeError(f"the tf_keras artefact script failed ({run.returncode}): {run.stderr[-2000:]}")
        return {"python": str(py)}

    def load(path: Path) -> Path:
        missing = [f for f in FILES if not (path / f).exists()]
        if missing:
            raise FileNotFoundError(f"missing {missing}")
        return path

    return cache.Store(paths.home() / "field").get_or_create("tfkeras-artifacts", key, create, load).value


def _made_by(verdict, art: Path) -> None:
    """Record which tf_keras and TensorFlow made the artefacts (their made_by.json) as evidence."""
    made = json.loads((art / "made_by.json").read_text())
    verdict.record(artefact_tf_keras=str(made["tf_keras"]), artefact_tensorflow=str(made["tensorflow"]))

# C02: preprocessing layers upstream of BN, and exports

PREPROC = ("CenterCrop", "Resizing", "RandomFlip")
C02_ENTRIES = ("call", "export_serve", "export_litert")


def _symmetric_images(rng, n):
    """(n, 4, 4, 3) images with mean ~5 that every flip and the identity crop/resize map to themselves."""
    q = rng.normal(5.0, 1.0, (n, 2, 2, 3)).astype(np.float32)
    top = np.concatenate([q, q[:, :, ::-1]], axis=2)
    return np.ascontiguousarray(np.concatenate([top, top[:, ::-1]], axis=1))


def _tflite_run(tf, blob: bytes, x: np.ndarray):
    """(op names, output) of a TFLite model on x, with the default delegates off (XNNPACK would replace
    the graph by one DELEGATE op)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=blob, experimental_op_resolver_type=
                                 tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    ops = [o["op_name"] for o in it._get_ops_details()]
    it.set_tensor(inp["index"], x)
    it.invoke()
    return ops, np.array(it.get_tensor(out["index"]))


def _export(model, path: str, **kw):
    params = inspect.signature(model.export).parameters
    if "verbose" in params:  # Keras >= 3.2 prints the endpoint signatures unless told not to
        kw["verbose"] = False
    if "format" in kw and "format" not in params:
        not_applicable("this Keras' Model.export has no format= (only SavedModel)")
    try:
        model.export(path, **kw)
    except ValueError as exc:  # Keras 3.6-3.12 have format= but not 'litert' (added in 3.13, keras#21674)
        if "format" in kw and f"format={kw['format']}" in str(exc):
            not_applicable(f"this Keras' Model.export has no format={kw['format']!r}: {exc}")
        raise
    if kw.get("format") == "litert" and Path(path).is_dir():  # Keras 3.0 ignores an unknown format: a SavedModel
        not_applicable("this Keras' Model.export has no format='litert' (it wrote a SavedModel)")

# C12: Keras 2 arguments

C12_ARGS = ("fused_false", "fused_true", "virtual_batch_size", "adjustment", "axis_list", "renorm", "h5_multi_axis")


def _adjust(shape):  # tf_keras' `adjustment`: (scale, bias) applied to the normalised values in training
    return np.full((2,), 2.0, np.float32), np.full((2,), 0.5, np.float32)


C12_KWARGS = {"fused_false": {"fused": False}, "fused_true": {"fused": True}, "virtual_batch_size": {"virtual_batch_size": 2},
              "adjustment": {"adjustment": _adjust}, "axis_list": {"axis": [1, 2]}, "renorm": {"renorm": True}}


# What "rejected" means, per argument: the refusal Keras 3 gives (an exception of these types whose message
# contains these strings). Any other exception (a crash, a junk file) is an error of the test, not a verdict.
UNRECOGNIZED = "Unrecognized keyword arguments"
C12_REFUSALS = {
    "fused_false": (ValueError, (UNRECOGNIZED, "'fused'")),
    "fused_true": (ValueError, (UNRECOGNIZED, "'fused'")),
    "virtual_batch_size": (ValueError, (UNRECOGNIZED, "'virtual_batch_size'")),
    "adjustment": (ValueError, (UNRECOGNIZED, "'adjustment'")),
    "renorm": (ValueError, (UNRECOGNIZED, "'renorm'")),  # Keras 3 before 3.14
    # int(axis) of the list: the message names the refused value's type, not the argument (the claim's note);
    # the control below (the same constructor without axis=[1, 2]) pins the refusal on the argument
    "axis_list": (TypeError, ("int()", "'list'")),
}
# the .h5: Keras 3's loader drops the list axis, and the weight-shape check refuses the BN layer's saved
# (1, 3, 3, 1) weights (the layer is named "bn" in the artefact)
C12_H5_REFUSAL = (ValueError, ("Shape mismatch", "(named bn)", "(1, 3, 3, 1)"))


def _honoured(verdict, keras, rng, arg, layer) -> bool:
    """Whether an accepted Keras 2 argument does what Keras 2 documents (each check can fail)."""
    if arg in ("fused_false", "fused_true"):
        layer.build((None, 3, 3, 2))
        got = getattr(layer, "fused", None)
        verdict.record(fused_attribute=str(got))
        return got is (arg == "fused_true")
    if arg == "renorm":
        layer.build((None, 3))
        names = [probes.variable_name(w) for w in layer.weights]
        verdict.record(weights=names, config_renorm=bool(layer.get_config().get("renorm")))
        return bool(layer.get_config().get("renorm")) and any("renorm" in nm for nm in names)
    if arg == "axis_list":  # statistics per (h, w) position, over the batch and the channels
        x = rng.normal(1.0, 2.0, (4, 3, 3, 2)).astype(np.float32)
        y = to_numpy(layer(x, training=True))
        xt = x.transpose(0, 3, 1, 2).reshape(8, 9)  # features = the 9 positions, 8 values each
        ref, m, v = reference.bn_train(xt, 1.0, 0.0, layer.epsilon)
        bound = reference.bn_bound(xt, 1.0, 0.0, m, v, layer.epsilon, n_reduce=8)
        per_channel = reference.bn_train(x, 1.0, 0.0, layer.epsilon)[0].transpose(0, 3, 1, 2).reshape(8, 9)
        verdict.power("per_channel_alternative", per_channel - ref, bound)
        return verdict.within("output_vs_per_position_reference", y.transpose(0, 3, 1, 2).reshape(8, 9) - ref, bound)
    x = rng.normal(1.0, 2.0, (4, 2)).astype(np.float32)
    y = to_numpy(layer(x, training=True))
    if arg == "virtual_batch_size":
        # ghost batches of 2, each normalised by its own statistics. tf_keras reshapes the batch to
        # (virtual_batch_size, -1, features) and reduces over the first axis, so ghost batch j holds
        # examples j and j + n/2 (interleaved, not consecutive): here {0, 2} and {1, 3}
        ref, bound = np.empty_like(x, dtype=np.float64), np.empty_like(x, dtype=np.float64)
        for j in (0, 1):
            g = x[j::2]
            r, m, v = reference.bn_train(g, 1.0, 0.0, layer.epsilon)
            ref[j::2], bound[j::2] = r, reference.bn_bound(g, 1.0, 0.0, m, v, layer.epsilon, n_reduce=2)
        verdict.power("whole_batch_alternative", reference.bn_train(x, 1.0, 0.0, layer.epsilon)[0] - ref, bound)
        return verdict.within("output_vs_ghost_batch_reference", y - ref, bound)
    # adjustment: y = gamma * (2 x_hat + 0.5) + beta with gamma = 1, beta = 0 (its composition with
    # gamma/beta adds two roundings: 2u|y| on top of bn_bound with the composed scale and offset)
    ref, m, v = reference.bn_train(x, 2.0, 0.5, layer.epsilon)
    bound = reference.bn_bound(x, 2.0, 0.5, m, v, layer.epsilon, n_reduce=4) + 2 * U32 * np.abs(ref)
    verdict.power("no_adjustment_alternative", reference.bn_train(x, 1.0, 0.0, layer.epsilon)[0] - ref, bound)
    return verdict.within("output_vs_adjusted_reference", y - ref, bound)


# C17: TFLite

FOLDED_OK = {"CONV_2D", "RELU"}  # anything else after the convolution is separate BN arithmetic


# --------------------------------------------------------------------------- C01


@pytest.mark.claim("C01")
@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_training_false_keeps_nested_bn_frozen_in_fit(verdict, keras, rng, kind):
    """fit() of a model calling its BN base with training=False: inner statistics, fit's loss vs each mode's."""
    n, f = 32, 8
    base = keras.Sequential([keras.Input((f,)), keras.layers.Dense(f), keras.layers.BatchNormalization(),
                             keras.layers.Activation("tanh")])
    dense, bn = base.layers[0], base.layers[1]
    probes.randomise_bn(bn, rng)
    head = keras.layers.Dense(1)
    x = rng.normal(5.0, 1.0, (n, f)).astype(np.float32)  # far from the moving statistics: modes differ
    t = rng.normal(0.0, 1.0, (n, 1)).astype(np.float32)
    if kind == "functional":  # the guide's recipe
        inp = keras.Input((f,))
        model = keras.Model(inp, head(base(inp, training=False)))
    else:
        class Outer(keras.Model):
            def __init__(self, base, head):
                super().__init__()
                self.base, self.head = base, head

            def call(self, inputs):
                return self.head(self.base(inputs, training=False))

        model = Outer(base, head)
        model(x[:1])  # builds the head (inference call: the base runs with training=False)
    base.trainable = False  # the guide: freeze, train the head, then unfreeze and recompile
    model.compile(keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    base.trainable = True
    model.compile(keras.optimizers.SGD(learning_rate=0.0), loss="mse")  # lr 0: the Dense weights stay fixed

    w1, b1 = (np.asarray(v, np.float64) for v in dense.get_weights())
    w2, b2 = (np.asarray(v, np.float64) for v in head.get_weights())
    s = probes.bn_state(bn)
    layers = [{"kernel": w1, "bias": b1}, s, {"kernel": w2, "bias": b2}]  # Dense, BN+tanh, Dense
    z_inf, z_bound = reference.mlp_inference(x, layers)
    z_tr = reference.mlp_training(x, layers)
    # fit's loss: mean((z - t)^2) over n. With |z - z_exact| <= zb per row, the loss moves by at most
    # mean(2|z - t| zb + zb^2); its float32 evaluation (difference, square: 3u each term; the mean of n
    # terms: (n-1)u; division and the loss tracker's total/count: ~4u) adds at most (n + 8)u * L.
    loss_inf = float(np.mean((z_inf - t) ** 2))
    loss_tr = float(np.mean((z_tr - t) ** 2))
    tol = float(np.mean(2 * np.abs(z_inf - t) * z_bound + z_bound**2)) + (n + 8) * U32 * loss_inf
    verdict.power("training_mode_loss_alternative", loss_tr - loss_inf, tol)

    # what a training-mode step would do to the inner BN: one EMA step towards the batch statistics of
    # h = x W1 + b1, plus the float32 error of h ((k+1)u(|x||W1| + |b1|), k = f) moving the batch mean
    h = x.astype(np.float64) @ w1 + b1
    dh = (f + 1) * U32 * (np.abs(x) @ np.abs(w1) + np.abs(b1))
    bm, bv = reference.batch_stats(h)
    mom = float(bn.momentum)
    e_mean, e_var = reference.ema_bounds(h, s["mean"], s["var"], mom)
    d = dh + dh.mean(axis=0)
    e_mean = e_mean + (1 - mom) * dh.mean(axis=0)
    e_var = e_var + (1 - mom) * (2 * (np.abs(h - bm) * d).mean(axis=0) + (d**2).mean(axis=0))
    want_mean, want_var = reference.ema(s["mean"], bm, mom), reference.ema(s["var"], bv, mom)
    verdict.power("ema_step_alternative", want_mean - s["mean"], e_mean)

    history = model.fit(x, t, batch_size=n, epochs=1, verbose=0, shuffle=False)
    loss = float(history.history["loss"][-1])
    after = probes.bn_state(bn)
    same_mean = verdict.equal("inner_moving_mean_unchanged", s["mean"], after["mean"])
    same_var = verdict.equal("inner_moving_variance_unchanged", s["var"], after["var"])
    ok_loss = verdict.within("fit_loss_vs_inference_mode_loss", loss - loss_inf, tol)
    step_m = verdict.within("inner_moving_mean_vs_one_ema_step", after["mean"] - want_mean, e_mean)
    step_v = verdict.within("inner_moving_variance_vs_one_ema_step", after["var"] - want_var, e_var)
    verdict.record(fit_loss=loss, inference_mode_loss=loss_inf, training_mode_loss=loss_tr)
    verdict.mechanism("moving_stats_follow_fit", step_m and step_v and not same_mean,
                      "the inner BN's moving mean/variance are one EMA step (momentum "
                      f"{mom}) towards the batch statistics of its input: "
                      f"{probes.ratio_text(verdict, 'inner_moving_mean_vs_one_ema_step')} / "
                      f"{probes.ratio_text(verdict, 'inner_moving_variance_vs_one_ema_step')} x their bounds")
    moved = float(np.max(np.abs(finite("inner moving mean after fit", after["mean"]) - s["mean"])))
    step = float(np.max(np.abs(finite("one EMA step", want_mean - s["mean"]))))
    verdict.conclude(same_mean and same_var and ok_loss,
                     f"{kind}: after fit the inner BN's moving mean changed by up to {moved:.3g} "
                     f"(one EMA step: {step:.3g}); fit's loss {loss:.6g} vs "
                     f"inference-mode {loss_inf:.6g} / training-mode {loss_tr:.6g}")


# --------------------------------------------------------------------------- C02


@pytest.mark.claim("C02")
@pytest.mark.parametrize("entry", C02_ENTRIES)
@pytest.mark.parametrize("preproc", PREPROC)
def test_preprocessing_upstream_leaves_bn_in_inference(run, verdict, keras, rng, tmp_path, preproc, entry):
    """Preprocessing -> BN via call, serve or LiteRT: output vs the inference reference, statistics unchanged."""
    if entry != "call":
        _tensorflow_only(run, "model.export() artefacts served by TensorFlow")
    if entry == "export_litert" and run.family == "tfkeras":
        pytest.skip("tf_keras' Model.export has no format='litert'")
    n = 16
    x = _symmetric_images(rng, n)
    make = {"CenterCrop": lambda: keras.layers.CenterCrop(4, 4), "Resizing": lambda: keras.layers.Resizing(4, 4),
            "RandomFlip": lambda: keras.layers.RandomFlip(seed=1)}[preproc]
    pre, bn = make(), keras.layers.BatchNormalization()
    inp = keras.Input((4, 4, 3))
    model = keras.Model(inp, bn(keras.layers.Flatten()(pre(inp))))
    probes.randomise_bn(bn, rng)
    # the premise: the preprocessing layer maps x to itself bitwise in both modes
    same_t = verdict.equal("preprocessing_identity_training", x, to_numpy(pre(x, training=True)))
    same_i = verdict.equal("preprocessing_identity_inference", x, to_numpy(pre(x, training=False)))
    if not (same_t and same_i):
        pytest.fail(f"{preproc} does not map the symmetric images to themselves: the test's premise fails")

    s = probes.bn_state(bn)
    xf = x.reshape(n, -1).astype(np.float64)
    ref = reference.bn_inference(xf, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    bound = reference.bn_bound(xf, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    tr, bm, bv = reference.bn_train(xf, s["gamma"], s["beta"], s["eps"])
    tr_bound = reference.bn_bound(xf, s["gamma"], s["beta"], bm, bv, s["eps"], n_reduce=n)
    verdict.power("batch_statistics_alternative", tr - ref, bound + tr_bound, measured=True)  # both modes' bounds

    moving = None  # (before, after) of the moving statistics the entry point could have changed
    if entry == "call":
        y = to_numpy(model(x))
        moving = (s, probes.bn_state(bn))
    elif entry == "export_serve":
        import tensorflow as tf
        path = str(tmp_path / "exported")
        _export(model, path)
        loaded = tf.saved_model.load(path)
        var = {name: next(v for v in loaded.variables if name in v.name) for name in ("moving_mean", "moving_variance")}
        before = {"mean": np.array(var["moving_mean"].numpy(), np.float64), "var": np.array(var["moving_variance"].numpy(), np.float64)}
        y = np.asarray(loaded.serve(tf.constant(x)).numpy())
        after = {"mean": np.array(var["moving_mean"].numpy(), np.float64), "var": np.array(var["moving_variance"].numpy(), np.float64)}
        moving = (before, after)
    else:
        import tensorflow as tf
        path = str(tmp_path / "exported.tflite")
        _export(model, path, format="litert")
        ops, y = _tflite_run(tf, Path(path).read_bytes(), x)
        verdict.record(tflite_ops=ops)
        moving = (s, probes.bn_state(bn))  # the Keras model's own state: an export must not change it

    ok = verdict.within("output_vs_inference_reference", y.reshape(n, -1) - ref, bound)
    in_training = verdict.within("output_vs_batch_statistics_reference", y.reshape(n, -1) - tr, tr_bound)
    before, after = moving
    same_m = verdict.equal("moving_mean_unchanged", before["mean"], after["mean"])
    same_v = verdict.equal("moving_variance_unchanged", before["var"], after["var"])
    # training mode = batch-statistics output and (where the entry point has state: not a TFLite
    # interpreter, whose BN constants are frozen) one EMA step of the moving statistics
    stepped = entry == "export_litert" or _ema_step(verdict, "bn", before, after, xf, float(bn.momentum))
    verdict.mechanism("bn_training_mode", in_training and stepped,
                      f"output within {probes.ratio_text(verdict, 'output_vs_batch_statistics_reference')} x the bound of "
                      "the batch-statistics reference; moving statistics "
                      + ("not observable (TFLite)" if entry == "export_litert" else
                         "one EMA step towards the batch statistics" if stepped else "not one EMA step"))
    verdict.conclude(ok and same_m and same_v,
                     f"{preproc} -> BN via {entry}: |y - inference reference| = "
                     f"{probes.value_text(verdict, 'output_vs_inference_reference', '.3g')} "
                     f"(ratio {probes.ratio_text(verdict, 'output_vs_inference_reference')}), |y - batch-statistics "
                     f"reference| ratio {probes.ratio_text(verdict, 'output_vs_batch_statistics_reference')}; moving mean "
                     f"changed by {probes.value_text(verdict, 'moving_mean_unchanged', '.3g')}")


# --------------------------------------------------------------------------- C12


@pytest.mark.claim("C12")
@pytest.mark.parametrize("arg", C12_ARGS)
def test_keras2_arguments_honoured_or_rejected(run, verdict, keras, rng, tmp_path, arg, request):
    """A Keras 2 BN argument (or a multi-axis .h5) on this Keras: the specific refusal, or accepted and doing what it did."""
    if arg == "h5_multi_axis":
        if run.family == "tfkeras":  # tf_keras reloads its own file
            inp = keras.Input((3, 3, 2))
            keras.Model(inp, keras.layers.BatchNormalization(axis=[1, 2], name="bn")(inp)).save(tmp_path / "m.h5")
            path = tmp_path / "m.h5"
        else:
            art = request.getfixturevalue("tfkeras_artifacts")
            _made_by(verdict, art)
            path = art / "multi_axis_bn.h5"
        try:
            loaded = keras.models.load_model(str(path), compile=False)
        except C12_H5_REFUSAL[0] as exc:  # only the weight-shape refusal of the BN layer counts: anything else is an error
            if not verdict.refusal("error", exc, *C12_H5_REFUSAL):
                raise
            verdict.record(outcome="load failed")
            verdict.conclude(True, f"loading a .h5 with BN(axis=[1, 2]) is refused: {type(exc).__name__}: {str(exc)[:160]}")
            return
        layer = [lay for lay in loaded.layers if "BatchNormalization" in type(lay).__name__][0]
        axis = layer.axis if isinstance(layer.axis, int) else [int(a) for a in layer.axis]
        verdict.record(outcome="loaded", loaded_axis=axis)
        verdict.conclude(axis == [1, 2], f"the .h5 loaded with axis {axis} (saved: [1, 2])")
        return
    kwargs = C12_KWARGS[arg]
    name = next(iter(kwargs))
    types, names = C12_REFUSALS[arg]
    try:
        layer = keras.layers.BatchNormalization(**kwargs)
    except types as exc:  # only the specific refusal counts as "rejected": anything else is an error of the test
        if not verdict.refusal("error", exc, types, names):
            raise
        # the control: the same constructor without the Keras 2 argument is accepted (the refusal is the argument's)
        keras.layers.BatchNormalization(**{k: v for k, v in kwargs.items() if k != name})
        verdict.record(outcome="rejected at construction")
        verdict.conclude(True, f"BatchNormalization({name}=...) is refused at construction: {type(exc).__name__}: "
                               f"{str(exc)[:120]}")
        return
    ok = _honoured(verdict, keras, rng, arg, layer)
    verdict.record(outcome="accepted and honoured" if ok else "accepted and NOT honoured")
    verdict.conclude(ok, f"{arg}: accepted; {'honoured' if ok else 'silently not honoured'}")


# --------------------------------------------------------------------------- C17


@pytest.mark.claim("C17")
@pytest.mark.parametrize("entry", ["from_keras_model", "export_litert"])
def test_tflite_folds_bn_into_conv(run, verdict, keras, rng, tmp_path, entry):
    """TFLite ops of Conv2D -> BN -> ReLU (CONV_2D, RELU only) and TFLite's output vs Keras' within bounds."""
    _tensorflow_only(run, "TFLite conversion")
    if entry == "export_litert" and run.family == "tfkeras":
        pytest.skip("tf_keras' Model.export has no format='litert'")
    import tensorflow as tf
    conv, bn = keras.layers.Conv2D(4, 3, use_bias=False), keras.layers.BatchNormalization()
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.ReLU()(bn(conv(inp))))
    w = rng.normal(0.0, 0.3, (3, 3, 3, 4)).astype(np.float32)
    conv.kernel.assign(w)
    probes.randomise_bn(bn, rng)
    s = probes.bn_state(bn)
    x = rng.normal(0.0, 1.0, (2, 8, 8, 3)).astype(np.float32)
    y_k = to_numpy(model(x, training=False))
    if entry == "from_keras_model":
        blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    else:
        path = tmp_path / "m.tflite"
        _export(model, str(path), format="litert")
        blob = path.read_bytes()
    ops, y_t = _tflite_run(tf, blob, x)

    # float64 reference: valid 3x3 convolution, BN with the moving statistics, ReLU (1-Lipschitz)
    patches = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (3, 3), axis=(1, 2))  # b,i,j,c,u,v
    h = np.einsum("bijcuv,uvco->bijo", patches, w.astype(np.float64))
    habs = np.einsum("bijcuv,uvco->bijo", np.abs(patches), np.abs(w.astype(np.float64)))
    a = s["gamma"] / np.sqrt(s["var"] + s["eps"])
    ref = np.maximum(reference.bn_inference(h, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"]), 0.0)
    k = 27
    # Keras: the convolution's k-term dot products ((k+1)u sum|w||x|) scaled by |a|, then bn_bound.
    b_keras = np.abs(a) * (k + 1) * U32 * habs + reference.bn_bound(h, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    # TFLite, folded: kernel w*a (a itself ~3 roundings: rsqrt, *gamma; the product one more) and bias
    # beta - a*mean (2 roundings plus a's 3): (k + 1 + 4)u sum|a w||x| + u(|beta| + 5|a mean|), final add u|y|.
    b_tfl = U32 * ((k + 5) * np.abs(a) * habs + np.abs(s["beta"]) + 5 * np.abs(a * s["mean"]) + np.abs(ref))
    verdict.power("bn_dropped_alternative", np.maximum(h, 0.0) - ref, b_tfl + b_keras)
    folded = "CONV_2D" in ops and set(ops) <= FOLDED_OK
    verdict.record(tflite_ops=ops)
    # context, not checked: each output against the exact reference (the claim is TFLite against Keras)
    verdict.within("context_keras_vs_float64_reference", y_k - ref, b_keras)
    verdict.within("context_tflite_vs_float64_reference", y_t - ref, b_tfl)
    ok = verdict.within("tflite_vs_keras", y_t - y_k, b_tfl + b_keras)
    verdict.conclude(folded and ok, f"{entry}: TFLite ops {ops}; max |TFLite - Keras| = "
                                    f"{probes.value_text(verdict, 'tflite_vs_keras')} (ratio to the derived bound "
                                    f"{probes.ratio_text(verdict, 'tflite_vs_keras')})")


# --------------------------------------------------------------------------- C18


@pytest.mark.claim("C18")
@pytest.mark.parametrize("layer", ["dense", "conv1x1"])
def test_bias_before_bn_is_useless_in_training(B, verdict, keras, rng, layer):
    """Gradient of the bias before training-mode BN, and the output's change when it shifts, vs rounding bounds."""
    k, c = 6, 5
    if layer == "dense":
        pre, x = keras.layers.Dense(c), rng.normal(1.0, 1.0, (32, k)).astype(np.float32)
    else:
        pre, x = keras.layers.Conv2D(c, 1), rng.normal(1.0, 1.0, (8, 3, 3, k)).astype(np.float32)
    bn = keras.layers.BatchNormalization()
    pre.build(x.shape)
    bn.build(x.shape[:-1] + (c,))
    probes.randomise_bn(bn, rng)
    w = rng.normal(0.0, 0.5, (k, c))
    b = rng.normal(0.0, 1.0, c)
    pre.kernel.assign(w.reshape(tuple(pre.kernel.shape)).astype(np.float32))
    pre.bias.assign(b.astype(np.float32))
    w, b = np.asarray(w.astype(np.float32), np.float64), np.asarray(b.astype(np.float32), np.float64)
    s = probes.bn_state(bn)
    dy = rng.normal(0.0, 1.0, x.shape[:-1] + (c,)).astype(np.float32)
    axes = tuple(range(x.ndim - 1))
    m = int(np.prod(x.shape[:-1]))

    ops = probes.ops(keras)
    _, (g_w, g_b) = B.gradients(lambda xt: ops.sum(bn(pre(xt), training=True) * ops.convert_to_tensor(dy)), x,
                                [pre.kernel, pre.bias])
    h = to_numpy(pre(x)).astype(np.float64)  # the float32 input BN sees
    # exact: d loss / d bias = sum over the batch of d loss / d h, which is 0 for any h. Its float32 value
    # is at most the summed error of d loss / d h (reference.bn_backward_bound) plus the length-m sum's
    # rounding (m u sum|dh|).
    dx = reference.bn_backward(dy, h, s["gamma"], s["eps"])["x"]
    b_grad = reference.bn_backward_bound(dy, h, s["gamma"], s["eps"])["x"].sum(axis=axes) + m * U32 * np.abs(dx).sum(axis=axes)
    inv_moving = s["gamma"] / np.sqrt(s["var"] + s["eps"])
    verdict.power("inference_mode_bias_gradient", dy.astype(np.float64).sum(axis=axes) * inv_moving, b_grad)
    ok_grad = verdict.within("bias_gradient", g_b, b_grad)
    g_w_max = float(np.max(np.abs(finite("kernel_gradient", g_w))))
    verdict.record(bias_over_kernel_gradient=float(np.max(np.abs(g_b))) / g_w_max, kernel_gradient_max=g_w_max)

    # the output: training-mode BN of x W + b is independent of b; compare the outputs with b and with
    # b + delta to the same float64 reference. Each is within bn_bound (statistics over m values) plus the
    # Dense/1x1-conv rounding dh = (k+1)u(|x||W| + |b|) carried through training-mode BN:
    # |dy| <= |gamma|/s (|dh| + mean|dh| + |x_hat| mean(|x_hat| dh)).
    xs = x.astype(np.float64)
    delta = rng.uniform(0.5, 1.5, c)
    exact = xs @ w + b
    ref, bm, bv = reference.bn_train(exact, s["gamma"], s["beta"], s["eps"])
    sd = np.sqrt(bv + s["eps"])
    x_hat = (exact - bm) / sd

    def bound_for(bias):
        hh = exact - b + bias
        dh = (k + 1) * U32 * (np.abs(xs) @ np.abs(w) + np.abs(bias))
        carried = np.abs(s["gamma"]) / sd * (dh + dh.mean(axis=axes) + np.abs(x_hat) * (np.abs(x_hat) * dh).mean(axis=axes))
        return reference.bn_bound(hh, s["gamma"], s["beta"], bm + bias - b, bv, s["eps"], n_reduce=m) + carried

    y0 = to_numpy(bn(pre(x), training=True))
    pre.bias.assign((b + delta).astype(np.float32))
    y1 = to_numpy(bn(pre(x), training=True))
    b0, b1 = bound_for(b), bound_for(b + delta)
    verdict.power("inference_mode_output_shift", np.broadcast_to(inv_moving * delta, y0.shape), b0 + b1)
    # context, not checked: each output against the exact training-mode reference (the claim is their difference)
    verdict.within("context_output_vs_reference", y0 - ref, b0)
    verdict.within("context_output_with_shifted_bias_vs_reference", y1 - ref, b1)
    ok_out = verdict.within("output_change_with_bias_shift", y1 - y0, b0 + b1)
    g_max = float(np.max(np.abs(finite("bias gradient", g_b))))
    inf_g = float(np.max(np.abs(finite("inference-mode bias gradient", dy.astype(np.float64).sum(axis=axes) * inv_moving))))
    moved = float(np.max(np.abs(finite("output change", y1 - y0))))
    verdict.record(max_abs_bias_gradient=g_max, max_abs_output_change=moved,
                   inference_mode_max_output_shift=float(np.max(np.abs(finite("shift", inv_moving * delta)))))
    verdict.conclude(ok_grad and ok_out,
                     f"{layer}: max |d loss/d bias| = {g_max:.2e} (ratio to its rounding bound "
                     f"{probes.ratio_text(verdict, 'bias_gradient')}; in inference mode it would be up to {inf_g:.3g}); "
                     f"shifting the bias by up to {delta.max():.2f} moves the training-mode output by {moved:.2e} "
                     f"(ratio {probes.ratio_text(verdict, 'output_change_with_bias_shift')}; inference mode: up to "
                     f"{probes.value_text(verdict, 'inference_mode_max_output_shift', '.3g')})")


# --------------------------------------------------------------------------- C23


@pytest.mark.claim("C23")
def test_compat_v1_bn_trainable_false_uses_batch_statistics(run, verdict, keras, rng):
    """tf.compat.v1 BN with trainable=False, called with training=True: output vs the batch-statistics reference."""
    _tensorflow_only(run, "tf.compat.v1.keras")
    import tensorflow as tf
    cls = tf.compat.v1.keras.layers.BatchNormalization
    verdict.record(layer_class=f"{cls.__module__}.{cls.__name__}")
    layer = cls()
    layer.build((None, 50))
    probes.randomise_bn(layer, rng)
    layer.trainable = False
    x = (rng.normal(0, 1, (60, 50)) * 2 + 1).astype(np.float32)
    s = probes.bn_state(layer)
    y = to_numpy(layer(x, training=True))
    after = probes.bn_state(layer)
    ref_b, bm, bv = reference.bn_train(x, s["gamma"], s["beta"], s["eps"])
    bound_b = reference.bn_bound(x, s["gamma"], s["beta"], bm, bv, s["eps"], n_reduce=60)
    ref_i = reference.bn_inference(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    bound_i = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"])
    verdict.power("inference_mode_alternative", ref_b - ref_i, bound_b + bound_i, measured=True)  # both bounds
    ok = verdict.within("output_vs_batch_statistics_reference", y - ref_b, bound_b)
    inf = verdict.within("output_vs_inference_reference", y - ref_i, bound_i)
    verdict.equal("context_moving_mean_unchanged", s["mean"], after["mean"])  # context: the claim is the output
    verdict.mechanism("inference_mode", inf, f"output within {probes.ratio_text(verdict, 'output_vs_inference_reference')}"
                                             " x the bound of the inference-mode reference")
    verdict.conclude(ok, f"{probes.value_text(verdict, 'layer_class')} with trainable=False, training=True: "
                         f"batch-statistics reference ratio {probes.ratio_text(verdict, 'output_vs_batch_statistics_reference')}, "
                         f"inference reference ratio {probes.ratio_text(verdict, 'output_vs_inference_reference')}; "
                         f"moving mean changed by {probes.value_text(verdict, 'context_moving_mean_unchanged', '.3g')}")


# --------------------------------------------------------------------------- C24


@pytest.mark.claim("C24")
def test_tensor_training_flag_in_tf_function(run, verdict, keras, rng):
    """`training` as a boolean tensor in a tf.function: raises, or one trace with each mode's output and update."""
    _tensorflow_only(run, "tf.function")
    import tensorflow as tf
    layer = probes.make_bn(keras, 50, rng)
    x = (rng.normal(0, 1, (60, 50)) * 2 + 1).astype(np.float32)
    s0 = probes.bn_state(layer)
    ref_b, bm, bv = reference.bn_train(x, s0["gamma"], s0["beta"], s0["eps"])
    bound_b = reference.bn_bound(x, s0["gamma"], s0["beta"], bm, bv, s0["eps"], n_reduce=60)
    ref_i0 = reference.bn_inference(x, s0["gamma"], s0["beta"], s0["mean"], s0["var"], s0["eps"])
    verdict.power("mode_alternative", ref_b - ref_i0,  # both modes' bounds: 1x
                  bound_b + reference.bn_bound(x, s0["gamma"], s0["beta"], s0["mean"], s0["var"], s0["eps"]),
                  measured=True)
    f = tf.function(lambda v, t: layer(v, training=t))
    try:
        y_true = to_numpy(f(tf.constant(x), tf.constant(True)))
        s1 = probes.bn_state(layer)
        y_false = to_numpy(f(tf.constant(x), tf.constant(False)))
        s2 = probes.bn_state(layer)
    except Exception as exc:  # what raised is the evidence; its type is the mechanism
        raised = isinstance(exc, tf.errors.OperatorNotAllowedInGraphError)
        verdict.record(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        verdict.equal("context_moving_mean_unchanged", s0["mean"], probes.bn_state(layer)["mean"])  # context
        verdict.mechanism("tensor_flag_raises", raised, f"tracing raised {type(exc).__name__}")
        verdict.conclude(False, f"a boolean tensor as `training` inside tf.function raises {type(exc).__name__}")
        return
    verdict.mechanism("tensor_flag_raises", False, "no exception: the tensor flag was accepted")
    verdict.record(traces=int(f.experimental_get_tracing_count()))
    ok_t = verdict.within("training_true_vs_batch_statistics_reference", y_true - ref_b, bound_b)
    stepped = _ema_step(verdict, "training_true", s0, s1, x, float(layer.momentum))
    ref_i = reference.bn_inference(x, s1["gamma"], s1["beta"], s1["mean"], s1["var"], s1["eps"])
    bound_i = reference.bn_bound(x, s1["gamma"], s1["beta"], s1["mean"], s1["var"], s1["eps"])
    ok_f = verdict.within("training_false_vs_inference_reference", y_false - ref_i, bound_i)
    same = verdict.equal("training_false_moving_mean_unchanged", s1["mean"], s2["mean"])
    one_trace = verdict.evidence["traces"] == 1
    verdict.conclude(ok_t and stepped and ok_f and same and one_trace,
                     f"one trace ({probes.value_text(verdict, 'traces', 'd')} traced): training=tf.constant(True) ratio "
                     f"{probes.ratio_text(verdict, 'training_true_vs_batch_statistics_reference')} to the "
                     "batch-statistics reference, tf.constant(False) ratio "
                     f"{probes.ratio_text(verdict, 'training_false_vs_inference_reference')} to the inference one")


# --------------------------------------------------------------------------- C25


@pytest.mark.claim("C25")
def test_tfkeras_savedmodel_in_tfsmlayer_stays_in_inference(run, verdict, keras, rng, request):
    """A tf_keras SavedModel in TFSMLayer: statistics = the saved ones, unchanged by fit(), used by a training=True call."""
    if run.family == "tfkeras":
        pytest.skip("keras.layers.TFSMLayer is Keras 3 API (tf_keras reloads its SavedModels with load_model)")
    _tensorflow_only(run, "keras.layers.TFSMLayer (a TF SavedModel)")
    art = request.getfixturevalue("tfkeras_artifacts")
    _made_by(verdict, art)
    st = np.load(art / "bn_savedmodel_state.npz")
    # what the artefact script set (float64 draws, stored through set_weights as float32)
    saved = {k: np.asarray(np.asarray(st[k], np.float32), np.float64) for k in ("gamma", "beta", "mean", "var")}
    sm = keras.layers.TFSMLayer(str(art / "bn_savedmodel"), call_endpoint="serving_default")
    x = rng.normal(5.0, 1.0, (32, 8)).astype(np.float32)
    t = rng.normal(0.0, 1.0, (32, 1)).astype(np.float32)
    key = next(iter(sm(x[:1]).keys()))  # a tf_keras serving signature returns {output name: tensor}
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(1)(sm(inp)[key]))
    model.compile(keras.optimizers.SGD(learning_rate=1e-3), loss="mse")

    def state():
        out = {}
        for v in sm.weights:
            for nm, short in (("moving_mean", "mean"), ("moving_variance", "var"), ("gamma", "gamma"), ("beta", "beta")):
                if nm in probes.variable_name(v):
                    out[short] = np.array(to_numpy(v), np.float64)
        return out

    s0 = state()
    # the reloaded statistics are the saved ones (bitwise)
    is_saved = verdict.equal("reloaded_moving_mean_is_saved", saved["mean"], s0["mean"])
    is_saved &= verdict.equal("reloaded_moving_variance_is_saved", saved["var"], s0["var"])
    model.fit(x, t, batch_size=32, epochs=2, verbose=0, shuffle=False)
    s1 = state()
    same_m = verdict.equal("moving_mean_unchanged_by_fit", s0["mean"], s1["mean"])
    same_v = verdict.equal("moving_variance_unchanged_by_fit", s0["var"], s1["var"])
    verdict.record(gamma_change_by_fit=float(np.max(np.abs(s1["gamma"] - s0["gamma"]))),
                   beta_change_by_fit=float(np.max(np.abs(s1["beta"] - s0["beta"]))))
    eps = float(st["eps"])
    y = to_numpy(sm(x, training=True)[key])
    # the reference: the saved moving statistics (from the artefact, not from the reloaded layer), with gamma
    # and beta as fit() left them (they train through the layer: recorded above)
    ref = reference.bn_inference(x, s1["gamma"], s1["beta"], saved["mean"], saved["var"], eps)
    bound = reference.bn_bound(x, s1["gamma"], s1["beta"], saved["mean"], saved["var"], eps)
    tr, bm, bv = reference.bn_train(x, s1["gamma"], s1["beta"], eps)
    verdict.power("batch_statistics_alternative", tr - ref,  # both modes' bounds: 1x
                  bound + reference.bn_bound(x, s1["gamma"], s1["beta"], bm, bv, eps, n_reduce=32), measured=True)
    ok = verdict.within("training_call_vs_inference_reference", y - ref, bound)
    verdict.conclude(is_saved and same_m and same_v and ok,
                     "reloaded moving statistics " + ("= the saved ones" if is_saved else "differ from the saved ones")
                     + "; after fit they changed by "
                     f"{probes.value_text(verdict, 'moving_mean_unchanged_by_fit', '.3g')} (gamma trained by "
                     f"{probes.value_text(verdict, 'gamma_change_by_fit', '.3g')}); a training=True call is within "
                     f"{probes.ratio_text(verdict, 'training_call_vs_inference_reference')} x the bound of the "
                     "inference reference with the saved statistics")
