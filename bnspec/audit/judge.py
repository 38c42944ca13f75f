"""Judging the forward passes' entry-point measurements (bnspec.audit.measurements): NaN/inf (C10),
inference calls that write variables (M01, or C02 when only a random layer's seed moved), model(x) vs
model(x, training=False) (N04) and batch dependence (M03). A symptom a static finding explains (a
hard-coded training=True, a training=True default upstream) is attached to that finding (`confirmed`)
instead of becoming a finding of its own. The statistics are judged in bnspec.audit.statistics. No Keras.

Why each comparison is exact:

* Inference writes nothing. model(x, training=False), model(x) and predict(x) must leave every variable
  bit-for-bit unchanged (M01): a training-mode BN assigns new moving statistics, and momentum*old +
  (1-momentum)*batch differs from `old` unless the batch statistics equal it exactly. Threshold: 0.
* Batch dependence (M03, the notebook's "every single prediction is the same class"). In inference mode an
  example's output is computed row by row; with the SAME batch shape the same kernels run with the same
  reduction order, so example i's output is bit-for-bit the same whatever its batch-mates are. Threshold: 0.
  (A literal batch_size=1 run uses other kernels, e.g. GEMV instead of GEMM, whose rounding differs:
  ResNet50 differs by ~3e-6 there. It is reported as evidence, not judged.)
* model(x) vs model(x, training=False): both eager, same shapes, same kernels, so equal bit for bit unless a
  layer runs in another mode (N04). Threshold: 0. (predict() runs as a graph, which may fuse ops and round
  differently, so it is compared through the two checks above instead.)
* NaN/inf anywhere (variables, outputs, BN inputs) is a finding of its own (C10); a comparison that
  involves one is never counted as clean.
"""

from __future__ import annotations

from dataclasses import asdict

from bnspec.audit.findings import Finding, Target, make
from bnspec.audit.measurements import ENTRY_TEXT, Measurements

LEAK_CHECKS = ("hardcoded-training", "training-default-upstream", "training-leak", "random-at-inference")


def explainer(leaks: list[Finding], path: str | None, entries: set):
    """The first leak finding that explains a symptom at `path` (None: model-wide) under `entries`.
    A hard-coded training=True explains changes in its layer (or nested model) under any entry, and
    under model(x) in the layers after it (Keras 3.0-3.15 carry the flag there through the call
    context); a training=True default upstream explains model(x) symptoms in the layers after it."""
    def reaches(f):
        return any(path == a or path.startswith(a + "/") for a in f.affects)

    for f in leaks:
        if f.check == "hardcoded-training" and (path is None or path == f.layer or path.startswith(f.layer + "/")
                                                or (entries <= {"call"} and reaches(f))):
            return f
        if f.check == "training-default-upstream" and entries <= {"call"} and (path is None or reaches(f)):
            return f
        if f.check in ("training-leak", "random-at-inference") and path is None:
            return f
    return None


def _non_finite(m: Measurements, model_path: str, target: Target) -> list[Finding]:
    out = []
    for path in m.nonfinite_variables:
        out.append(make("C10", "non-finite", "error", path, "NaN/inf in the layer's variables", target,
                        evidence={"variables_finite": False}, source="dynamic",
                        fix="one NaN batch in training mode poisons the moving statistics for good: find the batch, "
                        "restore the weights from a checkpoint (or recompute the statistics with "
                        "bnspec.subjects.popstats if only the moving statistics are hit)"))
    bad_outputs = [e for e, ok in m.outputs_finite.items() if not ok]
    if bad_outputs and not out:
        out.append(make("C10", "non-finite", "error", model_path, "NaN/inf in the model's outputs", target,
                        evidence={"entries": [ENTRY_TEXT[e] for e in bad_outputs]}, source="dynamic",
                        fix="check the inputs and the variables for NaN/inf; no comparison on these outputs "
                        "counts as clean"))
    elif bad_outputs:
        out[0].confirmed.append(f"outputs non-finite under {', '.join(ENTRY_TEXT[e] for e in bad_outputs)}")
    for entry, error in m.errors.items():
        out.append(make("M01", "entry-failed", "warning", model_path, f"{entry} failed: the check could not "
                        "measure it", target, evidence={"error": error}, source="dynamic",
                        fix="make the model runnable on the given data; a check that did not run is not clean"))
    return out


