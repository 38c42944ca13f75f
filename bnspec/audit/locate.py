"""Where an exported model's activations leave Keras': every intermediate tensor of the artefact, read from its
runtime, matched to each BN layer's output and compared with Keras' within that tensor's propagated bound
(bnspec.audit.bound). The first BN layer (in graph order) whose output no runtime tensor reproduces within its
bound is where the export diverges.

How each runtime exposes its intermediates (the artefact on disk is never changed):
  onnx      every node output added to a copy of the graph's outputs, run in onnxruntime (CPU, as served)
  openvino  a Result added for every non-constant node's output, compiled for the CPU at the artefact's precision
  litert    the interpreter with experimental_preserve_all_tensors, without its default delegates (XNNPACK
            keeps its tensors to itself): the reference kernels, another float32 evaluation the bound covers
Other formats: not available (named in the finding).

A BN layer's tensor is found by name where the runtime keeps Keras' layer names (tf2onnx and TFLite do:
".../conv1_bn_1/batchnorm/..."), else by value among the tensors of the same size (OpenVINO renames its
nodes), in Keras' layout or channels-first; folded BN: the convolution's output, or its fused ReLU's. A
tensor beyond the bound counts only if it resembles Keras' (a divergence, not another tensor: `locate`); a
BN layer with no such tensor is "not located", and no verdict is drawn from it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUPPORTED = ("onnx", "openvino", "litert")
N_SAMPLE = 256  # positions compared first, to rank same-size candidates before the full comparison
N_FULL = 3  # candidates compared in full


def intermediates(art, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every float intermediate tensor of the artefact on x, by name (runtime errors propagate)."""
    return globals()[f"_{art.fmt}"](art, np.ascontiguousarray(x, np.float32))


def _onnx(art, x):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(art.path))
    # only the tensors that shape inference types as float are exposed: declaring an int64 tensor (torch.onnx's
    # ConstantOfShape) as float makes onnxruntime refuse the whole model
    inferred = onnx.shape_inference.infer_shapes(model).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.output, *inferred.input)}
    have = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in have and elem.get(name) == onnx.TensorProto.FLOAT:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                have.add(name)
    path = Path(art.path).with_suffix(".all-outputs.onnx")
    onnx.save(model, str(path))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs() if o.type == "tensor(float)"]
        values = sess.run(names, {sess.get_inputs()[0].name: x})
    finally:
        path.unlink(missing_ok=True)
    return dict(zip(names, (np.asarray(v) for v in values)))


def _openvino(art, x):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(art.path))
    outputs = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter", "Result"):
            continue
        for i, out in enumerate(op.outputs()):
            if out.get_element_type() == ov.Type.f32:
                outputs.append((f"{op.get_friendly_name()}:{i}", out))
    model.add_outputs([o for _, o in outputs])  # an output that is already a Result is not added twice
    names = [f"{p.get_node().get_friendly_name()}:{p.get_index()}" for p in model.outputs]
    precision = art.runtime_options.get("precision")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision} if precision else {})
    result = compiled(x)
    return {name: np.asarray(result[port]) for name, port in zip(names, compiled.outputs)}


def _litert(art, x):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = Interpreter(model_path=str(art.path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = it.get_input_details()[0]
    if tuple(inp["shape"]) != x.shape:
        it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    it.invoke()
    out = {}
    for d in it.get_tensor_details():
        if d["dtype"] != np.float32 or not len(d["shape"]) or d["shape"][0] != len(x):
            continue
        try:
            out[d["name"]] = np.array(it.get_tensor(d["index"]))
        except ValueError:  # a tensor the interpreter freed or never allocated
            continue
    return out


# --------------------------------------------------------------------------- matching


def _views(arr: np.ndarray, shape: tuple):
    """arr in Keras' layout: as it is, or channels-first moved to channels-last."""
    if arr.shape == shape:
        yield "as is", arr
    if arr.ndim >= 3:
        moved = np.moveaxis(arr, 1, -1)
        if moved.shape == shape:
            yield "channels first", moved


def ratio(candidate: np.ndarray, keras: np.ndarray, bound: np.ndarray) -> float:
    """max |candidate - Keras| / bound; non-finite or beyond a zero bound: inf."""
    diff = np.abs(candidate.astype(np.float64) - keras)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(bound > 0, diff / np.where(bound > 0, bound, 1.0), np.where(diff == 0, 0.0, np.inf))
    r = np.where(np.isfinite(r), r, np.inf)
    return float(r.max()) if r.size else 0.0


@dataclass
class Match:
    path: str
    tensor: str | None = None  # the runtime tensor that reproduces the BN output best (None: not located)
    layout: str = ""
    how: str = ""  # "name" | "value"
    ratio: float | None = None  # max |runtime - Keras| / bound over the examples (None: not located)


@dataclass
class Location:
    """Per BN layer (graph order) its best match; `first` the first located layer beyond its bound."""

    matches: list = field(default_factory=list)

    @property
    def located(self) -> list:
        return [m for m in self.matches if m.ratio is not None]

    @property
    def first(self) -> Match | None:
        return next((m for m in self.located if m.ratio > 1.0), None)

    @property
    def worst(self) -> Match | None:
        return max(self.located, key=lambda m: m.ratio, default=None)

    def merge(self, other: "Location") -> "Location":
        """The same layers on another chunk of examples: the worse ratio of the two (a layer's tensor as found
        first)."""
        if not self.matches:
            return other
        out = []
        for a, b in zip(self.matches, other.matches):
            if a.ratio is None or (b.ratio is not None and b.ratio > a.ratio):
                out.append(b if a.ratio is None else Match(a.path, a.tensor, a.layout, a.how, b.ratio))
            else:
                out.append(a)
        return Location(out)

    def summary(self) -> dict:
        first, worst = self.first, self.worst
        return {"bn_layers": len(self.matches), "located": len(self.located),
                "by_name": sum(m.how == "name" for m in self.located),
                "first_beyond_bound": None if first is None else {"layer": first.path, "ratio": first.ratio,
                                                                  "tensor": first.tensor},
                "worst_ratio": None if worst is None else worst.ratio,
                "worst_layer": None if worst is None else worst.path}


def _name_pattern(path: str):
    name = re.escape(path.split("/")[-1])
    return re.compile(rf"(^|[/;:]){name}(_\d+)?(/|;|:|$)")


NAMED_LIKE = 0.5  # relative RMS difference: two unrelated tensors of one scale differ by about sqrt(2)
VALUE_LIKE = 0.1  # found by value only: a small divergence (another epsilon, a lower precision), no more


def relrms(candidate: np.ndarray, keras: np.ndarray) -> float:
    """||candidate - Keras|| / ||Keras|| (RMS): how much a tensor resembles Keras' (inf for a zero tensor)."""
    k = np.asarray(keras, np.float64)
    scale = float(np.sqrt(np.mean(k**2)))
    d = float(np.sqrt(np.mean((candidate.astype(np.float64) - k) ** 2)))
    return d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))


