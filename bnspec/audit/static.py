"""The static audit: the model's tree (bnspec.audit.tree) through every static check (bnspec.audit.checks),
with no forward pass. No Keras, no TensorFlow: a saved `.keras` file is read from its config.json
(bnspec.audit.saved), so `bnspec audit --static model.keras` imports neither.

Which checks apply on which Keras comes from the claim catalogue (findings.lookup); where a claim is not in
the catalogue yet, the version range believed from ../shared/field/TRAPS.md is the fallback
(bnspec.audit.checks.gates), and the finding says "claim not in this catalogue".
"""

from __future__ import annotations

import time

from bnspec.audit import checks
from bnspec.audit.findings import RANK, Finding, Findings, Target, target as make_target
from bnspec.audit.saved import family_of, read_file
from bnspec.audit.tree import BN_CLASSES, Layer, count, parse

NO_BN_NOTE = ("no BatchNormalization layer in the model: nothing for the forward-pass checks to measure, so none "
              "was run")


def opaque(root: Layer) -> list[Layer]:
    """Layers whose inside the config does not show: subclassed models, and custom (non-Keras) layers
    without children. A BN layer may hide in them."""
    return [x for x in root.walk() if x.kind == "subclassed" or (
        x.kind == "layer" and x.module and x.module.split(".")[0] not in ("keras", "tf_keras") and not x.children)]


def audit_tree(root: Layer, target: Target, resolver=None) -> tuple[list[Finding], list[str]]:
    """Run every static check on a parsed tree. Returns (findings, notes)."""
    findings = checks.run_all(root, target, resolver)
    notes = []
    if root.kind not in ("functional", "sequential", "subclassed"):
        notes.append(f"{root.path}: the config is a {root.class_name}, not a Functional/Sequential model: "
                     "static checks saw no graph")
    for layer in opaque(root)[:5]:
        if layer.obj is None:
            notes.append(f"{layer.path}: custom class {layer.class_name} ({layer.module}): its inside is not in "
                         "the config; the static checks could not look into it (the dynamic checks do)")
    return findings, notes


def audit_config(config: dict, target: Target, resolver=None) -> tuple[Layer, list[Finding], list[str]]:
    root = parse(config)
    if root.kind in ("layer", "bn") and root.class_name not in BN_CLASSES:
        root.kind = "subclassed"
    findings, notes = audit_tree(root, target, resolver)
    if root.kind == "subclassed" and not root.children:
        notes.insert(0, f"{root.path}: subclassed model {root.class_name}: its layers are not in the saved config, "
                     "so no static check applied; run the dynamic checks (load it, or pass package.module:factory)")
    return root, findings, notes


def audit_file(path, run=None) -> Findings:
    """Static audit of a saved model, with json/zipfile (and h5py for .h5) only: no Keras import. `run` (a
    bnspec.run.Run, or None) names the Keras whose verdicts apply; its findings' context says whether a BN
    layer can hide in the file (`bn_layers_certain`: False when custom classes are opaque)."""
    started = time.perf_counter()
    config, meta = read_file(path)
    tgt = make_target(run, meta.get("keras_version"), family_of(meta))
    root, findings, notes = audit_config(config, tgt)
    layers, bns = count(root)
    certain = not opaque(root)
    if bns == 0 and certain:
        notes.append(NO_BN_NOTE)
    context = {"model": str(path), "format": meta["format"], "saved_by_keras": meta.get("keras_version"),
               "flavour": tgt.flavour, "keras": tgt.version, "backend": tgt.backend, "verdicts_for": tgt.origin,
               "mode": "static", "layers": layers, "bn_layers": bns, "bn_layers_certain": certain,
               "static_seconds": round(time.perf_counter() - started, 3)}
    return Findings(sort(findings), context=context, notes=notes)


def sort(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-RANK[f.severity], f.id, f.layer))