def _writes(m: Measurements, leaks: list[Finding], target: Target) -> list[Finding]:
    """Inference entry points that write variables (M01; C02 when only a seed state moved)."""
    out = []
    by_layer: dict = {}
    for entry, info in m.entries.items():
        for c in info.changed:
            by_layer.setdefault(c.path, {}).setdefault(entry, []).append((c.variable, c.max_change))
    for path, per_entry in by_layer.items():
        texts = [f"{ENTRY_TEXT[e]} changed {path}: {', '.join(n for n, _ in v)} (max |change| "
                 f"{max(d for _, d in v):.3g})" for e, v in per_entry.items()]
        args = {ENTRY_TEXT[e]: m.entries[e].bn_training_args.get(path) for e in per_entry
                if m.entries[e].bn_training_args.get(path)}
        found = explainer(leaks, path, set(per_entry))
        if found is not None:
            found.confirmed += texts
            continue
        if all("seed" in name for v in per_entry.values() for name, _ in v):
            # only a random layer's seed state moved: the layer itself ran in training mode (its call
            # defaults training=True): random augmentation at inference, not a BN statistics write
            finding = make("C02", "random-at-inference", "warning", path,
                           "a random layer runs in training mode at inference (its seed state moved)", target,
                           cases=[{"entry": e} for e in per_entry], source="dynamic", evidence={"changes": texts},
                           fix="Keras 3 preprocessing layers default training=True in call(), so model(x) augments "
                           "at inference; predict x with predict() or model(x, training=False)")
        else:
            finding = make("M01", "training-leak", "error", path, "an inference call changes this layer's variables",
                           target, cases=[{"entry": e} for e in per_entry], source="dynamic",
                           evidence={"changes": texts, **({"training_argument_seen": args} if args else {})},
                           fix="this layer runs in training mode where inference is expected: look for a hard-coded "
                           "training=True in call() (also passed through **kwargs), a layer upstream whose call "
                           "defaults training=True, or a custom layer that assigns variables in call()")
        out.append(finding)
        leaks.append(finding)
    return out


def _symptoms(m: Measurements, model_path: str, leaks: list[Finding], target: Target) -> list[Finding]:
    """model(x) vs model(x, training=False) (N04) and batch dependence (M03)."""
    out, symptoms = [], []
    cvf = m.call_vs_training_false
    if cvf is not None and cvf.finite and not cvf.bitwise_equal:
        symptoms.append(("N04", "call-vs-inference", {"call"}, "model(x) differs from model(x, training=False)",
                         {"max_abs_diff": cvf.max_abs_diff, "threshold": "0 (same kernels, eager)"}))
    for entry, cmp in m.batch_dependence.items():
        if cmp.finite and not cmp.bitwise_equal:
            ev = dict(cmp.evidence(), threshold="0 (same batch shape, same kernels)")
            if m.batch_size_1 is not None:
                ev["batch_size_1"] = asdict(m.batch_size_1)
            symptoms.append(("M03", "batch-dependence", {entry},
                             f"{ENTRY_TEXT[entry]}: an example's output depends on its batch-mates"
                             + (" (single examples collapse to one output)" if cmp.collapse else ""), ev))
    for claim, check, ents, title, ev in symptoms:
        found = explainer(leaks, None, ents)
        if found is not None:
            found.confirmed.append(f"{title}: max |diff| {ev['max_abs_diff']:.3g} (threshold 0)")
            found.evidence.setdefault("measured", []).append(dict(ev, what=title))
            continue
        finding = make(claim, check, "error", model_path, title, target, source="dynamic", evidence=ev,
                       cases=[{"entry": e} for e in ents],
                       fix="some layer runs in training mode (or is otherwise batch-dependent) at inference; look "
                       "for hard-coded training arguments and layers whose call defaults training=True")
        out.append(finding)
        leaks.append(finding)
    return out


def judge_entries(m: Measurements, model_path: str, static_findings: list[Finding], target: Target) -> list[Finding]:
    """Findings from the entry-point measurements; symptoms explained by a static finding are attached to it."""
    leaks = [f for f in static_findings if f.check in LEAK_CHECKS]
    out = _non_finite(m, model_path, target)
    out += _writes(m, leaks, target)
    out += _symptoms(m, model_path, leaks, target)
    for f in static_findings:  # static leak findings the measurement did not reproduce
        if f.check in LEAK_CHECKS and not f.confirmed:
            f.confirmed.append("no effect under model(x), model(x, training=False) or predict(x) on these "
                               "inputs (the trap may still act in fit() or model.export())")
    return out
