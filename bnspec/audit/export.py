"""`bnspec audit MODEL --export FORMAT[,...]`, the measuring half: export the user's model in each format
(bnspec.subjects.export: Model.export, served in the format's own runtime), run it on the audit's inputs,
and measure it against Keras' `model(x, training=False)`: the output drift, the float32 bound propagated
through the model's graph (bnspec.audit.bound on bnspec.audit.graph's capture), and each BN layer's
activations inside the runtime where it exposes them (bnspec.audit.locate). The judging half, with the
causes from the deploy claims, is bnspec.audit.drift. No Keras import: the model comes built.

OpenVINO is served pinned to float32 (INFERENCE_PRECISION_HINT=f32): its default on a CPU with native
bfloat16 is bf16 (claim D08), which is measured as a second, separate variant when the CPU's default is not f32.
For a model whose graph bakes training=True into a BN call, model(x) (the baked flag, batch statistics) is
captured as well, with its own bound: the alternative an export that traced model.__call__ computes (D03).
The model's variables are restored after that pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bnspec import BnspecError
from bnspec.audit import bound as gbound
from bnspec.audit import graph, locate
from bnspec.subjects import export as ex

CHUNK = 8  # examples per captured pass: the capture holds every tensor of the model for them
PINNED = {"openvino": {"precision": "f32"}}


@dataclass
class Served:
    """One format (or a runtime variant of it) as exported and served, or why it was not."""

    fmt: str
    variant: str = ""  # "" | "default precision"
    art: object = None
    y: np.ndarray | None = None
    census: object = None
    precision: str | None = None  # OpenVINO's inference precision for this variant
    error: BnspecError | None = None  # NotApplicable | RuntimeMissing | ExportFailed
    seconds: dict = field(default_factory=dict)
    location: locate.Location | None = None
    locate_note: str = ""
    notes: list = field(default_factory=list)  # what could not be measured for this format, and why
    side_effect: str = ""  # what exporting did to the Keras model's variables (restored since)

    @property
    def label(self) -> str:
        return self.fmt + (f" at its {self.variant} ({self.precision})" if self.variant else "")


@dataclass
class ExportRun:
    served: list
    y_keras: np.ndarray
    examples: int
    bound: np.ndarray | None = None  # elementwise drift bound of the output
    why_no_bound: str = ""
    graph: dict = field(default_factory=dict)  # what the bound walked: layers, BN, folded pairs, self-checks
    baked: list = field(default_factory=list)  # BN paths with a baked training=True
    batch_alt: tuple | None = None  # (model(x) with the baked flag, its bound) or None
    batch_alt_note: str = ""
    bn_ops: dict = field(default_factory=dict)  # BN path -> the Op (weights), for the carried-numbers check
    linear_before: dict = field(default_factory=dict)  # BN path -> the Dense/Conv Op a converter may fold into it
    linears: list = field(default_factory=list)  # (path, kernel, scale of the BN folded into it or None)
    seconds: dict = field(default_factory=dict)


def _first_output(out) -> np.ndarray:
    from bnspec.audit.forward import to_numpy

    while isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, dict):
        out = out[sorted(out)[0]]
    return to_numpy(out)


def default_precision() -> str | None:
    """OpenVINO's default inference precision on this CPU (bf16 where the CPU has native bfloat16), or None
    when OpenVINO is not installed. Raises what OpenVINO raises when it cannot tell."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def _snapshot(model) -> list:
    """(variable, its value) for every variable of the model: exporting may write them (D-claims: a baked
    training=True moves the statistics on PyTorch and leaves JAX tracers in them)."""
    return [(v, np.array(v.numpy())) for v in model.variables]


