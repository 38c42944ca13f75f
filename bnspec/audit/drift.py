"""`bnspec audit MODEL --export ...`, the judging half: per format one finding from what bnspec.audit.export
measured. Within its bound: info (D01, with the drift, the bound, the census and the BN layers located in the
runtime). Beyond it (the output, or a BN layer's activations inside the runtime): error, with the likely cause
from the deploy claims, each measured where it can be:

  D08  reduced precision: OpenVINO at the CPU's default bf16 (its own finding, info: the runtime's documented
       default, not the model's fault), or bf16/f16/int8 kernels in the census of a run pinned to f32
  D03  a BN call with a baked training=True: the export reproduces model(x) (batch statistics) within that
       evaluation's own bound, not model(x, training=False)
  D02  the first diverging BN layer's numbers are not among the graph's constants, kept or folded
  D01  kernels missing from the graph (litert-torch merges same-shape weight constants: D01's note)
and otherwise "cause not identified". A format Keras refuses here: info, with Keras' message. A runtime or
converter that is not installed: warning (the check did not run), naming the package. An export that fails:
error. No bound (a layer without a float32 model, or no graph): info "no verdict" with the drift measured.
NaN/inf in the export's output where Keras' is finite is beyond any bound.
"""

from __future__ import annotations

import numpy as np

from bnspec.audit import findings as fmod
from bnspec.audit import locate
from bnspec.subjects import export as ex

PIP = "pip install -e '.[deploy]'"
PLUMBING = {"Constant", "Const", "Parameter", "Result", "Placeholder", "NoOp", "ReadVariableOp", "Identity"}


def _advice(claim_id: str) -> str:
    try:
        from bnspec import claims

        return claims.BY_ID[claim_id].advice
    except (ImportError, KeyError, AttributeError):
        return ""


