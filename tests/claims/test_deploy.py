"""BN after export (bnspec/claims/deploy.py): Keras models exported with Model.export in each format and served by
the format's own runtime (bnspec.subjects.export), measured against Keras and against the float64 reference
with the float32 bound derived for the exported evaluation (export.network_bound).

Subjects: the notebook's trained MLP (the `trained` fixture, a fresh copy), and small Conv+BN models with
randomised BN state: NHWC Sequential, NCHW Functional (axis=1), NHWC subclassed; a Dense->BN(training=True)
model (Functional and subclassed); the trained MLP fine-tuned; the NHWC model under mixed_float16. Every subject
is built once per session from its own seeded generator, and every export is made once per session (cached
with its outcome under the session's tmp dir): a claim's case that needs an artefact reuses it.

A pair Keras refuses is not applicable (its message); a runtime that is not installed skips the case; an export
that fails is D01's finding (D01 is refuted by it) and skips the other claims' cases with the error."""

from __future__ import annotations

import numpy as np
import pytest

from bnspec.measure.backend import to_numpy
from bnspec.measure.verdict import not_applicable
from bnspec.reference import U16, U32
from bnspec.subjects import export as ex
from tests.claims import _kit as probes

FORMATS = ex.FORMATS
SUBJECTS = ("mlp_trained", "conv_nhwc_sequential", "conv_nchw_functional", "conv_nhwc_subclassed")
SEED = 20150211
BF16 = 2.0**-8
F32 = {"precision": "f32"}  # OpenVINO at float32 unless a case asks otherwise (its default on a bf16 CPU is D08's)


# --------------------------------------------------------------------------- subjects


class Subject:
    """A model, its inputs, its numpy plan (export.plan_of) and Keras' own inference output."""

    def __init__(self, model, x, plan, keras):
        self.model, self.x, self.plan = model, x, plan
        self.keras_output = probes.f64(model(x, training=False), keras)
        self.predict_output = probes.f64(model.predict(x, batch_size=len(x), verbose=0), keras)  # before any export

    def pairs(self):
        """(the linear step before, or None; the BN step) for every BN step of the plan."""
        out = []
        for i, step in enumerate(self.plan):
            if step.kind == "bn":
                prev = self.plan[i - 1] if i and self.plan[i - 1].kind in ("dense", "conv") else None
                out.append((prev, step))
        return out


def _conv_layers(keras, channels_first: bool, dtype=None):
    fmt, axis = ("channels_first", 1) if channels_first else ("channels_last", -1)
    kw = {"dtype": dtype} if dtype else {}
    L = keras.layers
    return [L.Conv2D(6, 3, use_bias=False, data_format=fmt, name="conv_0", **kw), L.BatchNormalization(axis=axis, name="bn_0", **kw),
            L.ReLU(name="relu_0", **kw), L.Conv2D(5, 3, padding="same", data_format=fmt, name="conv_1", **kw),
            L.BatchNormalization(axis=axis, name="bn_1", **kw), L.ReLU(name="relu_1", **kw),
            L.GlobalAveragePooling2D(data_format=fmt, name="gap", **kw), L.Dense(4, name="head", **kw)]


def _set_weights(layers, rng):
    for layer in layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Dense"):
            layer.kernel.assign(rng.normal(0.0, 0.3, tuple(layer.kernel.shape)).astype(np.float32))
            if layer.use_bias:
                layer.bias.assign(rng.normal(0.0, 0.5, tuple(layer.bias.shape)).astype(np.float32))
        elif "BatchNorm" in kind:
            probes.randomise_bn(layer, rng)


def _subclassed(keras, layers, name):
    class Chain(keras.Model):
        def __init__(self):
            super().__init__(name=name)
            self.chain = list(layers)

        def call(self, x, training=None):
            for layer in self.chain:
                x = layer(x, training=training) if "BatchNorm" in type(layer).__name__ else layer(x)
            return x

    return Chain()


