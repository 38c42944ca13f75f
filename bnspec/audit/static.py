"""Static checks: read a model's structure and config, run no forward pass. No Keras, no TensorFlow.

Input is the serialized model config: `config.json` of a Keras 3 `.keras` archive (a zip), the
`model_config` attribute of a legacy `.h5` file (tf_keras, or Keras 3's legacy writer), or the same
config taken from a live model (bnspec.audit.live). Both serialized formats are read:

  Keras 3   {"class_name": "Functional", "config": {"name", "trainable", "layers": [...],
             "input_layers", "output_layers"}}; a layer's "inbound_nodes" is a list of calls,
             each {"args": [... {"class_name": "__keras_tensor__", "config": {"keras_history":
             [layer, node, tensor]}} ...], "kwargs": {"training": true, ...}}
  tf_keras  the same outline; "inbound_nodes" is a list of calls, each a list of
             [layer, node, tensor, kwargs]

A nested model is a layer whose config has "layers" (Functional when it also has "input_layers",
else Sequential). A layer shared between positions has several inbound nodes.

The checks are plain functions over a `Layer` tree; each returns findings (bnspec.audit.findings).
Which ones apply on which Keras comes from the claim catalogue (findings.lookup); where a claim is
not in the catalogue yet, the version range from ../shared/field/TRAPS.md is the fallback, and the
finding says "claim not in this catalogue".
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from bnspec.audit.findings import Finding, Target, UsageError, lookup, make

BN_CLASSES = frozenset({"BatchNormalization", "SyncBatchNormalization", "BatchNormalizationV1",
                        "BatchNormalizationV2", "ExplicitBatchNorm"})
INPUT_CLASSES = frozenset({"InputLayer"})
# Layers whose output is x @ W (+ b) per output channel: a bias there is removed again by a
# training-mode BN's mean subtraction (C18).
AFFINE_CLASSES = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                            "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
                            "SeparableConv2D", "Convolution1D", "Convolution2D", "Convolution3D"})

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
KERAS2_ONLY = ("fused", "virtual_batch_size", "adjustment")
TFKERAS_MIN_EPSILON = 1.001e-5  # tf.nn.fused_batch_norm: "min_epsilon = 1.001e-5" (cuDNN requirement), C09
SIXTEEN_BIT = ("float16", "bfloat16")
# Where a claim is not in the catalogue yet, the range in which the trap is believed live
# (../shared/field/TRAPS.md); the finding says so.
FALLBACK_RANGES = {
    "C01": "fit() overrides a construction-time training=False on Keras 3.0-3.15 Functional models",
    "C02": "the default leaks on Keras 3.0-3.15; Resizing/CenterCrop from 3.6",
    "C06": "Keras 3 stores BN statistics in the 16-bit policy dtype; tf_keras keeps float32",
    "C09": "tf_keras clamps epsilon to 1.001e-5 for 4-D/5-D inputs (TRAPS.md; measured since: not on TF 2.21)",
}


# --------------------------------------------------------------------------- the tree


@dataclass
class Call:
    """One position where a layer is called in its parent model's graph."""

    kwargs: dict
    sources: list  # [(layer name, node index, tensor index)]


@dataclass(eq=False)
class Layer:
    name: str
    class_name: str
    module: str | None
    config: dict
    kind: str  # functional | sequential | subclassed | bn | input | layer
    path: str = ""
    parent: "Layer | None" = None
    children: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    obj: object = None  # the live layer, when the tree was taken from a live model
    build_shape: list | None = None

    @property
    def is_bn(self) -> bool:
        return self.kind == "bn"

    @property
    def is_model(self) -> bool:
        return self.kind in ("functional", "sequential", "subclassed")

    @property
    def trainable(self) -> bool:
        return bool(self.config.get("trainable", True))

    def effectively_trainable(self) -> bool:
        """trainable here and in every enclosing model (Keras: a frozen parent freezes its children)."""
        node = self
        while node is not None:
            if not node.trainable:
                return False
            node = node.parent
        return True

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def rank(self) -> int | None:
        shape = self.build_shape
        if isinstance(shape, dict):  # multi-input build configs
            return None
        if isinstance(shape, (list, tuple)) and shape and all(isinstance(s, (int, type(None))) for s in shape):
            return len(shape)
        return None


