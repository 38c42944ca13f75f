"""Which mode a BN layer runs in: a `training` argument hard-coded in a call (N05, C01), a layer upstream
whose call defaults training=True (C02), a BN layer frozen inside a trainable model (K04). No Keras."""

from __future__ import annotations

from bnspec.audit.checks.gates import at_least, gate, keras3_before_316
from bnspec.audit.findings import Finding, Target, make
from bnspec.audit.tree import Layer, bns_in, downstream_of

# Keras 3 layers whose `call` defaults `training=True` (keras 3.15.1, measured by
# tests/audit/test_static.py against the installed Keras with inspect.signature). Value: the first
# Keras 3 release where that default exists (C02's fallback range when the claim is not in the
# catalogue): the Random* layers had it from 3.0.0; Resizing and CenterCrop moved onto
# BaseImagePreprocessingLayer in 3.6.0; the other image layers arrived later with the default.
TRAINING_TRUE_DEFAULT = {
    **{name: (3, 0) for name in ("RandomBrightness", "RandomContrast", "RandomCrop", "RandomFlip",
                                 "RandomRotation", "RandomTranslation", "RandomZoom")},
    **{name: (3, 6) for name in (
        "AugMix", "AutoContrast", "CenterCrop", "ContrastLimitedAdaptiveHistogramEqualization", "CutMix",
        "Equalization", "MaxNumBoundingBoxes", "MixUp", "Pipeline", "RandAugment", "RandomColorDegeneration",
        "RandomColorJitter", "RandomElasticTransform", "RandomErasing", "RandomGaussianBlur", "RandomGrayscale",
        "RandomHue", "RandomInvert", "RandomPerspective", "RandomPosterization", "RandomSaturation",
        "RandomSharpness", "RandomShear", "Resizing", "Solarization")},
}


def _first(paths: list, n: int = 8) -> list:
    return paths[:n] + (["..."] if len(paths) > n else [])


def hardcoded_findings(child: Layer, flag: bool, kind: str, where: dict, target: Target) -> list[Finding]:
    """Findings for one call of `child` (a BN layer, or a model or wrapper holding BN) with a constant
    training argument, inside a `kind` (functional | subclassed) model (N05, C01)."""
    if not (child.is_bn or (child.holds_layers and bns_in(child))):
        return []
    what = "BN layer" if child.is_bn else f"{'model' if child.is_model else child.class_name} holding " \
        f"{len(bns_in(child))} BN layer(s)"
    if flag is True:
        later = downstream_of(child) if kind == "functional" else []
        later_bn = [x.path for x in later if x.is_bn and x.effectively_trainable()]
        if later_bn:  # measured on Keras 3.15: model(x) carries the explicit True to them through the call context
            where = dict(where, bn_downstream=_first(later_bn))
        finding = make(
            "N05", "hardcoded-training", "error", child.path, f"{what} called with a hard-coded training=True",
            target, cases=[{"kind": kind, "entry": "call"}, {"kind": kind, "entry": "predict"}], evidence=where,
            fix="remove training=True from this call: Keras passes training=True in fit() and False in "
            "predict()/evaluate(); with it, model(x) (and, on tf_keras, Keras >= 3.16 and subclassed models, "
            "predict() too) normalises each batch with its own statistics, so a single example is mapped to "
            "beta and every prediction collapses to one class"
            + ("; model(x) can carry the flag on to the BN layers after it (bn_downstream)" if later_bn else ""))
        finding.affects = [child.path] + [x.path for x in later]
        return [finding]
    bns = [b for b in ([child] if child.is_bn else bns_in(child)) if b.effectively_trainable()]
    if not bns:
        return []  # frozen anyway (K04): training=False changes nothing
    live, verdict = gate("C01", target, [{"kind": kind}], "refuted", kind == "functional" and keras3_before_316(target))
    where = dict(where, trainable_bn=_first([b.path for b in bns]))
    if live:
        return [make(
            "C01", "training-false-overridden", "warning", child.path,
            f"{what} called with training=False, which fit() overrides on this Keras", target,
            evidence=where, verdict=verdict,
            fix="on Keras 3.0-3.15 a Functional model passes fit()'s training=True to every layer, so these BN "
            "layers train (batch statistics, moving statistics updated) despite training=False; to freeze them "
            "set `.trainable = False` on them (K04) and compile again (K06); Keras >= 3.16 obeys the argument")]
    if child.is_bn:
        return [make(
            "C01", "training-false-hardcoded", "info", child.path,
            "BN layer called with training=False: inference mode in fit() too", target, evidence=where,
            verdict=verdict,
            fix="its moving statistics never adapt while gamma/beta still train; if a frozen layer is intended, "
            "say so with trainable=False (K04), which also freezes gamma and beta")]
    return []