def _scored(names, tensors, keras, bound, rng, limit: int | None = N_FULL):
    """[(ratio, name, layout, view)] of the views of `names`: in their order (limit None), or the `limit` most
    promising (ranked on a sample)."""
    views = [(n, lay, v) for n in names for lay, v in _views(tensors[n], keras.shape)]
    if limit is not None and len(views) > limit:
        idx = tuple(rng.integers(0, d, N_SAMPLE) for d in keras.shape)
        views.sort(key=lambda t: ratio(t[2][idx], keras[idx], bound[idx]))
        views = views[:limit]
    return [(ratio(v, keras, bound), n, lay, v) for n, lay, v in views]


def locate(bns: list, tensors: dict[str, np.ndarray], seed: int = 0) -> Location:
    """bns: [(path, [(target, Keras' value, bound), ...], Keras' value of the layer's input)] in graph order;
    the targets: the BN output and, where a ReLU follows it, the ReLU's output (a converter may fuse the
    activation into the folded convolution: TFLite does); tensors: the runtime's intermediates by name.

    Per layer: a tensor named after it within the bound; else any tensor of its size within the bound. Beyond
    the bound a tensor is taken for the layer's only if it resembles Keras' output: named after the layer
    within NAMED_LIKE (the last such in graph order: the layer's own output, not a statistic computed inside
    it; a name alone is not enough, tf2onnx names a Reshape of the input after the layer), or, by value only,
    within VALUE_LIKE and nearer to the output than to the layer's input (a BN near the identity). Else the
    layer is not located, and nothing is concluded about it."""
    rng = np.random.default_rng(seed)
    by_size: dict = {}
    for name, arr in tensors.items():
        by_size.setdefault(arr.size, []).append(name)
    out = []
    for path, targets, keras_in in bns:
        pattern = _name_pattern(path)
        within, named_beyond, value_beyond = [], [], []
        for target, keras, bound in targets:
            keras = np.asarray(keras, np.float64)
            same = by_size.get(keras.size, [])
            named = [n for n in same if pattern.search(n)]
            label = (lambda lay: lay) if target == "output" else (lambda lay: f"{lay}, {target}")  # noqa: E731
            for r, n, lay, v in _scored(named, tensors, keras, bound, rng, limit=None):
                if r <= 1.0:
                    within.append(Match(path, n, label(lay), "name", r))
                elif relrms(v, keras) < NAMED_LIKE:
                    named_beyond.append(Match(path, n, label(lay), "name", r))
            if not within:
                for r, n, lay, v in _scored([n for n in same if n not in named], tensors, keras, bound, rng):
                    near = relrms(v, keras)
                    if r <= 1.0:
                        within.append(Match(path, n, label(lay), "value", r))
                    elif near < VALUE_LIKE and (keras_in is None or np.shape(keras_in) != keras.shape
                                                or near < relrms(v, keras_in)):
                        value_beyond.append(Match(path, n, label(lay), "value", r))
            if within:
                break
        out.append(min(within, key=lambda m: m.ratio) if within else named_beyond[-1] if named_beyond else
                   min(value_beyond, key=lambda m: m.ratio) if value_beyond else Match(path))
    return Location(out)