def _hardcoded(keras, kind):
    """Dense(8) -> BN called with training=True -> tanh -> Dense(3), on 6 features."""
    L = keras.layers
    dense, bn, act, head = L.Dense(8, name="dense"), L.BatchNormalization(name="bn"), L.Activation("tanh", name="tanh"), L.Dense(3, name="head")
    if kind == "functional":
        inp = keras.Input((6,))
        return keras.Model(inp, head(act(bn(dense(inp), training=True)))), [dense, bn, act, head]

    class Hardcoded(keras.Model):
        def __init__(self):
            super().__init__(name="hardcoded_subclassed")
            self.dense, self.bn, self.act, self.head = dense, bn, act, head

        def call(self, x):
            return self.head(self.act(self.bn(self.dense(x), training=True)))

    return Hardcoded(), [dense, bn, act, head]


class Deploy:
    """The session's subjects and exports (each made once, with its outcome)."""

    def __init__(self, request, keras, root):
        self.request, self.keras, self.root = request, keras, root
        self.subjects: dict = {}
        self.exports: dict = {}
        self.changed: dict = {}

    def subject(self, name: str, fmt: str = "") -> Subject:
        """The subject `name`; the small ones are built anew (with the same weights) for each format, so that
        what one export does to its model (D09) reaches no other format's case."""
        key = (name, "" if name.startswith("mlp_") else fmt)
        if key not in self.subjects:
            self.subjects[key] = self._build(name)
        return self.subjects[key]

    def _build(self, name: str) -> Subject:
        keras = self.keras
        rng = np.random.default_rng([SEED, sum(map(ord, name))])
        if name in ("mlp_trained", "mlp_finetuned"):
            model = self.request.getfixturevalue("trained").fresh()
            x = self.request.getfixturevalue("mnist").x_test[:64]
            if name == "mlp_finetuned":
                self.stale_plan = ex.plan_of(model)
                self.finetune_record = _finetune(keras, model, self.request.getfixturevalue("mnist"))
            return Subject(model, x, ex.plan_of(model), keras)
        if name.startswith("hardcoded_"):
            model, layers = _hardcoded(keras, name.split("_", 1)[1])
            x = probes.feature_inputs(rng, (16, 6), -1)
            model(x)
            _set_weights(layers, rng)
            return Subject(model, x, ex.plan_of(layers), keras)
        cf = "nchw" in name
        layers = _conv_layers(keras, cf, dtype="mixed_float16" if name == "conv_mixed" else None)
        shape = (3, 8, 8) if cf else (8, 8, 3)
        if name.endswith("subclassed"):
            model = _subclassed(keras, layers, "conv_subclassed")
        elif name.endswith("functional"):
            inp = h = keras.Input(shape)
            for layer in layers:
                h = layer(h)
            model = keras.Model(inp, h)
        else:
            model = keras.Sequential([keras.Input(shape)] + layers)
        x = rng.normal(0.0, 1.0, (7, *shape)).astype(np.float32)
        model(x)
        _set_weights(layers, rng)
        return Subject(model, x, ex.plan_of(layers), keras)

    def export(self, subject: str, fmt: str, variant: str = "", runtime_options=None, **kw) -> ex.Artefact:
        """The artefact of (subject, fmt, variant: export options), exported once; with OpenVINO at float32
        unless `runtime_options` say otherwise (another runtime option is another session of the same file)."""
        key = (subject, fmt, variant)
        if key not in self.exports:
            model = self.subject(subject, fmt).model
            before = probes.snapshot(model)
            try:
                self.exports[key] = ex.export(model, fmt, self.root / subject, name=f"{fmt}{variant and '-' + variant}",
                                              runtime_options=F32 if fmt == "openvino" else None, **kw)
            except (ex.NotApplicable, ex.RuntimeMissing, ex.ExportFailed) as exc:
                self.exports[key] = exc
            try:  # what the export did to the Keras model (D09)
                self.changed[key] = (before, probes.snapshot(model))
            except Exception as exc:  # noqa: BLE001 - a variable that can no longer be read (a leaked JAX tracer)
                self.changed[key] = (before, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        got = self.exports[key]
        if isinstance(got, Exception):
            raise got
        if runtime_options is not None:
            okey = key + (repr(sorted(runtime_options.items())),)
            if okey not in self.exports:
                self.exports[okey] = got.fresh(**runtime_options)
            got = self.exports[okey]
        return got


def _finetune(keras, model, mnist) -> dict:
    """One epoch (4 steps of 64) with BN trainable, then one with BN frozen (trainable=False): returns how much
    the moving statistics and the Dense kernels moved in each stage."""
    from bnspec.subjects import model as bn_model

    x, y = mnist.x_train[:256], mnist.y_train[:256]
    bns = bn_model.bn_layers(model)
    snap = lambda: (probes.moving_state(bns), probes.flat(to_numpy(d.kernel) for d in bn_model.dense_layers(model)))  # noqa: E731
    s0 = snap()
    bn_model.compile_model(model, keras, learning_rate=1e-3)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    s1 = snap()
    for bn in bns:
        bn.trainable = False
    bn_model.compile_model(model, keras, learning_rate=1e-3)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    s2 = snap()
    return {"stage1_moving_change": float(np.abs(s1[0] - s0[0]).max()), "stage2_moving_change": float(np.abs(s2[0] - s1[0]).max()),
            "stage2_kernel_change": float(np.abs(s2[1] - s1[1]).max())}


@pytest.fixture(scope="session")
def deploy(request, keras, tmp_path_factory):
    return Deploy(request, keras, tmp_path_factory.mktemp("deploy"))


def _artefact(deploy, subject, fmt, variant="", failure_is_finding=False, **kw) -> ex.Artefact:
    try:
        return deploy.export(subject, fmt, variant, **kw)
    except ex.NotApplicable as exc:
        not_applicable(f"Keras refuses format={fmt} here: {exc.reason}")
    except ex.RuntimeMissing as exc:
        pytest.skip(exc.reason)
    except ex.ExportFailed as exc:
        if failure_is_finding:
            raise
        pytest.skip(f"format={fmt}: the {exc.stage} failed (D01 records it): {exc.error[:200]}")


def _export_failed(verdict, exc: ex.ExportFailed, what: str) -> None:
    """Conclude a case whose export, load or run failed: a refutation by `export_fails`, with the failure as evidence."""
    verdict.record(failed_stage=exc.stage, error=exc.error[:600])
    verdict.mechanism("export_fails", True, f"the {exc.stage} raised {exc.error[:300]}")
    verdict.conclude(False, f"{what}: the {exc.stage} raised {exc.error[:200]}")


def _describe(verdict, art: ex.Artefact) -> None:
    verdict.record(**art.describe())


# --------------------------------------------------------------------------- D01


# Converters whose artefact differs from one export of the same model to the next: (backend, format) -> exports
# per D01 case. litert-torch 0.10 merges the notebook model's same-shape Dense kernels on most exports but not all
# (measured 2026-12-04: 12 of 12 exports in one process lost a kernel, 3 of 16 fresh processes' first export
# kept them all), so one export would decide the verdict by luck; a wrong artefact in any of them refutes D01
# (a user gets it on some exports), and the count is evidence. 5 exports miss a merge with p < 0.01 at 3/16.
EXPORTS = {("torch", "litert"): 5}


@pytest.mark.claim("D01")
@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_model_computes_keras_inference(verdict, deploy, run, fmt, subject):
    """Export, serve in the format's runtime, compare with model(x, training=False) within the derived bound
    (the worst of EXPORTS exports where the converter is not deterministic)."""
    s = deploy.subject(subject, fmt)
    ref, b_keras, b_export = ex.network_bound(s.x, s.plan)
    n = EXPORTS.get((run.backend, fmt), 1)
    try:
        art = _artefact(deploy, subject, fmt, failure_is_finding=True)
        y = art.serve(s.x).astype(np.float64)
        missing = _kernels_missing(art, s)
        tries = [(art, y, missing)]
        for i in range(1, n):
            again = ex.export(s.model, fmt, deploy.root / subject / f"again-{i}", name=fmt,
                              runtime_options=F32 if fmt == "openvino" else None)
            tries.append((again, again.serve(s.x).astype(np.float64), _kernels_missing(again, s)))
    except ex.ExportFailed as exc:
        return _export_failed(verdict, exc, f"{fmt}")
    if n > 1:
        verdict.record(exports=n, exports_missing_a_kernel=sum(bool(t[2]) for t in tries),
                       max_abs_export_minus_keras_per_export=[float(np.max(np.abs(t[1] - s.keras_output))) for t in tries])
    art, y, missing = max(tries, key=lambda t: float(np.max(np.abs(t[1] - s.keras_output))))  # the worst export
    _describe(verdict, art)
    verdict.record(census=art.census().text())
    verdict.record(kernels_missing_from_the_graph=missing)
    verdict.mechanism("kernel_missing", bool(missing), f"the graph holds no constant equal to the kernel of {missing} "
                      "(neither as it is nor folded with its BN's scale)" if missing else "every kernel is in the graph")
    alt, _, _ = ex.network_bound(s.x, ex.training_plan(s.x, s.plan))
    verdict.power("batch_statistics_alternative", alt - ref, b_keras + b_export)
    verdict.within("keras_vs_float64_reference", s.keras_output - ref, b_keras)
    verdict.within("export_vs_float64_reference", y - ref, b_export)
    ok = verdict.within("export_vs_keras", y - s.keras_output, b_keras + b_export)
    verdict.conclude(ok, f"{fmt} ({art.runtime} {art.runtime_version}): max |export - Keras| = "
                         f"{probes.within_text(verdict, 'export_vs_keras')}, ratio {probes.ratio_text(verdict, 'export_vs_keras')}")


def _kernels_missing(art, s) -> list:
    """The linear layers (plan index) whose kernel is not among the artefact's constants, as it is or folded."""
    consts, out = art.constants(), []
    for i, step in enumerate(s.plan):
        if step.kind in ("dense", "conv"):
            nxt = s.plan[i + 1] if i + 1 < len(s.plan) else None
            scale = ex._scale_shift(nxt.p)[0] if nxt is not None and nxt.kind == "bn" else None
            if ex.kernel_found(consts, step.p["W"], scale) is None:
                out.append(f"{step.kind} {i}")
    return out


# --------------------------------------------------------------------------- D02


@pytest.mark.claim("D02")
@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_bn_numbers_reach_the_graph(verdict, deploy, fmt, subject):
    """Census of the exported graph; each BN layer's numbers found among its constants (kept bitwise or folded)."""
    s = deploy.subject(subject, fmt)
    art = _artefact(deploy, subject, fmt)
    _describe(verdict, art)
    census, consts = art.census(), art.constants()
    verdict.record(ops=census.ops, bn_ops=census.bn_ops, runtime_ops=census.runtime_ops, opaque=census.opaque)
    forms, ok = [], True
    for i, (lin, bn) in enumerate(s.pairs()):
        carry = ex.carried(consts, ex.bn_state(bn), lin.p["W"] if lin else None, lin.p["b"] if lin else None)
        verdict.record(**{f"bn_{i}_form": carry.form or "not found",
                          f"bn_{i}_found": {k: f"{v['const'][:60]} (ratio {v['ratio']:.3g})" for k, v in carry.facts.items()}})
        if carry.eps_alternative is not None:  # epsilon implicit in a folded number: it must be distinguishable
            verdict.power(f"bn_{i}_without_epsilon_alternative", carry.eps_alternative, 1.0)
        forms.append(carry.form or "not found")
        ok = ok and carry.ok
    verdict.conclude(ok, f"{fmt}: ops {census.text()}; BN: {'; '.join(forms)}")


# --------------------------------------------------------------------------- D03


def _mode(verdict, name, y, refs) -> str:
    """Which reference y matches within its bound: 'moving statistics', 'batch statistics' or 'neither'."""
    (r_inf, b_inf), (r_tr, b_tr) = refs
    inf = verdict.within(f"{name}_vs_moving_statistics", y - r_inf, b_inf)
    tr = verdict.within(f"{name}_vs_batch_statistics", y - r_tr, b_tr)
    return "moving statistics" if inf and not tr else "batch statistics" if tr and not inf else "neither"


@pytest.mark.claim("D03")
@pytest.mark.parametrize("kind", ["functional", "subclassed"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_hardcoded_training_true_is_exported_as_predict_runs_it(verdict, deploy, fmt, kind):
    """bn(x, training=True) inside the model: the exported graph's statistics vs predict()'s."""
    s = deploy.subject(f"hardcoded_{kind}", fmt)
    n = len(s.x)
    try:
        art = _artefact(deploy, f"hardcoded_{kind}", fmt, failure_is_finding=True)
        batch = art.input_shape()[:1]
        fixed = batch and isinstance(batch[0], int) and batch[0] != n
        y = art.serve(s.x).astype(np.float64)
    except ex.ExportFailed as exc:
        return _export_failed(verdict, exc, f"{fmt}, {kind}")
    _describe(verdict, art)
    verdict.record(artefact_input_shape=[str(d) for d in art.input_shape()], served_in_batches_of=batch[0] if fixed else n)
    y_pred = s.predict_output  # predict() before any export touched the model (D09)
    r_inf, bk, be = ex.network_bound(s.x, s.plan)
    tplan = ex.training_plan(s.x, s.plan)
    r_tr, bkt, bet = ex.network_bound(s.x, tplan)
    verdict.power("modes_differ", r_tr - r_inf, bk + be + bkt + bet)
    predict_mode = _mode(verdict, "predict", y_pred, ((r_inf, bk), (r_tr, bkt)))
    if fixed:  # served in batches of the traced size: batch statistics of those batches
        r_tr = np.concatenate([ex.network_bound(s.x[i:i + batch[0]], ex.training_plan(s.x[i:i + batch[0]], s.plan))[0]
                               for i in range(0, n, batch[0])])
    export_mode = _mode(verdict, "export", y, ((r_inf, be), (r_tr, bet)))
    verdict.record(predict_mode=predict_mode, export_mode=export_mode)
    verdict.mechanism("export_uses_batch_statistics", export_mode == "batch statistics" and predict_mode == "moving statistics",
                      f"export: {export_mode}; predict: {predict_mode}")
    verdict.conclude(export_mode == predict_mode != "neither", f"{fmt}, {kind}: the export normalises with {export_mode}, "
                     f"predict() with {predict_mode}")


# --------------------------------------------------------------------------- D04


@pytest.mark.claim("D04")
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_model_serves_any_batch(verdict, deploy, keras, fmt, batch):
    """One call with a batch of one / of five: outputs per example vs Keras within the bound."""
    s = deploy.subject("conv_nhwc_sequential", fmt)
    art = _artefact(deploy, "conv_nhwc_sequential", fmt)
    _describe(verdict, art)
    shape = art.input_shape()
    verdict.record(artefact_input_shape=[str(d) for d in shape])
    x = s.x[:batch]
    try:
        y = art.run(x).astype(np.float64)
    except ex.ExportFailed as exc:
        verdict.record(error=exc.error[:400])
        static = bool(shape) and isinstance(shape[0], int) and shape[0] != batch
        verdict.mechanism("batch_fixed_at_export", static, f"declared input shape {shape}; the run raised {exc.error[:200]}")
        verdict.conclude(False, f"{fmt}: a batch of {batch} is refused ({exc.error[:160]}); input shape {shape}")
        return
    y_k = probes.f64(s.model(x, training=False), keras)
    ref, bk, be = ex.network_bound(x, s.plan)
    ok = verdict.within("export_vs_keras", y - y_k, bk + be)
    verdict.conclude(ok, f"{fmt}: batch of {batch} accepted (input shape {shape}); max |export - Keras| = "
                         f"{probes.within_text(verdict, 'export_vs_keras')}")


# --------------------------------------------------------------------------- D05


@pytest.mark.claim("D05")
@pytest.mark.parametrize("subject", ["conv_nhwc_sequential", "hardcoded_functional"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_serving_never_updates_statistics(verdict, deploy, rng, fmt, subject):
    """Serve A, B, A: A's outputs bitwise equal, the runtime's state (variables, buffers) bitwise unchanged."""
    s = deploy.subject(subject, fmt)
    art = _artefact(deploy, subject, fmt).fresh()  # a new session of the file: its own state, untouched by other cases
    _describe(verdict, art)
    xb = (s.x[::-1] * 1.5 + 0.5).astype(np.float32)
    try:
        before = art.state()
        ya1 = art.serve(s.x)
        art.serve(xb)
        ya2 = art.serve(s.x)
        after = art.state()
    except ex.ExportFailed as exc:
        pytest.skip(f"format={fmt}: the artefact's {exc.stage} failed: {exc.error[:200]}")
    same_out = verdict.equal("same_batch_same_output", ya1, ya2)
    moved = {k: float(np.abs(np.asarray(after[k], np.float64) - np.asarray(before[k], np.float64)).max()) for k in before}
    verdict.record(state_variables=len(before), state_changed={k: v for k, v in moved.items() if v})
    same_state = verdict.equal("state_unchanged", np.array([max(moved.values(), default=0.0)]), np.zeros(1))
    verdict.mechanism("serve_writes_moving_statistics", any(v and "moving" in k for k, v in moved.items()),
                      f"changed: {sorted(k for k, v in moved.items() if v)}")
    verdict.conclude(same_out and same_state, f"{fmt}, {subject}: outputs of the same batch "
                     f"{'equal' if same_out else 'differ'}; {len(before)} state tensors, "
                     f"{sum(1 for v in moved.values() if v)} changed")


# --------------------------------------------------------------------------- D06


@pytest.mark.claim("D06")
@pytest.mark.parametrize("fmt", FORMATS)
def test_finetuned_model_exports_its_current_statistics(verdict, deploy, fmt):
    """Fine-tune (BN trainable, then frozen), export: constants = the layers' current state, not the stale one."""
    s = deploy.subject("mlp_finetuned")
    verdict.record(**deploy.finetune_record)
    art = _artefact(deploy, "mlp_finetuned", fmt)
    _describe(verdict, art)
    consts = art.constants()
    stale_pairs = [(deploy.stale_plan[i - 1], step) for i, step in enumerate(deploy.stale_plan) if step.kind == "bn"]
    ok, stale_found = True, False
    for i, ((lin, bn), (slin, sbn)) in enumerate(zip(s.pairs(), stale_pairs)):
        now = ex.carried(consts, ex.bn_state(bn), lin.p["W"], lin.p["b"])
        old = ex.carried(consts, ex.bn_state(sbn), slin.p["W"], slin.p["b"])
        verdict.record(**{f"bn_{i}_current": now.form or "not found", f"bn_{i}_before_finetuning": old.form or "not found"})
        ok = ok and now.ok
        stale_found = stale_found or old.ok
    if stale_found:
        from bnspec.measure.verdict import NoPower

        raise NoPower("D06: the statistics from before fine-tuning are found in the graph too: no power")
    # the output, as evidence: a wrong output with the statistics right is D01's finding (a kernel missing)
    missing = _kernels_missing(art, s)
    y = art.serve(s.x).astype(np.float64)
    ref, bk, be = ex.network_bound(s.x, s.plan)
    close = verdict.within("export_vs_keras", y - s.keras_output, bk + be)
    verdict.record(kernels_missing_from_the_graph=missing)
    verdict.conclude(ok, f"{fmt}: the current statistics {'are' if ok else 'are not'} in the graph, those from before "
                         f"fine-tuning are not; max |export - Keras| = {probes.within_text(verdict, 'export_vs_keras')}"
                         + ("" if close else f" (beyond: kernels missing from the graph {missing}, see D01)"))


# --------------------------------------------------------------------------- D07


@pytest.mark.claim("D07")
@pytest.mark.parametrize("fmt", FORMATS)
def test_mixed_precision_model_exports_within_float16_bound(verdict, deploy, fmt):
    """mixed_float16 Conv+BN: export, serve, compare with Keras within the float16 bound."""
    s = deploy.subject("conv_mixed", fmt)
    try:
        art = _artefact(deploy, "conv_mixed", fmt, failure_is_finding=True)
        y = art.serve(s.x).astype(np.float64)
    except ex.ExportFailed as exc:
        return _export_failed(verdict, exc, f"{fmt}")
    _describe(verdict, art)
    verdict.record(census=art.census().text(), output_dtype=str(art.run(s.x[:1]).dtype))
    ref, bk, be = ex.network_bound(s.x, s.plan, u_keras=U16, u_export=U16, weight_rel=U16, weight_rel_keras=U16,
                                   input_rel_keras=U16, input_rel_export=U16)
    alt, _, _ = ex.network_bound(s.x, ex.training_plan(s.x, s.plan))
    verdict.power("batch_statistics_alternative", alt - ref, bk + be)
    verdict.within("keras_vs_float64_reference", s.keras_output - ref, bk)
    ok = verdict.within("export_vs_keras", y - s.keras_output, bk + be)
    verdict.conclude(ok, f"{fmt}: max |export - Keras| = {probes.within_text(verdict, 'export_vs_keras')}")


# --------------------------------------------------------------------------- D08

VARIANTS = ("openvino_default", "litert_float16", "litert_dynamic_range")


def _variant(deploy, variant):
    if variant == "openvino_default":
        return _artefact(deploy, "mlp_trained", "openvino", runtime_options={"precision": None})
    import tensorflow as tf  # the converter's enums (Keras passes them to the TFLite converter or litert-torch)

    kw = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if variant == "litert_float16":
        kw["target_spec"] = {"supported_types": [tf.float16]}
    return _artefact(deploy, "mlp_trained", "litert", variant=variant, **kw)


@pytest.mark.claim("D08")
@pytest.mark.parametrize("variant", VARIANTS)
def test_runtime_reduced_precision_keeps_float32_bound(verdict, deploy, keras, variant):
    """OpenVINO's default precision / LiteRT float16 and dynamic-range quantisation vs D01's float32 bound."""
    s = deploy.subject("mlp_trained")
    art = _variant(deploy, variant)
    _describe(verdict, art)
    census = art.census()
    verdict.record(ops=census.ops, runtime_ops=census.runtime_ops)
    if variant == "openvino_default":
        precision = str(art.session()[2].get_property("INFERENCE_PRECISION_HINT"))
        verdict.record(inference_precision=precision)
        if "bf16" not in precision and "bfloat16" not in precision:
            not_applicable(f"OpenVINO's default inference precision on this CPU is {precision}, not bf16: D01 measures it")
    else:
        kinds = _weight_dtypes(art)
        verdict.record(weight_dtypes=kinds)
        wanted = "int8" if variant == "litert_dynamic_range" else "float16"
        if wanted not in kinds:
            not_applicable(f"the artefact Keras wrote for {variant} holds no {wanted} weight (2-D weight tensors: {kinds}): "
                           "nothing was quantised on this backend")
    y = art.serve(s.x).astype(np.float64)
    ref, bk, be = ex.network_bound(s.x, s.plan)
    ok = verdict.within("export_vs_keras_float32_bound", y - s.keras_output, bk + be)
    # top-1 agreement with Keras on 1,000 test images: what the lost precision costs in practice
    x1k = deploy.request.getfixturevalue("mnist").x_test[:1000]
    agree = float(np.mean(np.argmax(art.serve(x1k), 1) == np.argmax(probes.f64(s.model(x1k, training=False), keras), 1)))
    verdict.record(top1_agreement_with_keras_1000=agree)
    if variant == "openvino_default":
        layers = {k.split(":")[0]: k.split(":")[1] for k in census.runtime_ops}
        _, bk16, be16 = ex.network_bound(s.x, s.plan, u_export=BF16, weight_rel=BF16, input_rel_export=BF16)
        within = verdict.within("export_vs_keras_bf16_bound", y - s.keras_output, bk16 + be16)
        verdict.mechanism("bf16_inference", within and "bf16" in layers.get("FullyConnected", ""),
                          f"precision hint {precision}; FullyConnected runs in {layers.get('FullyConnected')}")
    else:
        consts = art.constants()
        if variant == "litert_float16":
            _, _, be16 = ex.network_bound(s.x, s.plan, weight_rel=U16 * (1 + 6 * U32 / U16))
            within = verdict.within("export_vs_keras_float16_weight_bound", y - s.keras_output, bk + be16)
            verdict.mechanism("float16_weights", within and "float16" in kinds, f"weight tensors {kinds}")
        else:
            steps = _int8_fold_check(verdict, consts, s)
            verdict.mechanism("int8_weights", "int8" in kinds and steps, f"weight tensors {kinds}; dequantised weights "
                              f"{'equal' if steps else 'do not equal'} the folded kernels within half a quantisation step")
    verdict.conclude(ok, f"{variant}: max |export - Keras| = {probes.within_text(verdict, 'export_vs_keras_float32_bound')} "
                         f"(ratio {probes.ratio_text(verdict, 'export_vs_keras_float32_bound')}); top-1 agreement {agree:.3f}")


def _weight_dtypes(art) -> list:
    it = art._litert(delegates=False)
    return sorted({d["dtype"].__name__ for d in it.get_tensor_details() if len(d["shape"]) == 2})


def _int8_fold_check(verdict, consts, s) -> bool:
    """Every Dense+BN pair's folded kernel W*a is among the dequantised int8 weights within half a step
    (max|W*a| per output channel / 127 / 2) plus the fold's float32 rounding."""
    ok = True
    for i, (lin, bn) in enumerate(s.pairs()):
        a, _ = ex._scale_shift(bn.p)
        target = lin.p["W"] * a
        half = np.abs(target).max(axis=0, keepdims=True) / 127 / 2
        best = min((float(np.max(np.abs(c.T - target) / (half + (ex.R_A + 1) * U32 * np.abs(target))))
                    for _, c in consts if c.shape == target.T.shape), default=np.inf)
        verdict.record(**{f"bn_{i}_int8_kernel_ratio": best if np.isfinite(best) else "not found"})
        ok = ok and best <= 1.0
    return ok


# --------------------------------------------------------------------------- D09


@pytest.mark.claim("D09")
@pytest.mark.parametrize("subject", ["conv_nhwc_sequential", "hardcoded_functional", "hardcoded_subclassed"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_leaves_the_keras_model_unchanged(verdict, deploy, fmt, subject):
    """Every variable of the Keras model bitwise the same after model.export(format=fmt) as before it."""
    s = deploy.subject(subject, fmt)
    try:
        _artefact(deploy, subject, fmt, failure_is_finding=True)
    except ex.ExportFailed as exc:
        verdict.record(export_failed=exc.error[:300])  # what the attempt did to the model is measured all the same
    before, after = deploy.changed[(subject, fmt, "")]
    if isinstance(after, str):  # the model's variables cannot be read any more
        verdict.record(variables_unreadable=after[:400])
        verdict.mechanism("variables_hold_tracers", "Tracer" in after, after[:300])
        verdict.conclude(False, f"{fmt}, {subject}: after the export the model's variables cannot be read: {after[:160]}")
        return
    same = probes.unchanged(verdict, before, after)
    moved = {k: float(np.abs(after[k] - before[k]).max()) for k in before if not np.array_equal(after[k], before[k])}
    verdict.record(variables_changed=moved)
    bns = [bn for _, bn in s.pairs()]
    stepped = False
    if moved and bns:  # one training-mode update of the moving statistics with the export's sample input?
        stepped = all("moving" in k for k in moved)
    verdict.mechanism("trace_updates_moving_statistics", stepped, f"changed: {sorted(moved)}")
    verdict.conclude(all(same.values()), f"{fmt}, {subject}: {len(moved)} variable(s) changed by the export"
                     + (f": {', '.join(sorted(moved))}" if moved else ""))