def _dtype_name(value) -> str | None:
    """A layer's dtype policy name from a config ("float32", {"class_name": "DTypePolicy", "config":
    {"name": "mixed_float16"}}, tf_keras {"class_name": "Policy", ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        cfg = value.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            return cfg["name"]
    return None


def _tensor_histories(obj, out: list) -> list:
    """Every (layer, node, tensor) reference inside a Keras 3 call's args/kwargs."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            hist = (obj.get("config") or {}).get("keras_history")
            if isinstance(hist, list) and len(hist) >= 3:
                out.append((hist[0], int(hist[1]), int(hist[2])))
            return out
        for value in obj.values():
            _tensor_histories(value, out)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _tensor_histories(value, out)
    return out


def _plain(kwargs: dict) -> dict:
    """Call kwargs without tensors (what the checks read: training, mask=None, ...)."""
    return {k: v for k, v in (kwargs or {}).items() if not _tensor_histories(v, [])}


def _parse_calls(raw) -> list[Call]:
    calls = []
    for node in raw or []:
        if isinstance(node, dict):  # Keras 3
            sources = _tensor_histories(node.get("args", []), [])
            sources += _tensor_histories(node.get("kwargs", {}), [])
            calls.append(Call(kwargs=_plain(node.get("kwargs") or {}), sources=sources))
        elif isinstance(node, list):  # tf_keras: [[name, node, tensor, kwargs], ...]
            sources, kwargs = [], {}
            for ref in node:
                if isinstance(ref, list) and len(ref) >= 3 and isinstance(ref[0], str):
                    sources.append((ref[0], int(ref[1]), int(ref[2])))
                    if len(ref) > 3 and isinstance(ref[3], dict) and not kwargs:
                        kwargs = _plain(ref[3])
            calls.append(Call(kwargs=kwargs, sources=sources))
    return calls


def parse(entry: dict, parent: Layer | None = None) -> Layer:
    """A serialized layer or model -> Layer tree (paths from the root model's name)."""
    if not isinstance(entry, dict):
        raise UsageError("the model config is not a JSON object")
    class_name = str(entry.get("class_name", "?"))
    cfg = entry.get("config")
    if isinstance(cfg, list):  # Keras 2.0-era Sequential: the config is the list of layers
        cfg = {"layers": cfg}
    cfg = cfg if isinstance(cfg, dict) else {}
    name = str(cfg.get("name") or entry.get("name") or class_name.lower())
    if isinstance(cfg.get("layers"), list):
        kind = "functional" if "input_layers" in cfg else "sequential"
    elif class_name in BN_CLASSES:
        kind = "bn"
    elif class_name in INPUT_CLASSES:
        kind = "input"
    elif class_name in ("Functional", "Sequential", "Model"):
        kind = "functional"
    else:
        kind = "layer"
    build = entry.get("build_config") or {}
    shape = build.get("input_shape") if isinstance(build, dict) else None
    if shape is None and isinstance(cfg.get("batch_input_shape"), list):
        shape = cfg["batch_input_shape"]
    layer = Layer(name=name, class_name=class_name, module=entry.get("module"), config=cfg, kind=kind,
                  parent=parent, calls=_parse_calls(entry.get("inbound_nodes")), build_shape=shape)
    layer.path = f"{parent.path}/{name}" if parent is not None else name
    if kind in ("functional", "sequential"):
        layer.children = [parse(child, layer) for child in cfg.get("layers", [])]
        if kind == "sequential":
            previous = None
            for child in layer.children:
                if child.kind == "input":
                    previous = child
                    continue
                child.calls = [Call(kwargs={}, sources=[(previous.name, 0, 0)] if previous else [])]
                previous = child
    return layer


# --------------------------------------------------------------------------- files


