"""`bnspec audit MODEL --export FORMAT[,...]` / `check(..., export=...)` with the formats' real runtimes
(onnxruntime, OpenVINO, ai-edge-litert: `pip install -e '.[deploy]'`; each test skips, naming the package,
where one is missing):

* ResNet50 (stride-2 convolutions, ZeroPadding, MaxPooling, Add, BN folded by every converter) exported to
  onnx, litert and openvino (pinned to f32) computes Keras' model(x, training=False) within the derived bound,
  and every BN layer is located in the runtime within its own bound; what the catalogue expects on this
  Keras and backend (D01) decides which formats must pass and which must fail to export;
* power: the same ResNet50 exported with one BN layer's epsilon changed is beyond the bound, first at that
  layer (cause D02: its numbers are not in the graph); OpenVINO at the CPU's bf16 default is beyond it (D08);
* a hard-coded training=True (the gallery's trap): beyond the bound with cause D03 where the catalogue says
  the export keeps the baked flag, within it where it does not, measured against model(x)'s own bound;
* the command line: --export, --json, exit status; a missing runtime names its package.

On every backend the suite runs on: a format Keras refuses there must be reported as not applicable, a pair
the catalogue expects to fail must show as an error, and a ResNet50 failure that is not BN's (NOT_BN below,
measured) must still happen, with its message: a strict expected failure that fails when it is fixed.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from bnspec.audit import check, drift
from bnspec.audit import export as measuring
from bnspec.audit.cli import main
from bnspec.audit.findings import target
from bnspec.claims import BY_ID
from bnspec.subjects import export as ex
from tests.audit import gallery
from tests.audit.export_subjects import resnet50, with_epsilon

PIP = "pip install -e '.[deploy]'"
NEEDS = {"onnx": ("onnx", "onnxruntime", "tf2onnx"), "openvino": ("openvino",), "litert": ("ai_edge_litert",)}
FORMATS = ("onnx", "litert", "openvino")
WRONG_LAYER, WRONG_EPSILON = "conv3_block2_2_bn", 1e-2  # ResNet50's 1.001e-5: its scale moves by 1e-2/(2 var)


def need(*formats):
    missing = sorted({m for f in formats for m in NEEDS[f] if importlib.util.find_spec(m) is None})
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (the deployment runtimes: {PIP})")


# ResNet50 failures on a backend that are not BN's, measured (2026-12-04, Keras 3.15.1): (backend, format) ->
# (the runtime's message, why). BN's own behaviour on the pair is D01's, on models without the failing layer.
NOT_BN = {
    ("jax", "onnx"): ("Unsupported pooling size", "onnxruntime refuses the MaxPool node that jax2onnx writes for "
                      "ResNet50's 3x3/2 MaxPooling2D: a pooling matter; D01 holds on JAX's ONNX export"),
}


def rule(run, claim: str, fmt: str, **case):
    """The catalogue's expectation (verdict, mechanism) for this case on the run's Keras and backend."""
    t = target(run)
    return BY_ID[claim].expectation(t.flavour, t.version, {"fmt": fmt, **case}, backend=t.backend)


def expected(run, claim: str, fmt: str, **case) -> str:
    """The catalogue's verdict for this case on the run's Keras and backend: holds | refuted."""
    return rule(run, claim, fmt, **case).verdict


def settled_elsewhere(run, s, f, fmt: str, claim: str = "D01", resnet: bool = False, **case) -> bool:
    """s: the served format (None where only the audit's finding is at hand). True (after checking how the audit reports it) where this format does not reach the bound on this
    backend for a reason the catalogue or NOT_BN names: Keras refuses the format here (not applicable, info),
    the catalogue expects the pair to fail (an error finding), or a measured non-BN failure (it must still
    fail with its message)."""
    refused = isinstance(s.error, ex.NotApplicable) if s is not None else f.check == "export-not-applicable"
    if refused:  # Keras' own refusal, quoted
        assert (f.check, f.severity) == ("export-not-applicable", "info") and f.evidence["keras_says"], f.title
        return True
    r = rule(run, claim, fmt, **case)
    if r.verdict == "refuted" and r.mechanism == "export_fails":
        assert (f.check, f.severity) == ("export-failed", "error"), f.title  # the expected failure shows
        return True
    known = NOT_BN.get((run.backend, fmt)) if resnet else None
    if known is not None:
        message, why = known
        text = " ".join([f.title, str(f.evidence), *f.confirmed])
        assert f.severity == "error" and message in text, f"NOT_BN{(run.backend, fmt)} no longer fails ({why}): " \
            f"remove it; the audit says {f.title}"
        return True
    return False


@pytest.fixture(scope="module")
def resnet(keras):
    keras.utils.set_random_seed(20150211)
    return resnet50(keras, np.random.default_rng(20150211))


@pytest.fixture(scope="module")
def resnet_run(resnet, tmp_path_factory):
    need(*FORMATS)
    model, x = resnet
    return measuring.measure(model, x, FORMATS, tmp_path_factory.mktemp("resnet"))


@pytest.fixture(scope="module")
def wrong_run(keras, resnet, tmp_path_factory):
    need(*FORMATS)
    model, x = resnet
    wrong = with_epsilon(keras, model, WRONG_LAYER, WRONG_EPSILON, x)
    return measuring.measure(model, x, FORMATS, tmp_path_factory.mktemp("wrong"), export_model=wrong)


def _pinned(run, fmt):
    return next(s for s in run.served if s.fmt == fmt and not s.variant)


@pytest.mark.parametrize("fmt", FORMATS)
def test_resnet50_export_within_its_bound(run, resnet_run, fmt):
    s = _pinned(resnet_run, fmt)
    found, _, measured = drift.judge(resnet_run, target(run), "resnet50")
    f = next(f for f in found if f.evidence.get("format") == fmt and (fmt != "openvino" or "default" not in f.title))
    if settled_elsewhere(run, s, f, fmt, resnet=True):
        return
    if s.error is not None:
        pytest.fail(f"{fmt}: {s.error}")
    assert resnet_run.bound is not None, resnet_run.why_no_bound
    assert resnet_run.graph["bn_layers"] == 53 and resnet_run.graph["foldable"] == 53
    m = measured[s.label]
    assert (f.id, f.severity, m["within"]) == ("D01", "info", True), f.confirmed
    assert 0 < m["ratio"] <= 1.0 and np.isfinite(m["max_abs_drift"])  # rounding seen, within the bound
    loc = s.location.summary()
    assert loc["located"] == 53 and loc["first_beyond_bound"] is None and loc["worst_ratio"] <= 1.0, loc
    assert sum(s.census.bn_ops.values()) == 0  # every converter here folds BN (D02): the fold terms were needed


@pytest.mark.parametrize("fmt", FORMATS)
def test_power_an_export_with_another_epsilon_is_beyond_the_bound(run, resnet_run, wrong_run, fmt):
    """One BN layer's epsilon changed in the artefact: located at that layer, beyond its bound; the control
    (the right artefact, same layer) within it."""
    s0 = _pinned(resnet_run, fmt)
    if s0.error is not None or s0.location is None:
        pytest.skip(f"{fmt} does not serve ResNet50 here or exposes no tensors (test_resnet50_export_within_its_"
                    f"bound[{fmt}] says why): {s0.error or s0.locate_note}")
    path = f"resnet50/{WRONG_LAYER}"
    right = {m.path: m for m in _pinned(resnet_run, fmt).location.matches}[path]
    assert right.ratio is not None and right.ratio <= 1.0
    s = _pinned(wrong_run, fmt)
    first = s.location.first
    assert first is not None and first.path == path, s.location.summary()
    assert first.ratio > 3.0  # a relative change of ~1e-2/(2 var) in the scale, far above the rounding
    found, _, measured = drift.judge(wrong_run, target(run), "resnet50")
    f = next(f for f in found if f.evidence.get("format") == fmt and "default" not in f.title)
    assert (f.severity, f.layer) == ("error", path), f.confirmed
    assert f.id == "D02" and "numbers are not in the graph" in " ".join(f.confirmed)
    assert measured[s.label]["within"] is False


def test_power_openvino_at_its_bf16_default_is_beyond_the_bound(run, resnet_run):
    variant = [s for s in resnet_run.served if s.fmt == "openvino" and s.variant]
    if not variant:
        pinned = _pinned(resnet_run, "openvino")
        if pinned.error is not None:
            pytest.skip(f"openvino does not serve ResNet50 here: {pinned.error}")
        pytest.skip(f"this CPU's OpenVINO default precision is {measuring.default_precision()}: no bf16 variant")
    s = variant[0]
    found, _, measured = drift.judge(resnet_run, target(run), "resnet50")
    f = next(f for f in found if f.evidence.get("format") == "openvino" and "default" in f.title)
    assert s.precision == "bf16" and any(k.endswith(":bf16") for k in s.census.runtime_ops)
    assert (f.id, f.severity) == ("D08", "info") and measured[s.label]["within"] is False
    assert f.verdict == "refuted"  # D08 on this Keras: the catalogue agrees
    assert s.location.first is not None and s.location.first.ratio > 10.0  # bf16's 2^-8 against float32's 2^-24


def test_hardcoded_training_true_is_found_per_format(run, keras):
    need(*FORMATS)
    case = gallery.hardcoded_training_true(keras, np.random.default_rng(7))
    result = check(case.model, export=",".join(FORMATS), run=run)
    assert ("N05", "m/bn") in result.ids("error")  # the static finding is still there
    m = result.measured["export"]
    for fmt in FORMATS:
        f = next(f for f in result if f.evidence.get("format") == fmt and "default" not in f.title)
        if settled_elsewhere(run, None, f, fmt, "D03", kind="functional"):
            continue
        if expected(run, "D03", fmt, kind="functional") == "refuted":  # the export keeps the baked training=True: batch statistics
            assert (f.id, f.severity) == ("D03", "error"), (fmt, f.title)
            assert m[fmt]["within"] is False and m[fmt]["ratio"] > 1e3
            assert any("reproduces model(x)" in c for c in f.confirmed), f.confirmed  # measured, not guessed
        else:
            assert (f.id, f.severity) == ("D01", "info") and m[fmt]["within"] is True, (fmt, f.confirmed)


def test_cli_export_json_and_exit_status(run, keras, tmp_path, capsys):
    # the first format the catalogue expects to export here (openvino, except on JAX where Keras cannot)
    fmt = next((f for f in ("openvino", "onnx") if expected(run, "D01", f) == "holds"), None)
    assert fmt is not None, "D01 expects neither openvino nor onnx to export on this backend"
    need(fmt)
    rng = np.random.default_rng(7)
    clean, trap = tmp_path / "clean.keras", tmp_path / "trap.keras"
    gallery.clean_functional(keras, rng).model.save(clean)
    gallery.hardcoded_training_true(keras, rng).model.save(trap)
    assert main([str(clean), "--export", fmt, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = [(f["id"], f["check"], f["severity"]) for f in out["findings"] if f["check"].startswith("export")]
    assert ("D01", "export-drift", "info") in rows
    assert out["measured"]["export"][fmt]["within"] is True and "export" in out["context"]["mode"]
    rc = main([str(trap), "--export", fmt, "--json", "--fail-on", "error"])
    out = json.loads(capsys.readouterr().out)
    d03 = [f for f in out["findings"] if f["id"] == "D03"]
    if expected(run, "D03", fmt, kind="functional") == "refuted":
        assert rc == 1 and d03 and d03[0]["severity"] == "error"
    assert main([str(clean), "--export", "onnx,coreml"]) == 2
    assert "unknown format(s) coreml" in capsys.readouterr().err
    assert main([str(clean), "--static", "--export", "onnx"]) == 2
    assert "drop --static" in capsys.readouterr().err


def test_a_missing_runtime_is_reported_with_its_package(run, keras, monkeypatch):
    """No runtime needed: OpenVINO is hidden from this process (or absent); the audit says which package."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    case = gallery.clean_functional(keras, np.random.default_rng(7))
    result = check(case.model, export="openvino", run=run)
    f = next(f for f in result if f.check.startswith("export"))
    if expected(run, "D01", "openvino") == "refuted" and f.check == "export-not-applicable":
        pytest.skip("Keras refuses openvino on this backend before it imports the runtime")
    assert (f.check, f.severity) == ("export-runtime-missing", "warning"), f.title
    assert "openvino" in f.evidence["missing"] and PIP in f.fix
    assert result.at_least("warning")  # a requested check that did not run fails the default --fail-on


def test_the_audit_puts_back_what_an_export_writes(run, keras, tmp_path, monkeypatch):
    """An export that writes the model's variables (a baked training=True on PyTorch moves the statistics, on
    JAX leaves tracers: the D claims) is undone and said; power: the exporter here writes a moving mean."""
    case = gallery.clean_functional(keras, np.random.default_rng(7))
    model = case.model
    bn = next(layer for layer in model.layers if "BatchNormalization" in type(layer).__name__)
    before = [np.array(v.numpy()) for v in model.variables]

    def writing_export(m, fmt, workdir, runtime_options=None):
        bn.moving_mean.assign(np.full(bn.moving_mean.shape, 7.0, np.float32))
        raise ex.ExportFailed("export", "a stand-in exporter that writes a moving mean, then fails")

    monkeypatch.setattr(ex, "export", writing_export)
    served = measuring._serve(model, "onnx", np.zeros((2, 8), np.float32), tmp_path)
    assert served[0].side_effect.startswith("exporting changed 1 of the model's variables (") and "moving_mean" in \
        served[0].side_effect
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(np.array(v.numpy()), b)  # put back bitwise
    f = drift._failed(served[0], target(run), "m")
    assert f.severity == "error" and f.confirmed == [served[0].side_effect]