def _g(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _census_text(s, run) -> str:
    c = s.census
    bn = sum(c.bn_ops.values())
    ops = sum(c.ops.values())
    kept = (f"BN kept as {bn} BN op(s) ({', '.join(sorted(c.bn_ops))})" if bn else
            f"no BN op: BN folded into the Dense/Conv before it ({run.graph.get('foldable', 0)} of "
            f"{run.graph.get('bn_layers', '?')} BN layers can be) or lowered to arithmetic")
    precisions = sorted({k.split(":")[-1] for k in (c.runtime_ops or {}) if ":" in k} - {"dynamic"})
    shown = {k: v for k, v in c.ops.items() if k not in PLUMBING}
    top = ", ".join(f"{k} x{v}" for k, v in sorted(shown.items(), key=lambda kv: -kv[1])[:6])
    return f"census: {ops} ops ({top}); {kept}" + (f"; runtime precisions {precisions}" if precisions else "")


def _where(s) -> str:
    a = s.art
    return (f"{a.runtime} {a.runtime_version}, converter {a.converter} {a.converter_version}"
            + (f", precision {s.precision}" if s.precision else ""))


def _location_text(s) -> str:
    loc = s.location
    if loc is None:
        return f"BN layers inside the runtime: not compared ({s.locate_note or 'no bound'})"
    n, found = len(loc.matches), loc.located
    by_name = sum(m.how == "name" for m in found)
    head = (f"BN layers inside the runtime: {len(found)}/{n} located ({by_name} by name, {len(found) - by_name} "
            "by value)")
    if loc.first is not None:
        f = loc.first
        return f"{head}; first beyond its bound: {f.path} (ratio {f.ratio:.3g}, tensor {f.tensor})"
    if loc.worst is not None:
        return f"{head}, all within their bounds (worst ratio {loc.worst.ratio:.2g}, {loc.worst.path})"
    return head


def _precision_cause(s):
    if s.variant:
        return {"id": "D08", "cases": [{"variant": "openvino_default"}], "cause": (
            f"OpenVINO's CPU plugin runs at its default inference precision {s.precision} on this CPU (bfloat16: 8 "
            "significant bits); pinned to f32 the same artefact is the other finding")}
    rt = s.census.runtime_ops or {}
    low = sorted(k for k in rt if k.split(":")[-1] in ("bf16", "f16", "i8", "u8"))
    if low or any(k in rt or k in s.census.ops for k in ("DEQUANTIZE",)):
        return {"id": "D08", "cases": [{"variant": "litert_float16" if s.fmt == "litert" else "openvino_default"}],
                "cause": f"the runtime computes in reduced precision: {low or ['DEQUANTIZE']}"}
    return None


def _training_cause(s, run):
    if not run.baked:
        return None
    layers = ", ".join(run.baked[:3]) + (" ..." if len(run.baked) > 3 else "")
    base = {"id": "D03", "cases": [{"fmt": s.fmt, "kind": "functional"}]}
    if run.batch_alt is None:
        return {**base, "cause": f"the model bakes training=True into {layers} (N05); model(x) could not be "
                f"compared ({run.batch_alt_note or 'no bound'})"}
    y_call, b_call = run.batch_alt
    r = locate.ratio(s.y, y_call, b_call)
    if r <= 1.0:
        return {**base, "cause": f"the export normalises with batch statistics: it reproduces model(x), where the "
                f"baked training=True in {layers} wins, within that evaluation's bound (ratio {r:.3g}), not "
                "model(x, training=False) and predict()"}
    return {**base, "cause": f"the model bakes training=True into {layers} (N05), but the export reproduces "
            f"model(x) (batch statistics) neither (ratio {r:.3g})"}


def _numbers_cause(s, run):
    first = s.location.first if s.location is not None else None
    if first is None or first.path not in run.bn_ops:
        return None
    p = run.bn_ops[first.path].p
    lin = run.linear_before.get(first.path)
    state = {"gamma": p["gamma"], "beta": p["beta"], "mean": p["mean"], "var": p["var"], "eps": p["eps"]}
    try:
        carry = ex.carried(s.art.constants(), state, lin.p["W"] if lin is not None and lin.p.get("rank") != 1 else None,
                           lin.p["b"] if lin is not None else None)
    except ex.ExportFailed:
        return None
    if carry.ok:
        return None
    return {"id": "D02", "cases": [{"fmt": s.fmt}], "cause": (
        f"{first.path}'s numbers are not in the graph: no constant equals its moving statistics, gamma, beta and "
        f"epsilon kept, nor folded within float32 rounding (found: {sorted(carry.facts) or 'none'})")}


def _kernel_cause(s, run):
    try:
        consts = s.art.constants()
    except ex.ExportFailed:
        return None
    missing = [path for path, W, scale in run.linears if ex.kernel_found(consts, W, scale) is None]
    if not missing:
        return None
    note = (" (litert-torch merges same-shape weight constants: google-ai-edge/litert-torch#1061)"
            if s.fmt == "litert" and s.art.backend == "torch" else "")
    return {"id": "D01", "cases": [{"fmt": s.fmt}], "cause": f"the graph holds no constant equal to the kernel of "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}, as it is or folded with its BN{note}"}


def causes(s, run) -> list[dict]:
    out = [c for c in (_precision_cause(s), _training_cause(s, run)) if c]
    if not out:
        out = [c for c in (_numbers_cause(s, run),) if c] or [c for c in (_kernel_cause(s, run),) if c]
    return out or [{"id": "D01", "cases": [{"fmt": s.fmt}], "cause": "cause not identified"}]


def _failed(s, target, root):
    exc = s.error
    if isinstance(exc, ex.NotApplicable):
        return fmod.make("D01", "export-not-applicable", "info", root, f"{s.fmt}: not applicable: Keras does not "
                         "export this format here", target, cases=[{"fmt": s.fmt}], source="dynamic",
                         evidence={"format": s.fmt, "keras_says": exc.reason[:400]})
    if isinstance(exc, ex.RuntimeMissing):
        return fmod.make("D01", "export-runtime-missing", "warning", root, f"{s.fmt}: not checked: its runtime or "
                         "converter is not installed", target, cases=[{"fmt": s.fmt}], source="dynamic",
                         evidence={"format": s.fmt, "missing": exc.reason[:400]}, fix=f"install the runtimes: {PIP}")
    f = fmod.make("D01", "export-failed", "error", root, f"{s.label}: the {exc.stage} failed", target,
                  cases=[{"fmt": s.fmt}], source="dynamic", evidence={"format": s.fmt, "stage": exc.stage,
                  "error": exc.error[:600]}, fix=_advice("D01"))
    if s.side_effect:
        f.confirmed = [s.side_effect]
    return f


def tightness(run) -> float:
    """median(output bound) / RMS(Keras' output): above 1 the output-level verdict is vacuous (inf for a zero
    output)."""
    rms = float(np.sqrt(np.mean(np.square(run.y_keras))))
    med = float(np.median(run.bound))
    return med / rms if rms > 0 else float("inf")


def judge(run, target, root: str) -> tuple[list, list, dict]:
    """(findings, notes, measured) for every served format of an ExportRun."""
    found, notes, measured = [], [], {}
    if run.why_no_bound:
        notes.append(f"the export drift has no bound (no verdict): {run.why_no_bound}")
    for s in run.served:
        if s.error is not None:
            found.append(_failed(s, target, root))
            measured[s.label] = {"error": str(s.error)[:300], "seconds": s.seconds}
            continue
        f, m = _judge_one(s, run, target, root)
        found.append(f)
        measured[s.label] = m
    measured["graph"] = run.graph
    measured["seconds"] = run.seconds
    return found, notes, measured


def _judge_one(s, run, target, root):
    y, yk = s.y, run.y_keras
    n = run.examples
    if y.shape != yk.shape:
        f = fmod.make("D01", "export-drift", "error", root, f"{s.label}: output shape {y.shape} differs from "
                      f"Keras' {yk.shape}", target, cases=[{"fmt": s.fmt}], source="dynamic")
        return f, {"shape": list(y.shape)}
    with np.errstate(invalid="ignore"):
        drift = np.abs(y - yk)
        max_drift = float(np.nanmax(drift)) if np.isfinite(drift).any() else float("nan")
    nonfinite = int(np.sum(~np.isfinite(y) & np.isfinite(yk)))
    m = {"examples": n, "max_abs_drift": max_drift, "nonfinite_outputs": nonfinite, "seconds": s.seconds,
         "runtime": s.art.runtime, "runtime_version": s.art.runtime_version, "precision": s.precision,
         "census": s.census.as_dict(), "located": s.location.summary() if s.location else s.locate_note}
    lines = [f"{_where(s)}; export {s.seconds.get('export', 0):.1f} s, run {s.seconds.get('run', 0):.2f} s"
             + (f", intermediates {s.seconds['locate']:.1f} s" if "locate" in s.seconds else "")]
    ev = {"format": s.fmt, "runtime": f"{s.art.runtime} {s.art.runtime_version}", "max_abs_drift": max_drift}
    if run.bound is None:
        severity = "error" if nonfinite else "warning"  # a requested check that drew no verdict
        title = f"{s.label}: no verdict (no float32 bound for this model)" if not nonfinite else \
            f"{s.label}: NaN/inf in the export's output where Keras' is finite"
        lines.append(f"max |export - model(x, training=False)| = {_g(max_drift)} on {n} examples; no bound: "
                     f"{run.why_no_bound}")
        lines.append(_census_text(s, run))
        lines += [f"not measured: {n}" for n in s.notes] + ([s.side_effect] if s.side_effect else [])
        f = fmod.make("D01", "export-drift", severity, root, title, target, cases=[{"fmt": s.fmt}],
                      evidence=ev, source="dynamic")
        f.confirmed = lines
        return f, m
    r_out = locate.ratio(y, yk, run.bound)
    worst = np.unravel_index(int(np.argmax(np.where(np.isfinite(drift), drift, np.inf))), drift.shape)
    bnd = float(run.bound[worst])
    first = s.location.first if s.location is not None else None
    beyond = r_out > 1.0 or first is not None
    m.update(bound_at_worst=bnd, bound_range=[float(run.bound.min()), float(run.bound.max())], ratio=r_out,
             within=not beyond)
    ev.update(bound=bnd, ratio=r_out)
    lines.append(f"max |export - model(x, training=False)| = {_g(max_drift)} on {n} examples; the bound there "
                 f"{bnd:.3g} (elementwise {run.bound.min():.3g} to {run.bound.max():.3g}); ratio {_g(r_out)}"
                 + (f"; {nonfinite} NaN/inf where Keras is finite" if nonfinite else ""))
    looseness = tightness(run)
    m["bound_over_output"] = looseness
    if looseness > 1.0:
        lines.append(f"the output's bound is loose here: its median is {looseness:.3g}x the RMS of Keras' output "
                     "(each layer's worst-case rounding compounds through a deep network): within it says little "
                     "about the output; the per-layer locations below, tight where the bound is small, are the "
                     "sharper evidence")
    lines.append(_location_text(s))
    lines.append(_census_text(s, run))
    lines += [f"not measured: {n}" for n in s.notes] + ([s.side_effect] if s.side_effect else [])
    if not beyond:
        f = fmod.make("D01", "export-drift", "info", root, f"{s.label}: within its float32 bound (ratio "
                      f"{r_out:.2g})" + (f"; the bound is loose ({looseness:.2g}x the output)" if looseness > 1.0
                                         else ""), target, cases=[{"fmt": s.fmt}], evidence=ev, source="dynamic")
        f.confirmed = lines
        return f, m
    why = causes(s, run)
    m["causes"] = [c["cause"] for c in why]
    lines += [f"likely cause ({c['id']}): {c['cause']}" for c in why]
    c0 = why[0]
    where = "output" if r_out > 1.0 else f"{first.path}'s activations"
    severity = "info" if s.variant else "error"
    layer = first.path if first is not None else root
    f = fmod.make(c0["id"], "export-drift", severity, layer, f"{s.label}: {where} beyond the float32 bound (ratio "
                  f"{_g(r_out if r_out > 1.0 else first.ratio)})", target, cases=c0["cases"], evidence=ev,
                  source="dynamic", fix=_advice(c0["id"]))
    f.confirmed = lines
    return f, m