def read_file(path) -> tuple[dict, dict]:
    """(model config entry, metadata {"keras_version", "format", "backend"}) of a saved model, with the
    json module only (and h5py for .h5, which imports no Keras)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path} is a directory (a TF SavedModel?): audit takes a .keras or .h5 file, or "
                         "package.module:factory")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if "config.json" not in names:
                    raise UsageError(f"{path}: a zip without config.json is not a .keras archive")
                config = json.loads(zf.read("config.json"))
                meta = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
        except (zipfile.BadZipFile, ValueError) as exc:
            raise UsageError(f"{path}: unreadable .keras archive ({exc})") from exc
        return config, {"keras_version": meta.get("keras_version"), "format": "keras", "backend": None}
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        try:
            import h5py
        except ImportError as exc:
            raise UsageError(f"{path}: reading .h5 files needs h5py (pip install h5py)") from exc
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise UsageError(f"{path}: an .h5 file without a model_config attribute (weights only?)")
            version = f.attrs.get("keras_version")
            backend = f.attrs.get("backend")
        decode = lambda v: v.decode() if isinstance(v, bytes) else (None if v is None else str(v))  # noqa: E731
        try:
            config = json.loads(decode(raw))
        except ValueError as exc:
            raise UsageError(f"{path}: model_config is not JSON ({exc})") from exc
        return config, {"keras_version": decode(version), "format": "h5", "backend": decode(backend)}
    raise UsageError(f"{path}: neither a .keras archive (zip) nor an HDF5 file")


def family_of(meta: dict) -> str | None:
    version = meta.get("keras_version") or ""
    if not version:
        return None
    return "tfkeras" if version.startswith("2.") else "keras3"


# --------------------------------------------------------------------------- graph helpers


def _consumers(container: Layer) -> dict:
    """(child name, node index) -> [(consumer child, its call index)] inside a functional container."""
    out: dict = {}
    for child in container.children:
        for k, call in enumerate(child.calls):
            for src, node, _tensor in call.sources:
                out.setdefault((src, node), []).append((child, k))
    return out


def _downstream(container: Layer, start: Layer) -> list[Layer]:
    """Children of `container` executed on data that went through `start` (a child), in no order."""
    if container.kind == "sequential":
        kids = container.children
        return kids[kids.index(start) + 1:]
    consumers = _consumers(container)
    seen, order = set(), []
    frontier = [(start.name, k) for k in range(max(1, len(start.calls)))]
    visited = set(frontier)
    while frontier:
        nxt = []
        for key in frontier:
            for layer, k in consumers.get(key, []):
                if (layer.name, k) in visited:
                    continue
                visited.add((layer.name, k))
                nxt.append((layer.name, k))
                if id(layer) not in seen:
                    seen.add(id(layer))
                    order.append(layer)
        frontier = nxt
    return order


def downstream_of(source: Layer) -> list[Layer]:
    """Every layer executed on data that went through `source`, in every enclosing graph (innermost
    first), nested models' insides included."""
    out, node = [], source
    while node.parent is not None:
        for later in _downstream(node.parent, node):
            out += list(later.walk())
        node = node.parent
    return out


def _bns_in(layer: Layer) -> list[Layer]:
    return [x for x in layer.walk() if x.is_bn]


def _trainable_bns(layer: Layer) -> list[Layer]:
    return [b for b in _bns_in(layer) if b.effectively_trainable()]


def _feeds_only(container: Layer, producer: Layer) -> list[Layer]:
    """The consumers of `producer`'s single output inside `container`."""
    if container.kind == "sequential":
        kids = [c for c in container.children if c.kind != "input"]
        i = kids.index(producer)
        return kids[i + 1:i + 2]
    return [layer for layer, _ in _consumers(container).get((producer.name, 0), [])]


# --------------------------------------------------------------------------- version gates


def _before(target: Target, version: tuple) -> bool:
    v = target.version_tuple()
    return True if v is None else v[: len(version)] < version


def _at_least(target: Target, version: tuple) -> bool:
    v = target.version_tuple()
    return True if v is None else v[: len(version)] >= version


def _gate(claim_id: str, target: Target, cases: list[dict], trap_verdict: str, fallback: bool):
    """(is the trap live on this Keras, the catalogue's verdict). A claim in the catalogue decides;
    otherwise `fallback` (the believed range from TRAPS.md) does."""
    verdict = lookup(claim_id, target, cases)
    if verdict["known"] and verdict["verdict"] in ("holds", "refuted"):
        return verdict["verdict"] == trap_verdict, verdict
    if verdict["known"] and verdict["verdict"] == "mixed":
        return any(v == trap_verdict for v in verdict["cases"].values()), verdict
    verdict = dict(verdict)
    verdict["detail"] = (f"{verdict['detail']}; applied here from the believed range in the field-trap list "
                         f"({FALLBACK_RANGES.get(claim_id, 'see TRAPS.md')}) on {target.describe()}")
    return fallback, verdict