def check_hardcoded_training(root: Layer, target: Target, resolver=None) -> list[Finding]:
    """A BN layer (or a model holding BN) called with a constant `training` argument (N05, C01)."""
    out = []
    for container in root.walk():
        if container.kind != "functional":
            continue
        for child in container.children:
            for k, call in enumerate(child.calls):
                flag = call.kwargs.get("training")
                if isinstance(flag, bool):
                    where = {"call": k, "of_calls": len(child.calls), "kwargs": {"training": flag},
                             "in": container.path}
                    out += hardcoded_findings(child, flag, "functional", where, target)
    return out


def _training_default(layer: Layer, resolver) -> bool:
    if resolver is not None:
        answer = resolver(layer)
        if answer is not None:
            return bool(answer)
    module = layer.module or "keras"
    return layer.class_name in TRAINING_TRUE_DEFAULT and module.split(".")[0] in ("keras", "tf_keras")


def check_training_default_upstream(root: Layer, target: Target, resolver=None) -> list[Finding]:
    """A layer whose `call` defaults training=True, with trainable BN layers downstream (C02). `resolver`
    (bnspec.audit.live.resolver) answers for live layers from their call signature."""
    out = []
    for source in root.walk():
        if source.is_model or source.is_bn or source.kind == "input" or source.parent is None:
            continue
        if not _training_default(source, resolver):
            continue
        later = downstream_of(source)
        affected = [x for x in later if x.is_bn and x.effectively_trainable()]
        if not affected:
            continue
        since = TRAINING_TRUE_DEFAULT.get(source.class_name, (3, 0))
        fallback = keras3_before_316(target) and at_least(target, since)
        live, verdict = gate("C02", target, [{"preproc": source.class_name, "entry": "call"}], "refuted", fallback)
        if not live:
            continue
        paths = [b.path for b in affected]
        finding = make(
            "C02", "training-default-upstream", "warning", source.path,
            f"{source.class_name} defaults training=True and runs before {len(paths)} BN layer(s)", target,
            evidence={"class": source.class_name, "call_default": "training=True",
                      "bn_downstream": _first(paths), "bn_count": len(paths)},
            verdict=verdict,
            fix="on Keras 3.0-3.15 this default leaks into the call context: model(x) and model.export()'s "
            "serving endpoint run every later BN in training mode (batch statistics, moving statistics "
            "overwritten); predict() is not affected. Serve with predict() or model(x, training=False), or do "
            "the augmentation/resizing outside the model (tf.data); fixed in Keras 3.16 (keras PR #23166)")
        finding.affects = [source.path] + [x.path for x in later]
        out.append(finding)
    return out


def check_frozen_bn(root: Layer, target: Target, resolver=None) -> list[Finding]:
    """A BN layer frozen (trainable=False) inside a model that is trainable (K04)."""
    out = []
    for layer in root.walk():
        if layer.is_bn and not layer.trainable and layer.parent is not None and layer.parent.effectively_trainable():
            out.append(make(
                "K04", "frozen-bn", "info", layer.path, "BN layer frozen inside a trainable model (intended?)", target,
                evidence={"trainable": False, "parent": layer.parent.path, "parent_trainable": True},
                fix="a frozen BN runs in inference mode also in fit() and keeps its moving statistics: right for "
                "fine-tuning a pretrained model; if not intended, set trainable=True and compile again (K06)"))
    return out