def _restore(snapshot: list) -> str:
    """Puts every variable back; returns what the export had changed ("" when nothing)."""
    changed = []
    for v, value in snapshot:
        try:
            now = np.array(v.numpy())
            moved = now.shape != value.shape or not np.array_equal(now, value, equal_nan=True)
        except Exception as exc:  # noqa: BLE001 - a variable that cannot be read (a leaked JAX tracer) changed
            moved, now = True, type(exc).__name__
        if moved:
            changed.append(v.path if hasattr(v, "path") else v.name)
            v.assign(value)
    return (f"exporting changed {len(changed)} of the model's variables ({', '.join(changed[:4])}"
            f"{', ...' if len(changed) > 4 else ''}); the audit put them back") if changed else ""


def _serve(model, fmt: str, x, workdir) -> list[Served]:
    s = Served(fmt, precision=PINNED.get(fmt, {}).get("precision"))
    t0 = time.perf_counter()
    snapshot = _snapshot(model)
    try:
        try:
            s.art = ex.export(model, fmt, workdir / fmt, runtime_options=PINNED.get(fmt))
        finally:
            s.side_effect = _restore(snapshot)
        s.seconds["export"] = round(s.art.export_seconds, 2)
        t1 = time.perf_counter()
        s.y = s.art.serve(x).astype(np.float64)
        s.seconds["run"] = round(time.perf_counter() - t1, 3)
        s.census = _census(s)
    except (ex.NotApplicable, ex.RuntimeMissing, ex.ExportFailed) as exc:
        s.error = exc
        s.seconds["export"] = round(time.perf_counter() - t0, 2)
        return [s]
    out = [s]
    if fmt == "openvino":
        try:
            native = default_precision()
        except Exception as exc:  # noqa: BLE001 - reported in the finding: the default precision is not measured
            s.notes.append(f"OpenVINO's default CPU precision could not be read ({type(exc).__name__}: {exc}): "
                           "its default-precision variant is not measured")
            native = None
        if native and native not in ("f32", "float32"):
            d = Served(fmt, "runtime default precision", s.art.fresh(precision=None), precision=native)
            t1 = time.perf_counter()
            try:
                d.y = d.art.serve(x).astype(np.float64)
                d.census = _census(d)
            except ex.ExportFailed as exc:
                d.error = exc
            d.seconds = {"export": 0.0, "run": round(time.perf_counter() - t1, 3)}
            out.append(d)
    return out


def _census(s: Served):
    """The artefact's census; an empty one (with the reason in s.notes) when it cannot be read."""
    try:
        return s.art.census()
    except Exception as exc:  # noqa: BLE001 - reported in the finding: the op census is then missing, said so
        s.notes.append(f"the op census could not be read ({type(exc).__name__}: {str(exc)[:200]})")
        return ex.Census({})


def _intermediates(s: Served, x) -> dict | None:
    """The runtime's intermediate tensors on x, or None (with the reason in s.locate_note)."""
    if s.fmt not in locate.SUPPORTED:
        s.locate_note = f"{s.fmt}'s runtime exposes no intermediate tensors here (only onnx, openvino, litert)"
        return None
    t0 = time.perf_counter()
    try:
        tensors = locate.intermediates(s.art, x)
    except Exception as exc:  # noqa: BLE001 - reported: the layer-by-layer comparison is then missing, said so
        s.locate_note = f"reading the intermediate tensors failed ({type(exc).__name__}: {str(exc)[:200]})"
        return None
    s.seconds["locate"] = round(s.seconds.get("locate", 0.0) + time.perf_counter() - t0, 3)
    return tensors


