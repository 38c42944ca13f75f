"""The model as the static checks see it: a tree of `Layer` nodes parsed from a serialized config, and the
graph questions the checks ask of it (what runs after a layer, what feeds it). No Keras, no TensorFlow.

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
else Sequential). A layer shared between positions has several inbound nodes. A wrapper
(`TimeDistributed`, `Bidirectional`) holds its inner layer in its config under "layer" (and
"backward_layer"): the inner layer becomes the wrapper's child, at path `<wrapper path>/<inner name>`,
the path the live model gives it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bnspec.audit.findings import UsageError

BN_CLASSES = frozenset({"BatchNormalization", "SyncBatchNormalization", "BatchNormalizationV1",
                        "BatchNormalizationV2", "ExplicitBatchNorm"})
INPUT_CLASSES = frozenset({"InputLayer"})
WRAPPED_KEYS = ("layer", "backward_layer")  # where a wrapper's config holds its inner layer(s)
MODEL_KINDS = ("functional", "sequential", "subclassed")


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
    kind: str  # functional | sequential | subclassed | wrapper | bn | input | layer
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
        return self.kind in MODEL_KINDS

    @property
    def holds_layers(self) -> bool:
        """A model or a wrapper: calling it calls the layers inside it."""
        return self.kind in MODEL_KINDS or self.kind == "wrapper"

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


def dtype_name(value) -> str | None:
    """A layer's dtype policy name from a config ("float32", {"class_name": "DTypePolicy", "config":
    {"name": "mixed_float16"}}, tf_keras {"class_name": "Policy", ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        cfg = value.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            return cfg["name"]
    return None


def single_axis(axis):
    """A BN config's axis as one int where it is one ([3] -> 3), else as given."""
    return axis[0] if isinstance(axis, list) and len(axis) == 1 else axis


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


def _wrapped(cfg: dict) -> list[dict]:
    """The serialized inner layers of a wrapper's config (empty for any other layer)."""
    return [cfg[k] for k in WRAPPED_KEYS if isinstance(cfg.get(k), dict) and "class_name" in cfg[k]]


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
    inner = _wrapped(cfg)
    if isinstance(cfg.get("layers"), list):
        kind = "functional" if "input_layers" in cfg else "sequential"
    elif class_name in BN_CLASSES:
        kind = "bn"
    elif class_name in INPUT_CLASSES:
        kind = "input"
    elif class_name in ("Functional", "Sequential", "Model"):
        kind = "functional"
    elif inner:
        kind = "wrapper"
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
    elif kind == "wrapper":
        layer.children = [parse(child, layer) for child in inner]
    return layer


# --------------------------------------------------------------------------- graph questions


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
    if container.kind != "functional":
        return []  # a wrapper's or a subclassed model's children: no graph between them
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


def graph_known(root: Layer) -> bool:
    """Every container in the tree has a graph (Functional/Sequential or a wrapper): upstream/downstream
    questions have exact answers. A subclassed model's call() order is not in its config."""
    return all(x.kind != "subclassed" for x in root.walk())


def bns_in(layer: Layer) -> list[Layer]:
    return [x for x in layer.walk() if x.is_bn]


def feeds_only(container: Layer, producer: Layer) -> list[Layer]:
    """The consumers of `producer`'s single output inside `container`."""
    if container.kind == "sequential":
        kids = [c for c in container.children if c.kind != "input"]
        i = kids.index(producer)
        return kids[i + 1:i + 2]
    return [layer for layer, _ in _consumers(container).get((producer.name, 0), [])]


def count(root: Layer) -> tuple[int, int]:
    """(layers below the root, BN layers among them)."""
    nodes = list(root.walk())
    return len(nodes) - 1, sum(1 for x in nodes if x.is_bn)