def _keras3_before_316(target: Target) -> bool:
    return target.flavour in ("keras3", "keras-nightly") and _before(target, (3, 16))


# --------------------------------------------------------------------------- the checks


def hardcoded_findings(child: Layer, flag: bool, kind: str, where: dict, target: Target) -> list[Finding]:
    """Findings for one call of `child` (a BN layer or a model holding BN) with a constant training
    argument, inside a `kind` (functional | subclassed) model (N05, C01)."""
    if not (child.is_bn or (child.is_model and _bns_in(child))):
        return []
    what = "BN layer" if child.is_bn else f"model holding {len(_bns_in(child))} BN layer(s)"
    if flag is True:
        later = downstream_of(child) if kind == "functional" else []
        later_bn = [x.path for x in later if x.is_bn and x.effectively_trainable()]
        if later_bn:  # measured on Keras 3.15: model(x) carries the explicit True to them through the call context
            where = dict(where, bn_downstream=later_bn[:8] + (["..."] if len(later_bn) > 8 else []))
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
    bns = [b for b in ([child] if child.is_bn else _bns_in(child)) if b.effectively_trainable()]
    if not bns:
        return []  # frozen anyway (K04): training=False changes nothing
    live, verdict = _gate("C01", target, [{"kind": kind}], "refuted",
                          kind == "functional" and _keras3_before_316(target))
    where = dict(where, trainable_bn=[b.path for b in bns][:8] + (["..."] if len(bns) > 8 else []))
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


def check_hardcoded_training(root: Layer, target: Target) -> list[Finding]:
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
    """A layer whose `call` defaults training=True, with trainable BN layers downstream (C02)."""
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
        fallback = _keras3_before_316(target) and _at_least(target, since)
        live, verdict = _gate("C02", target, [{"preproc": source.class_name, "entry": "call"}], "refuted", fallback)
        if not live:
            continue
        paths = [b.path for b in affected]
        finding = make(
            "C02", "training-default-upstream", "warning", source.path,
            f"{source.class_name} defaults training=True and runs before {len(paths)} BN layer(s)", target,
            evidence={"class": source.class_name, "call_default": "training=True",
                      "bn_downstream": paths[:8] + (["..."] if len(paths) > 8 else []), "bn_count": len(paths)},
            verdict=verdict,
            fix="on Keras 3.0-3.15 this default leaks into the call context: model(x) and model.export()'s "
            "serving endpoint run every later BN in training mode (batch statistics, moving statistics "
            "overwritten); predict() is not affected. Serve with predict() or model(x, training=False), or do "
            "the augmentation/resizing outside the model (tf.data); fixed in Keras 3.16 (keras PR #23166)")
        finding.affects = [source.path] + [x.path for x in later]
        out.append(finding)
    return out


def check_shared_bn(root: Layer, target: Target) -> list[Finding]:
    """One BN object called at several positions, directly or inside a model called several times (N08)."""
    out = []
    for layer in root.walk():
        if layer.parent is None or layer.parent.kind != "functional" or len(layer.calls) < 2:
            continue
        if layer.is_bn:
            bns = [layer]
        elif layer.is_model:
            bns = _bns_in(layer)
        else:
            continue
        if not bns:
            continue
        out.append(make(
            "N08", "shared-bn", "warning", layer.path,
            f"{'BN layer' if layer.is_bn else 'model holding BN'} used at {len(layer.calls)} positions", target,
            evidence={"positions": len(layer.calls), "bn": [b.path for b in bns][:8]},
            fix="the positions share gamma, beta and ONE pair of moving statistics, updated by every position in "
            "turn, so inference normalises each position with statistics mixed from all of them; intended for "
            "siamese towers, otherwise create one BatchNormalization per position"))
    return out


def check_frozen_bn(root: Layer, target: Target) -> list[Finding]:
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