def measure(model, x, formats, workdir, export_model=None) -> ExportRun:
    """Export and serve every format, then the bound and the layer-by-layer comparison, chunk by chunk.
    `export_model`: the model to export instead of `model` (the tests' deliberately wrong artefacts)."""
    from pathlib import Path

    workdir = Path(workdir)
    t0 = time.perf_counter()
    run = ExportRun([], _first_output(model(x, training=False)).astype(np.float64), len(x))
    run.seconds["keras"] = round(time.perf_counter() - t0, 3)
    for fmt in formats:
        run.served += _serve(model if export_model is None else export_model, fmt, x, workdir)
    live = [s for s in run.served if s.error is None]
    t0 = time.perf_counter()
    if graph.graph_of(model) is None:
        run.why_no_bound = (f"{type(model).__name__} {model.name!r} has no Keras 3 functional graph to walk (a "
                            "subclassed or tf_keras model): the bound needs each layer's inputs")
        for s in live:
            s.locate_note = "needs the model's graph (no bound per layer)"
        return run
    parts, bounds = [], []
    for start in range(0, len(x), CHUNK):
        xc = x[start:start + CHUNK]
        try:
            cap = graph.capture(model, xc, training=False)
            targets = gbound.bn_targets(cap.ops)
            keep = set(cap.outputs) | {t for _, _, a, b in targets for t in (a, b) if t is not None}
            gb = gbound.propagate(cap.ops, cap.values, cap.inputs, keep=keep)
        except Exception as exc:  # noqa: BLE001 - reported: no bound (no verdict), with the error named
            run.why_no_bound = f"the graph could not be walked layer by layer ({type(exc).__name__}: {str(exc)[:300]})"
            for s in live:
                s.location, s.locate_note = None, "needs the bound per layer"
            return run
        parts.append(gb)
        if start == 0:
            _describe_graph(run, cap, gb)
        if not gb.ok:
            break
        bounds.append(gb.bound(cap.outputs[0]))
        bns = [(p, [(lab, cap.values[t], gb.bound(t)) for lab, t in (("output", a), ("after its ReLU", b))
                    if t is not None and t in gb.sk], cap.values[i]) for p, i, a, b in targets]
        for s in live:
            if s.locate_note:
                continue
            tensors = _intermediates(s, xc)
            if tensors is not None:
                found = locate.locate(bns, tensors)
                s.location = found if s.location is None else s.location.merge(found)
        del cap
    gb = gbound.merge(parts)
    run.graph.update(checked=gb.checked, worst_self_check=gb.worst_self_check)
    if gb.ok:
        run.bound = np.concatenate(bounds)
    else:
        run.why_no_bound = gb.why_not()
    run.seconds["bound_and_locate"] = round(time.perf_counter() - t0, 2)
    if run.baked and run.bound is not None:
        _batch_alternative(model, x, run)
    return run


def _describe_graph(run: ExportRun, cap, gb) -> None:
    run.graph = {"layers": len(cap.ops), "bn_layers": len(gb.bn), "foldable": len(gb.folded),
                 "kinds": sorted({op.cls for op in cap.ops if op.kind != "shape"})}
    run.baked = sorted(p for p, b in cap.bn_baked.items() if b is True)
    by_out = {op.output: op for op in cap.ops}
    scale = {}
    for op in cap.ops:
        if op.kind == "bn":
            run.bn_ops[op.path] = op
            prev = by_out.get(op.inputs[0])
            if prev is not None and (prev.path, op.path) in gb.folded:
                run.linear_before[op.path] = prev
                scale[prev.path] = op.p["gamma"] / np.sqrt(op.p["var"] + op.p["eps"])
    run.linears = [(op.path, op.p["W"][0] if op.p.get("rank") == 1 else op.p["W"], scale.get(op.path))
                   for op in cap.ops if op.kind in ("dense", "conv")]  # Keras' kernel layout (Conv1D: 3-D)


def _batch_alternative(model, x, run: ExportRun) -> None:
    """model(x) as the graph's baked training=True runs it (batch statistics), with its own bound; the model's
    variables (which that pass updates) restored."""
    from bnspec.audit.forward import State

    state = State(model)
    try:
        cap = graph.capture(model, x, training=None)
    except Exception as exc:  # noqa: BLE001 - reported with the D03 diagnosis (no alternative measured)
        run.batch_alt_note = f"model(x) could not be captured ({type(exc).__name__}: {str(exc)[:200]})"
        return
    finally:
        state.restore()
    gb = gbound.propagate(cap.ops, cap.values, cap.inputs, keep=set(cap.outputs))
    if not gb.ok:
        run.batch_alt_note = f"no bound for model(x): {gb.why_not()}"
        return
    run.batch_alt = (np.asarray(cap.output(), np.float64), gb.bound(cap.outputs[0]))
