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
from bnspec.audit.findings import lookup, target
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


def expected(run, claim: str, fmt: str, **case) -> str:
    """The catalogue's verdict for this case on the run's Keras and backend: holds | refuted."""
    return lookup(claim, target(run), [{"fmt": fmt, **case}])["verdict"]


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
    if expected(run, "D01", fmt) == "refuted":
        assert f.severity == "error", f.title  # the catalogue expects this pair to fail here: it must show
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
    if expected(run, "D01", fmt) == "refuted":
        pytest.skip(f"the catalogue expects {fmt} to fail to export here (D01)")
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
        verdict = expected(run, "D03", fmt, kind="functional")
        if verdict == "refuted":  # the export keeps the baked training=True: batch statistics
            assert (f.id, f.severity) == ("D03", "error"), (fmt, f.title)
            assert m[fmt]["within"] is False and m[fmt]["ratio"] > 1e3
            assert any("reproduces model(x)" in c for c in f.confirmed), f.confirmed  # measured, not guessed
        else:
            assert (f.id, f.severity) == ("D01", "info") and m[fmt]["within"] is True, (fmt, f.confirmed)


def test_cli_export_json_and_exit_status(run, keras, tmp_path, capsys):
    need("openvino")
    rng = np.random.default_rng(7)
    clean, trap = tmp_path / "clean.keras", tmp_path / "trap.keras"
    gallery.clean_functional(keras, rng).model.save(clean)
    gallery.hardcoded_training_true(keras, rng).model.save(trap)
    assert main([str(clean), "--export", "openvino", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = [(f["id"], f["check"], f["severity"]) for f in out["findings"] if f["check"].startswith("export")]
    assert ("D01", "export-drift", "info") in rows
    assert out["measured"]["export"]["openvino"]["within"] is True and "export" in out["context"]["mode"]
    rc = main([str(trap), "--export", "openvino", "--json", "--fail-on", "error"])
    out = json.loads(capsys.readouterr().out)
    d03 = [f for f in out["findings"] if f["id"] == "D03"]
    if expected(run, "D03", "openvino", kind="functional") == "refuted":
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