def check_keras2_args(root: Layer, target: Target) -> list[Finding]:
    """Keras-2-only BN arguments in the config (C12)."""
    out = []
    keras3 = target.flavour in ("keras3", "keras-nightly")
    for layer in root.walk():
        if not layer.is_bn:
            continue
        cfg, found = layer.config, {}
        for arg in KERAS2_ONLY:
            if cfg.get(arg) is not None:  # tf_keras writes them only when set (fused=False is set)
                found[arg] = cfg[arg]
        axis = cfg.get("axis")
        if isinstance(axis, list) and len(axis) > 1:
            found["axis"] = axis
        if cfg.get("renorm") and keras3 and _before(target, (3, 14)):
            found["renorm"] = True
        if not found:
            continue
        out.append(make(
            "C12", "keras2-args", "error" if keras3 else "info", layer.path,
            f"Keras-2-only BatchNormalization argument(s): {', '.join(sorted(found))}", target,
            cases=[{"arg": a} for a in sorted(found)], evidence={"config": found},
            fix=("Keras 3 rejects fused/virtual_batch_size/adjustment and a list axis at construction, and "
                 "loading such a tf_keras .h5 fails (a multi-axis BN with a weight-shape error that does not "
                 "mention the axis); " if keras3 else
                 "accepted by tf_keras, but Keras 3 rejects them at construction and fails to load this layer "
                 "from .h5; ")
            + "remove them (fused has no Keras 3 equivalent; virtual_batch_size: reshape to ghost batches "
            "yourself; several axes: reshape so that one axis holds the features)"))
    return out


def check_dtype(root: Layer, target: Target) -> list[Finding]:
    """BN under a pure 16-bit dtype policy: 16-bit moving statistics (C06)."""
    out = []
    for layer in root.walk():
        if not layer.is_bn:
            continue
        policy = _dtype_name(layer.config.get("dtype"))
        if policy not in SIXTEEN_BIT:
            continue
        live, verdict = _gate("C06", target, [{"dtype": policy}], "refuted",
                              target.flavour in ("keras3", "keras-nightly"))
        if not live:
            continue
        out.append(make(
            "C06", "16bit-statistics", "warning", layer.path,
            f"dtype policy {policy!r}: moving statistics stored in {policy}", target,
            evidence={"dtype_policy": policy}, verdict=verdict,
            fix="an EMA step (1-momentum)*(batch-moving) smaller than half a unit in the last place of the 16-bit "
            "value is rounded away, so the moving statistics stall (bfloat16: near 1.0 any step < 0.0039); use the "
            "mixed policy ('mixed_float16'/'mixed_bfloat16'), which keeps float32 variables, at least for BN"))
    return out


def check_hyperparameters(root: Layer, target: Target) -> list[Finding]:
    """momentum in PyTorch's convention (X01); epsilon below the fused kernel's old 1.001e-5 clamp (C09)."""
    out = []
    for layer in root.walk():
        if not layer.is_bn:
            continue
        momentum, eps = layer.config.get("momentum"), layer.config.get("epsilon")
        # Keras' momentum is the weight of the OLD value. Below 0.5 the newest batch outweighs the whole
        # history, i.e. the "moving average" is mostly the last batch: that is PyTorch's convention
        # (momentum = weight of the NEW batch, default 0.1) copied without converting (X01).
        if isinstance(momentum, (int, float)) and not isinstance(momentum, bool) and momentum < 0.5:
            out.append(make(
                "X01", "torch-momentum", "warning", layer.path,
                f"momentum={momentum}: PyTorch's convention copied verbatim?", target,
                evidence={"momentum": momentum, "keras_equivalent_of_torch": round(1 - momentum, 6)},
                fix=f"Keras keeps momentum*old + (1-momentum)*batch; PyTorch's momentum={momentum} is Keras' "
                f"momentum={round(1 - momentum, 6)}"))
        if isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps < TFKERAS_MIN_EPSILON:
            rank = layer.rank()
            axis = layer.config.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
            fused_shape = rank in (4, 5) and isinstance(axis, int) and axis in (1, -1, rank - 1)
            layout = "nhwc" if fused_shape and axis != 1 else ("nchw" if fused_shape else
                                                               ("dense" if rank is not None else "unknown"))
            live, verdict = _gate("C09", target, [{"layout": layout}], "refuted",
                                  target.flavour == "tfkeras" and (fused_shape or rank is None))
            out.append(make(
                "C09", "epsilon-below-clamp", "warning" if live else "info", layer.path,
                f"epsilon={eps} is below 1.001e-5, the minimum of TensorFlow's fused kernel in older releases "
                "and of cuDNN", target,
                evidence={"epsilon": eps, "input_rank": rank, "layout": layout}, verdict=verdict,
                fix=("this Keras silently runs the layer with epsilon=1.001e-5 (fused kernel): outputs differ "
                     "from the PyTorch/ONNX original for channels with variance <~ 1e-5; "
                     if live else
                     "used exactly here, but TensorFlow releases that clamp the fused path (tf_keras 4-D/5-D "
                     "inputs) and cuDNN on GPU run it with 1.001e-5: outputs of channels with variance <~ 1e-5 "
                     "change when the model moves there; ")
                + "if the weights come from PyTorch (eps 1e-5), compare outputs after every port"))
    return out


