"""`bnspec audit`: bnspec's claims applied to the user's own model.

    from bnspec.audit import check
    result = check(model)              # a Keras model, a .keras/.h5 path, or "package.module:factory"
    assert not result.errors, result.table()

Static checks read the model's structure and config (bnspec.audit.static: no Keras import; for a
`.keras` archive only its config.json is read). Dynamic checks run forward passes on the given data
(random inputs of the model's input shape otherwise) and measure what BN does
(bnspec.audit.dynamic). Every finding names the layer path, severity, evidence, the claim behind it
and that claim's expected verdict on this Keras, and the fix (bnspec.audit.findings).

Module map:
  findings  Finding / Findings, the claim verdict lookup, which Keras the verdicts are for (no Keras)
  static    config parsing (.keras zip, .h5) and the static checks (no Keras)
  live      a live model -> the same tree; reads subclassed models' call() with ast (no Keras import)
  dynamic   forward-pass measurements and their judgement (Keras through bnspec.flavours)
  render    the human table (no Keras)
  cli       `bnspec audit` (register/run/main; --help imports no Keras)
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

from bnspec.audit.findings import SEVERITIES, Finding, Findings, UsageError  # noqa: F401

__all__ = ["check", "check_file", "Finding", "Findings", "UsageError", "SEVERITIES", "load_data", "load_model"]


def _looks_like_factory(spec: str) -> bool:
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


def load_model(path):
    """A saved model through the flavour's Keras (tf_keras for .h5 when that flavour is installed)."""
    from bnspec import BnspecError, flavours

    try:
        keras = flavours.keras_module()
    except BnspecError as exc:
        raise UsageError(f"the dynamic checks need Keras: {exc}") from exc
    loader = getattr(getattr(keras, "saving", None), "load_model", None) or keras.models.load_model
    try:
        return loader(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001 - a model Keras cannot load is a usage problem here
        raise UsageError(f"{path}: Keras could not load the model ({type(exc).__name__}: {str(exc)[:400]}); custom "
                         "classes need to be importable and registered, or pass package.module:factory") from exc


def load_data(data):
    """--data: an array, a list/dict of arrays, or a .npy / .npz file. An .npz with one array gives that
    array; with keys x / inputs, that one; otherwise the arrays in file order (several inputs)."""
    import numpy as np

    if data is None:
        return None
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise UsageError(f"--data {path}: no such file")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--data {path}: not a .npy/.npz array file ({exc})") from exc
        if isinstance(loaded, np.ndarray):
            data = loaded
        else:
            keys = list(loaded.files)
            if not keys:
                raise UsageError(f"--data {path}: the .npz holds no array")
            pick = next((k for k in ("x", "inputs", "x_test", "x_train") if k in keys), None)
            data = loaded[pick] if pick else (loaded[keys[0]] if len(keys) == 1 else [loaded[k] for k in keys])
    if isinstance(data, (list, tuple)):
        data = [np.asarray(a) for a in data]
        if len(data) == 1:
            data = data[0]
    elif isinstance(data, dict):
        data = {k: np.asarray(v) for k, v in data.items()}
    else:
        data = np.asarray(data)
    arrays = data if isinstance(data, list) else (list(data.values()) if isinstance(data, dict) else [data])
    if any(a.ndim == 0 or len(a) == 0 for a in arrays):
        raise UsageError("--data: the arrays must hold at least one example along axis 0")
    if len({len(a) for a in arrays}) != 1:
        raise UsageError("--data: the arrays have different numbers of examples")
    if arrays[0].dtype == object:
        raise UsageError("--data: object arrays are not model inputs")
    for i, a in enumerate(arrays):
        if np.issubdtype(a.dtype, np.floating) and a.dtype != np.float32 and a.dtype != np.float16:
            arrays[i] = a.astype(np.float32)
    if isinstance(data, list):
        return arrays
    if isinstance(data, dict):
        return dict(zip(data.keys(), arrays))
    return arrays[0]


def check_file(path) -> Findings:
    """Static checks of a saved `.keras` / `.h5` file: json (and h5py) only, no Keras import."""
    from bnspec.audit.static import audit_file

    return audit_file(path)


def check(model, data=None, *, dynamic: bool = True, max_examples: int = 64, seed: int = 0) -> Findings:
    """Audit a Keras model: static checks, then (dynamic=True) forward passes on `data` (array, list
    or dict of arrays, or a .npy/.npz path; random inputs of the model's input shape when None; at
    most `max_examples` are used). `model` may be a model object, a .keras/.h5 path, or
    "package.module:factory". The model's variables are left as they were. Returns Findings."""
    from bnspec.audit import findings as fmod
    from bnspec.audit import live, static

    started = time.perf_counter()
    source = str(model) if isinstance(model, (str, Path)) else None
    file_context = {}
    if source is not None:
        if _looks_like_factory(source):
            model = load_factory(source)
        else:
            file_findings = static.audit_file(source)  # validates the file without Keras first
            if not dynamic:
                return file_findings
            file_context = {k: file_findings.context[k] for k in ("format", "saved_by_keras")}
            model = load_model(source)
    target = fmod.target()
    if dynamic:
        try:
            from bnspec import flavours

            keras = flavours.keras_module()
            backend = keras.backend.backend() if hasattr(keras.backend, "backend") else target.backend
            target = fmod.Target(target.flavour, target.version, backend, target.origin)
        except Exception:  # noqa: BLE001
            pass
    root, notes = live.tree(model)
    found, static_notes = static.audit_tree(root, target, resolver=live.resolver)
    notes += static_notes
    scanned, scan_notes = live.scan_calls(root, target)
    found += scanned
    notes += scan_notes
    context = {"model": source or f"{type(model).__name__} {model.name!r}", "flavour": target.flavour,
               "keras": target.version, "backend": target.backend, "verdicts_for": target.origin,
               "mode": "static", "layers": sum(1 for _ in root.walk()) - 1,
               "bn_layers": sum(1 for x in root.walk() if x.is_bn), **file_context}
    measured = {}
    if dynamic:
        from bnspec.audit import dynamic as dyn

        given = load_data(data)
        x = given if given is not None else dyn.random_inputs(model, seed=seed)
        if dyn._n(x) > max_examples:
            x = dyn._rows(x, slice(0, max_examples))
        x = dyn.ensure_two(x, seed=seed)
        context["mode"] = "static + dynamic"
        context["data"] = (f"{dyn._n(x)} examples from {data}" if isinstance(data, (str, Path)) else
                           f"{dyn._n(x)} given examples") if given is not None else \
            f"{dyn._n(x)} random inputs (seed {seed})"
        m = dyn.measure(model, x)
        found += dyn.judge(m, root.path, found, target, data_given=given is not None)
        measured = _summary(m)
        if given is None:
            notes.append("moving statistics vs your data (L03): random inputs say nothing about the training "
                         "distribution; pass data (--data)")
    context["seconds"] = round(time.perf_counter() - started, 2)
    return Findings(static.sort(found), context=context, notes=notes, measured=measured)


def _summary(m: dict) -> dict:
    """The measurements for the JSON output (no arrays)."""
    out = {"examples": m["n"], "bn_layers": m["bn_layers"], "errors": m["errors"], "seconds": m["seconds"],
           "outputs_finite": m["outputs_finite"], "nonfinite_variables": m["nonfinite_variables"]}
    out["variables_changed_by"] = {e: [f"{p}:{n}" for p, n, _ in info["changed"]] for e, info in m["entries"].items()}
    if "call_vs_training_false" in m:
        out["call_vs_training_false"] = m["call_vs_training_false"]
    out["batch_dependence"] = m.get("batch_dependence", {})
    if "batch_size_1" in m:
        out["batch_size_1"] = m["batch_size_1"]
    return out
