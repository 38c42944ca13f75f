"""`bnspec audit`: bnspec's claims applied to the user's own model.

    from bnspec.audit import check
    result = check(model)              # a Keras model, a .keras/.h5 path, or "package.module:factory"
    assert not result.errors, result.table()

Static checks read the model's structure and config (no Keras import; for a `.keras` archive only its
config.json is read). Dynamic checks run forward passes on the given data (random inputs of the model's
input shape otherwise) and measure what BN does. A model without a BatchNormalization layer gets its answer
at once: no forward pass. Every finding names the layer path, severity, evidence, the claim behind it and
that claim's expected verdict on this Keras, and the fix.

This module and bnspec.audit.cli are the audit's entry points: they make the run (bnspec.run.Run: which
Keras flavour and backend the verdicts are for) once, or take the caller's (`check(..., run=...)`), and
pass it down; nothing below them reads the environment.

Module map (the order a newcomer reads them in):
  findings      Finding / Findings (records, JSON), Target (which Keras), the claim verdict lookup (no Keras)
  render        the human table (no Keras; formats what it is given)
  tree          a config -> the Layer tree, wrappers included; graph questions (downstream, upstream)
  saved         reading a .keras / .h5 file's config (json, zipfile, h5py: no Keras)
  checks/       the static checks, one module per claim family (see its docstring)
  static        the static audit: tree -> every check; audit_file for a saved file (no Keras)
  live          a live model -> the same tree; reads subclassed models' call() with ast (no Keras import)
  inputs        --data, random inputs, examples/rows (numpy)
  measurements  what the forward passes measured, typed (Measurements, Moments, BNState, ...)
  forward       the forward passes themselves: measure(model, x) -> Measurements (variables restored)
  judge         entry-point symptoms: variables written, batch dependence, model(x) vs inference (M01, M03, N04, C10)
  statistics    the BN statistics: untrained, near-zero, stale (L03) vs train/inference shift (L04), C29 per step
  --export (check(..., export=...)):
  rules         the float32 rounding rule of each layer kind (the bound's derivation; numpy)
  bound         the rules composed through a graph: each tensor's drift bound, each layer self-checked (numpy)
  graph         a Keras 3 functional model run node by node: its layers as Ops, every tensor's float32 value
  locate        the artefact's intermediate tensors (onnx, openvino, litert) matched to each BN layer's output
  export        export, serve, bound and locate: ExportRun (bnspec.subjects.export does the exporting)
  drift         ExportRun -> one finding per format, with the likely cause from the deploy claims (D01-D08)
  cli           `bnspec audit` (register/run/main; --help imports no Keras)
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from bnspec import BnspecError
from bnspec.audit import inputs
from bnspec.audit.findings import SEVERITIES, Finding, Findings, UsageError
from bnspec.audit.inputs import load_data
from bnspec.run import Run

__all__ = ["check", "check_file", "current_run", "Finding", "Findings", "UsageError", "SEVERITIES", "load_data",
           "load_model"]


def current_run() -> tuple[Run | None, str]:
    """(the run this process would audit with, why there is none): Run.from_env(), or (None, the reason)
    when the environment names an unknown flavour or backend; the static checks still run then."""
    try:
        return Run.from_env(), ""
    except BnspecError as exc:
        return None, str(exc)


def looks_like_factory(spec: str) -> bool:
    if ":" not in spec or os.path.exists(spec):
        return False
    module, _, attr = spec.partition(":")
    return bool(module) and bool(attr) and all(part.isidentifier() for part in module.split(".") + attr.split("."))


def load_factory(spec: str):
    """`package.module:factory` -> the model (factory() if callable, else the object itself)."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"{spec}: cannot import {module_name} ({exc})") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{spec}: {module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    model = obj() if callable(obj) and not hasattr(obj, "layers") else obj
    if not hasattr(model, "layers") or not hasattr(model, "variables"):
        raise UsageError(f"{spec}: the factory returned {type(model).__name__}, not a Keras model")
    return model


