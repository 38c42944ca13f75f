"""A Keras 3 model's graph as bnspec.audit.bound's `Op`s, with the float32 values Keras computes for every
tensor: the model is run node by node as Functional.call runs it (its `_nodes_by_depth`, each node's
arguments filled in, the call-context `training` injected), nested Functional/Sequential models walked
inside. No Keras import: the model was built by the caller's Keras; tensors become numpy through
bnspec.measure.backend.to_numpy.

A layer class without a float32 model here (or computing in another dtype) becomes an Op of kind "unknown"
with the reason: the bound then withholds its verdict. Subclassed models (a call() that is Python code, not
a graph) and tf_keras models (another graph structure) have no graph here: `graph_of` returns None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnspec.audit.rules import Op
from bnspec.measure.backend import to_numpy

IDENTITY = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
            "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "InputLayer"}
MERGE = {"Add": "add", "Subtract": "subtract", "Average": "average", "Multiply": "multiply", "Maximum": "maximum",
         "Minimum": "minimum", "Concatenate": "concat"}


def graph_of(model):
    """The Keras 3 Function whose nodes `model` runs (a Sequential's inner Functional), or None."""
    if type(model).__name__ == "Sequential" or any(c.__name__ == "Sequential" for c in type(model).__mro__):
        inner = getattr(model, "_functional", None)
        return inner if inner is not None and hasattr(inner, "_nodes_by_depth") else None
    nodes = getattr(model, "_nodes_by_depth", None)
    if not nodes:
        return None
    any_node = next(iter(next(iter(nodes.values()))), None)  # Keras 3 nodes: .operation, .arguments (not tf_keras')
    return model if hasattr(any_node, "operation") and hasattr(any_node, "arguments") else None


def _arr(v):
    return None if v is None else to_numpy(v, np.float64)


def _fn_name(activation) -> str:
    return getattr(activation, "__name__", None) or "linear"


def _spatial(layer, rank: int) -> dict:
    return {"cf": getattr(layer, "data_format", "channels_last") == "channels_first", "rank": rank}


def describe(layer, kwargs: dict) -> tuple[str, dict, str]:
    """(kind, params, why-unknown) of one layer call; kwargs: the call's keyword arguments (training)."""
    cls = type(layer).__name__
    dtype = str(getattr(layer, "compute_dtype", "float32"))
    if dtype != "float32" and cls not in IDENTITY:
        return "unknown", {}, f"computes in {dtype}: the float32 bound does not apply"
    if cls in IDENTITY:
        return "shape", {"fn": _same}, ""
    if cls == "Dense":
        if getattr(layer, "quantization_mode", None):
            return "unknown", {}, f"quantized ({layer.quantization_mode})"
        return "dense", {"W": _arr(layer.kernel), "b": _arr(layer.bias) if layer.use_bias else None,
                         "activation": _fn_name(layer.activation)}, ""
    if cls in ("Conv1D", "Conv2D", "DepthwiseConv2D"):
        rank = 1 if cls == "Conv1D" else 2
        if getattr(layer, "groups", 1) != 1 or layer.padding not in ("valid", "same"):
            return "unknown", {}, f"groups={getattr(layer, 'groups', 1)}, padding={layer.padding!r}"
        W = _arr(layer.kernel)
        if rank == 1:
            W = W[None]
        one = lambda v: (1,) + tuple(v) if rank == 1 else tuple(v)  # noqa: E731
        return ("depthwise" if cls == "DepthwiseConv2D" else "conv"), {
            "W": W, "b": _arr(layer.bias) if layer.use_bias else None, "activation": _fn_name(layer.activation),
            "strides": one(layer.strides), "dilation": one(layer.dilation_rate), "padding": layer.padding,
            **_spatial(layer, rank)}, ""
    if "BatchNormalization" in [c.__name__ for c in type(layer).__mro__]:
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        if axis is None:
            return "unknown", {}, f"BN over several axes {layer.axis}"
        n = int(layer.moving_mean.shape[0])
        return "bn", {"gamma": _arr(layer.gamma) if layer.gamma is not None else np.ones(n),
                      "beta": _arr(layer.beta) if layer.beta is not None else np.zeros(n),
                      "mean": _arr(layer.moving_mean), "var": _arr(layer.moving_variance), "eps": float(layer.epsilon),
                      "axis": axis, "mode": "batch" if kwargs.get("training") is True else "inference"}, ""
    if cls == "Activation":
        return "act", {"fn": _fn_name(layer.activation)}, ""
    if cls == "ReLU":
        if float(layer.negative_slope or 0) != 0 or float(layer.threshold or 0) != 0:
            return "unknown", {}, "ReLU with a negative slope or threshold"
        return "act", {"fn": "relu", "max_value": None if layer.max_value is None else float(layer.max_value)}, ""
    if cls == "LeakyReLU":
        return "act", {"fn": "leaky_relu", "negative_slope": float(layer.negative_slope)}, ""
    if cls == "Softmax":
        return "act", {"fn": "softmax", "axis": layer.axis}, ""
    if cls in MERGE:
        return MERGE[cls], {"axis": getattr(layer, "axis", -1)}, ""
    if cls in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
        rank = 1 if cls.endswith("1D") else 2
        one = lambda v: (1,) + tuple(v) if rank == 1 else tuple(v)  # noqa: E731
        return ("maxpool" if cls.startswith("Max") else "avgpool"), {
            "pool": one(layer.pool_size), "strides": one(layer.strides), "padding": layer.padding,
            **_spatial(layer, rank)}, ""
    if cls in ("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D"):
        return ("gap" if "Average" in cls else "gmp"), {"keepdims": bool(layer.keepdims),
                                                         **_spatial(layer, 1 if cls.endswith("1D") else 2)}, ""
    if cls in ("ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "Flatten", "Reshape", "Permute"):
        return "shape", {"fn": _shape_fn(layer, cls)}, ""
    if cls == "Rescaling":
        return "rescale", {"scale": np.asarray(layer.scale, np.float64),
                           "offset": np.asarray(layer.offset, np.float64)}, ""
    return "unknown", {}, "no float32 model for this layer class"


def _shape_fn(layer, cls):
    cf = getattr(layer, "data_format", "channels_last") == "channels_first"
    if cls == "Flatten":
        return lambda a: (np.moveaxis(a, 1, -1) if cf and a.ndim > 2 else a).reshape(len(a), -1)
    if cls == "Reshape":
        return lambda a: a.reshape((len(a),) + tuple(layer.target_shape))
    if cls == "Permute":
        return lambda a: a.transpose((0,) + tuple(layer.dims))
    given = layer.padding if cls.startswith("Zero") else layer.cropping
    pads = [tuple(p) for p in given] if cls.endswith("2D") else [tuple(given)]  # per spatial axis: (before, after)
    spatial = [1 + int(cf) + i for i in range(len(pads))]
    if cls.startswith("Zero"):
        def pad(a):
            width = [(0, 0)] * a.ndim
            for ax, p in zip(spatial, pads):
                width[ax] = p
            return np.pad(a, width)
        return pad

    def crop(a):
        idx = [slice(None)] * a.ndim
        for ax, (lo, hi) in zip(spatial, pads):
            idx[ax] = slice(lo, a.shape[ax] - hi)
        return a[tuple(idx)]
    return crop


@dataclass
class Captured:
    """Ops in execution order, every tensor's float32 value (id -> numpy), the graph's input and output ids,
    and each BN call's effective `training` argument (path -> True/False/None) and the one baked into the graph."""

    ops: list = field(default_factory=list)
    values: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    bn_training: dict = field(default_factory=dict)
    bn_baked: dict = field(default_factory=dict)  # path -> the training argument the model's graph passes itself

    def output(self) -> np.ndarray:
        return self.values[self.outputs[0]]


def capture(model, x, training=False) -> Captured:
    """Run `model` on x node by node as Functional.call(x, training=training) does, recording every layer call
    as an Op and every tensor's value. training=False: what model(x, training=False) computes; None: what
    model(x) computes (a node's own training argument stays). Raises ValueError when `model` has no graph."""
    fn = graph_of(model)
    if fn is None:
        raise ValueError(f"{type(model).__name__} {getattr(model, 'name', '')!r} has no Keras 3 functional graph "
                         "(subclassed models and tf_keras models cannot be walked layer by layer)")
    cap = Captured()
    xs = x if isinstance(x, (list, tuple)) else [x]
    if len(fn.inputs) != len(xs):
        raise ValueError(f"the model takes {len(fn.inputs)} inputs, {len(xs)} given")
    cap.inputs = [id(t) for t in fn.inputs]
    cap.outputs = [tid for tid, _ in _walk(fn, list(xs), training, model.name, cap)]
    return cap


def _walk(fn, xs, training, prefix: str, cap: Captured) -> list:
    """Run one Function's nodes on xs (numpy or backend tensors); returns [(tensor id, value)] of its outputs."""
    tensors = {}
    for t, v in zip(fn.inputs, xs):
        tensors[id(t)] = v
        cap.values.setdefault(id(t), to_numpy(v))
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            op = node.operation
            if not op or node.is_input or any(id(t) not in tensors for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            baked = kwargs.get("training")
            if training is not None and "training" in getattr(op, "_call_context_args", ()):
                kwargs["training"] = training
            path = f"{prefix}/{op.name}"
            inner = graph_of(op) if hasattr(op, "layers") else None
            if inner is not None:  # a nested model: its own nodes, joined to the outer tensors by identities
                for outer_t, inner_t in zip(node.input_tensors, inner.inputs):
                    cap.ops.append(Op(path + "/<input>", "Input", "shape", {"fn": _same}, [id(outer_t)], id(inner_t)))
                outs = _walk(inner, [tensors[id(t)] for t in node.input_tensors], kwargs.get("training", training),
                             path, cap)
                for t, (oid, v) in zip(node.outputs, outs):
                    cap.ops.append(Op(path + "/<output>", "Output", "shape", {"fn": _same}, [oid], id(t)))
                    cap.values[id(t)] = cap.values[oid]
                    tensors[id(t)] = v
                continue
            out = op(*args, **kwargs)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            kind, params, why = describe(op, kwargs)
            if len(outs) != 1 or len(node.outputs) != 1:
                kind, params, why = "unknown", {}, f"{len(outs)} outputs"
            if kind == "bn":
                cap.bn_training[path] = kwargs.get("training")
                cap.bn_baked[path] = baked
            cap.ops.append(Op(path, type(op).__name__, kind, params, [id(t) for t in node.input_tensors],
                              id(node.outputs[0]), why))
            for t, v in zip(node.outputs, outs):
                tensors[id(t)] = v
                cap.values[id(t)] = to_numpy(v)
    return [(id(t), tensors[id(t)]) for t in fn.outputs]


def _same(a):
    return a