def check_bias_before_bn(root: Layer, target: Target) -> list[Finding]:
    """A biased Dense/Conv whose only consumer is a training-mode BN on its channel axis (C18)."""
    out = []
    for container in root.walk():
        if container.kind not in ("functional", "sequential"):
            continue
        for layer in container.children:
            cfg = layer.config
            if layer.class_name not in AFFINE_CLASSES or not cfg.get("use_bias", True) or len(layer.calls) != 1:
                continue
            if cfg.get("activation") not in (None, "linear"):
                continue
            consumers = _feeds_only(container, layer)
            if len(consumers) != 1 or not consumers[0].is_bn or len(consumers[0].calls) != 1:
                continue
            bn = consumers[0]
            if not bn.effectively_trainable():
                continue  # frozen BN: moving mean fixed, the bias does shift the output
            rank = bn.rank() or layer.rank()
            axis = bn.config.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
            channels_first = cfg.get("data_format") == "channels_first"
            if rank is not None and isinstance(axis, int):
                axis = axis % rank
                if axis != (1 if channels_first else rank - 1):
                    continue  # BN normalises another axis: the per-channel bias is not removed
            elif axis not in (-1, 1 if channels_first else -1):
                continue
            out.append(make(
                "C18", "bias-before-bn", "info", layer.path,
                f"{layer.class_name} with a bias feeds BN {bn.name} directly: the bias is useless", target,
                evidence={"use_bias": True, "next": bn.path},
                fix="BN subtracts the batch mean in training, which removes any per-channel bias (its gradient is "
                "0) and has its own beta: use use_bias=False (Keras Dense docstring)"))
    return out


CHECKS = (check_hardcoded_training, check_training_default_upstream, check_shared_bn, check_frozen_bn,
          check_keras2_args, check_dtype, check_hyperparameters, check_bias_before_bn)


def audit_tree(root: Layer, target: Target, resolver=None) -> tuple[list[Finding], list[str]]:
    """Run every static check on a parsed tree. Returns (findings, notes)."""
    findings: list[Finding] = []
    for check in CHECKS:
        if check is check_training_default_upstream:
            findings += check(root, target, resolver)
        else:
            findings += check(root, target)
    notes = []
    opaque = [x for x in root.walk() if x.kind == "subclassed" or (x.kind == "layer" and x.module and
                                                                     x.module.split(".")[0] not in ("keras", "tf_keras")
                                                                     and not x.children)]
    if root.kind not in ("functional", "sequential", "subclassed"):
        notes.append(f"{root.path}: the config is a {root.class_name}, not a Functional/Sequential model: "
                     "static checks saw no graph")
    for layer in opaque[:5]:
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


def audit_file(path) -> "object":
    """Static audit of a saved model, with json/zipfile (and h5py for .h5) only: no Keras import.
    Returns bnspec.audit.findings.Findings."""
    from bnspec.audit.findings import Findings, target as make_target

    started = time.perf_counter()
    config, meta = read_file(path)
    tgt = make_target(meta.get("keras_version"), family_of(meta))
    root, findings, notes = audit_config(config, tgt)
    context = {"model": str(path), "format": meta["format"], "saved_by_keras": meta.get("keras_version"),
               "flavour": tgt.flavour, "keras": tgt.version, "backend": tgt.backend, "verdicts_for": tgt.origin,
               "mode": "static", "layers": sum(1 for _ in root.walk()) - 1,
               "bn_layers": sum(1 for x in root.walk() if x.is_bn),
               "static_seconds": round(time.perf_counter() - started, 3)}
    return Findings(sort(findings), context=context, notes=notes)


def sort(findings: list[Finding]) -> list[Finding]:
    from bnspec.audit.findings import RANK

    return sorted(findings, key=lambda f: (-RANK[f.severity], f.id, f.layer))