def load_model(path, run: Run | None, why_no_run: str = ""):
    """A saved model through the run's Keras (tf_keras for the tfkeras flavour)."""
    from bnspec import flavours

    if run is None:
        raise UsageError(f"the dynamic checks need Keras: {why_no_run}")
    try:
        keras = flavours.keras_module(run)
    except BnspecError as exc:
        raise UsageError(f"the dynamic checks need Keras: {exc}") from exc
    loader = getattr(getattr(keras, "saving", None), "load_model", None) or keras.models.load_model
    try:
        return loader(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001 - a model Keras cannot load is a usage problem here (exit 2, with why)
        raise UsageError(f"{path}: Keras could not load the model ({type(exc).__name__}: {str(exc)[:400]}); custom "
                         "classes need to be importable and registered, or pass package.module:factory") from exc


def check_file(path, run: Run | None = None) -> Findings:
    """Static checks of a saved `.keras` / `.h5` file: json (and h5py) only, no Keras import. `run`: the
    Keras whose verdicts apply (default: this process's, Run.from_env())."""
    from bnspec.audit import static

    return static.audit_file(path, run if run is not None else current_run()[0])


def _no_forward_pass(found: Findings, started: float) -> Findings:
    """A model without BN: the answer without a forward pass."""
    from bnspec.audit.static import NO_BN_NOTE

    if NO_BN_NOTE not in found.notes:
        found.notes.append(NO_BN_NOTE)
    found.measured = {"forward_passes": 0, "bn_layers": 0}
    found.context["seconds"] = round(time.perf_counter() - started, 2)
    return found


def export_formats(export) -> tuple[str, ...]:
    """`export` ("onnx,litert", or a sequence of names) as a tuple of bnspec.subjects.export.FORMATS."""
    from bnspec.subjects.export import FORMATS

    names = [f.strip() for f in (export.split(",") if isinstance(export, str) else (export or ())) if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown:
        raise UsageError(f"--export: unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))


def _inputs(model, data, max_examples: int, seed: int):
    """(the given data or None, the examples the dynamic checks run on)."""
    given = load_data(data)
    x = given if given is not None else inputs.random_inputs(model, seed=seed)
    if inputs.examples(x) > max_examples:
        x = inputs.take(x, slice(0, max_examples))
    return given, inputs.ensure_two(x, seed=seed)


def _exports(model, x, formats, target, root_path: str, export_dir, result: Findings) -> None:
    """Export, serve and judge every format (bnspec.audit.export, bnspec.audit.drift) into `result`."""
    import tempfile

    from bnspec.audit import drift
    from bnspec.audit import export as measuring

    started = time.perf_counter()
    result.context["mode"] += f" + export ({', '.join(formats)})"
    if not isinstance(x, np.ndarray):
        result.notes.append("--export: the export check serves models with one input array; this model takes several")
        return
    with tempfile.TemporaryDirectory(prefix="bnspec-export-") as tmp:
        measured = measuring.measure(model, x, formats, Path(export_dir) if export_dir else Path(tmp))
        found, notes, summary = drift.judge(measured, target, root_path)
    result += found
    result.notes += notes
    summary["seconds"]["total"] = round(time.perf_counter() - started, 2)
    result.measured["export"] = summary


def check(model, data=None, *, dynamic: bool = True, max_examples: int = 64, seed: int = 0,
          run: Run | None = None, export=(), export_dir=None) -> Findings:
    """Audit a Keras model: static checks, then (dynamic=True) forward passes on `data` (array, list
    or dict of arrays, or a .npy/.npz path; random inputs of the model's input shape when None; at
    most `max_examples` are used). `model` may be a model object, a .keras/.h5 path, or
    "package.module:factory". `run` (bnspec.run.Run) names the Keras flavour and backend whose verdicts
    apply and which loads a saved file; default: this process's (Run.from_env()). A model without a BN
    layer is answered without a forward pass. The model's variables are left as they were.

    `export` ("onnx,litert,openvino" or a sequence of bnspec.subjects.export.FORMATS): also export the model
    in each format, serve it in the format's runtime on the same inputs and report its drift against
    model(x, training=False) with a float32 bound derived through the model's graph (one finding per format;
    bnspec.audit.drift). Artefacts go to a temporary directory, or to `export_dir` (kept)."""
    from bnspec.audit import findings as fmod
    from bnspec.audit import live, static, tree

    formats = export_formats(export)
    if formats and not dynamic:
        raise UsageError("--export runs the model: it needs the dynamic checks (drop --static)")
    started = time.perf_counter()
    why_no_run = ""
    if run is None:
        run, why_no_run = current_run()
    source = str(model) if isinstance(model, (str, Path)) else None
    file_context = {}
    if source is not None:
        if looks_like_factory(source):
            model = load_factory(source)
        else:
            file_findings = static.audit_file(source, run)  # validates the file without Keras first
            if not dynamic:
                return file_findings
            if file_findings.context["bn_layers"] == 0 and file_findings.context["bn_layers_certain"] and not formats:
                return _no_forward_pass(file_findings, started)  # no Keras import either
            file_context = {k: file_findings.context[k] for k in ("format", "saved_by_keras")}
            model = load_model(source, run, why_no_run)
    target = fmod.target(run)
    root, notes = live.tree(model)
    found, static_notes = static.audit_tree(root, target, resolver=live.resolver)
    notes += static_notes
    scanned, scan_notes = live.scan_calls(root, target)
    found += scanned
    notes += scan_notes
    layers, bn_count = tree.count(root)
    context = {"model": source or f"{type(model).__name__} {model.name!r}", "flavour": target.flavour,
               "keras": target.version, "backend": target.backend, "verdicts_for": target.origin,
               "mode": "static", "layers": layers, "bn_layers": bn_count, **file_context}
    result = Findings(static.sort(found), context=context, notes=notes)
    if not dynamic:
        return result
    from bnspec.audit import forward, judge, statistics

    if bn_count == 0 and not forward.bn_objects(model):
        if not formats:
            return _no_forward_pass(result, started)
        given, x = _inputs(model, data, max_examples, seed)
        result.context["data"] = f"{inputs.examples(x)} " + ("given examples" if given is not None else "random inputs")
        _no_forward_pass(result, started)
        _exports(model, x, formats, target, root.path, export_dir, result)
        result.context["seconds"] = round(time.perf_counter() - started, 2)
        return Findings(static.sort(result), context=result.context, notes=result.notes, measured=result.measured)
    given, x = _inputs(model, data, max_examples, seed)
    n = inputs.examples(x)
    context["mode"] = "static + dynamic"
    context["data"] = (f"{n} examples from {data}" if isinstance(data, (str, Path)) else f"{n} given examples") \
        if given is not None else f"{n} random inputs (seed {seed})"
    m = forward.measure(model, x, training_pass=given is not None)
    found += judge.judge_entries(m, root.path, found, target)
    found += statistics.judge_statistics(m, root.path, found, target, data_given=given is not None, root=root)
    if given is None:
        notes.append("moving statistics vs your data (L03/L04): random inputs say nothing about the training "
                     "distribution; pass data (--data)")
    if m.inputs_unreadable:
        notes.append(f"{m.inputs_unreadable} BN call(s) gave inputs that could not be read: no statistics "
                     "comparison for them")
    result = Findings(found, context=context, notes=notes, measured=m.summary())
    if formats:
        _exports(model, x, formats, target, root.path, export_dir, result)
    result.context["seconds"] = round(time.perf_counter() - started, 2)
    return Findings(static.sort(result), context=result.context, notes=result.notes, measured=result.measured)
