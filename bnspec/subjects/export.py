"""A Keras model exported in a deployment format and served by that format's own runtime: outputs, the op
census of the exported graph, its constants and state, and the float32 error bound that an exported model
(BN kept, or folded into the layer before it) must meet against Keras' `model(x, training=False)`.

    art = export(model, "onnx", workdir)             # model.export(..., format="onnx"), timed
    y = art.run(x)                                    # onnxruntime, not TensorFlow
    art.census()                                      # Census: op types, BN ops, what the runtime runs
    carried(art.constants(), bn_state, kernel, bias)  # Carry: how a BN layer's numbers reach the graph
    r = export_and_run(model, "openvino", x, workdir) # ExportResult(outputs, census, runtime_version, seconds)

Formats and runtimes (Keras 3.15.1, keras/src/export/*): tf_saved_model (TensorFlow's tf.saved_model.load;
on JAX through jax2tf), onnx (onnxruntime; converted by tf2onnx on TensorFlow, jax2onnx on JAX, torch.onnx on
PyTorch), openvino (the OpenVINO runtime; ov.convert_model of a tf.function on TensorFlow/JAX, of a
torch.jit trace on PyTorch), litert (the ai-edge-litert interpreter; TFLiteConverter on TensorFlow,
litert-torch on PyTorch), torch (torch.export's .pt2, PyTorch only). A pair Keras refuses raises
`NotApplicable` with Keras' own message; a converter or runtime that is not installed raises `RuntimeMissing`
(the case is unmeasured here, measured in the deploy environment: `pip install -e '.[deploy]'`); an export
or load that fails where Keras says the pair is supported raises `ExportFailed` (a finding, with the error).
tf_keras has `Model.export` (SavedModel only) and `tf.lite.TFLiteConverter.from_keras_model` for litert.

Nothing here imports a runtime, a converter or Keras at module level.

Size: one room because the five formats share one life cycle (export, load, run, census, constants, state)
and the bound that judges them; split per format it would be five copies of the same dispatch.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import inspect
import itertools
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnspec import BnspecError, reference
from bnspec.reference import LAMBDA, U32

FORMATS = ("tf_saved_model", "onnx", "openvino", "litert", "torch")
SUFFIX = {"tf_saved_model": "", "onnx": ".onnx", "openvino": ".xml", "litert": ".tflite", "torch": ".pt2"}
# the runtime that serves each format: (import name, distribution)
RUNTIME = {"tf_saved_model": ("tensorflow", "tensorflow"), "onnx": ("onnxruntime", "onnxruntime"),
           "openvino": ("openvino", "openvino"), "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
           "torch": ("torch", "torch")}
# the converter Keras calls, per (format, backend): (import name, distribution)
CONVERTER = {("onnx", "tensorflow"): ("tf2onnx", "tf2onnx"), ("onnx", "jax"): ("jax2onnx", "jax2onnx"),
             ("onnx", "torch"): ("onnx", "onnx"), ("openvino", "tensorflow"): ("openvino", "openvino"),
             ("openvino", "jax"): ("tensorflow", "tensorflow"), ("openvino", "torch"): ("openvino", "openvino"),
             ("litert", "tensorflow"): ("tensorflow", "tensorflow"), ("litert", "torch"): ("litert_torch", "litert-torch"),
             ("tf_saved_model", "jax"): ("tensorflow", "tensorflow"), ("tf_saved_model", "torch"): ("torch_xla", "torch-xla"),
             ("tf_saved_model", "tensorflow"): ("tensorflow", "tensorflow"), ("torch", "torch"): ("torch", "torch")}
# Keras' own refusals of a format on a backend (keras/src/models/model.py, export/*.py)
_REFUSAL = re.compile(r"(requires (TensorFlow|PyTorch|the torch)|only available with|only compatible with|"
                      r"Unrecognized format|Unsupported arguments for LiteRT export)", re.I)
R_A = 4  # roundings in a = gamma/sqrt(var+eps): the add, sqrt + division (or an rsqrt of <= 2 ulp), the product


class NotApplicable(BnspecError):
    """Keras does not export this format on this backend or flavour; `reason` is Keras' own message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RuntimeMissing(BnspecError):
    """The converter or runtime this format needs is not installed here."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ExportFailed(BnspecError):
    """Keras supports the pair, but exporting (stage "export") or loading/running the artefact (stage "load",
    "run") raised: a finding about the installed Keras and converter, never a skip."""

    def __init__(self, stage: str, error: BaseException | str):
        self.stage = stage
        self.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"{stage} failed: {self.error}")


def version(dist: str) -> str | None:
    for name in (dist, dist.replace("-", "_"), f"{dist}-cpu"):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def _need(module: str, dist: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeMissing(f"{what} needs {dist}, which is not installed ({exc}); "
                             "install bnspec's deploy extra: pip install -e '.[deploy]'") from None


# --------------------------------------------------------------------------- census


BN_OP = re.compile(r"batch_?norm|BatchNorm", re.I)


@dataclass
class Census:
    """The ops of an exported graph, as its format names them. `bn_ops`: ops that are a whole BN (ONNX
    BatchNormalization, FusedBatchNormV3, OpenVINO BatchNormInference, aten batch_norm); `runtime_ops`: what
    the runtime executes after its own optimisation where it can be read (onnxruntime's optimised graph,
    OpenVINO's compiled layers with their precision, LiteRT with its default delegates); `opaque`: ops whose
    inside is another graph (jax2tf's XlaCallModule)."""

    ops: dict
    runtime_ops: dict | None = None
    opaque: list = field(default_factory=list)

    @property
    def bn_ops(self) -> dict:
        return {k: v for k, v in self.ops.items() if BN_OP.search(k)}

    def as_dict(self) -> dict:
        return {"ops": dict(self.ops), "bn_ops": self.bn_ops, "runtime_ops": self.runtime_ops, "opaque": self.opaque}

    def text(self) -> str:
        return ", ".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(self.ops.items()))


# --------------------------------------------------------------------------- the artefact and its runtime


@dataclass
class Artefact:
    """An exported model on disk and its runtime, loaded once (`run` may be called many times)."""

    fmt: str
    backend: str
    path: Path
    export_seconds: float
    converter: str
    converter_version: str | None
    runtime_options: dict = field(default_factory=dict)
    _session: object = None
    _input_name: str | None = None

    @property
    def runtime(self) -> str:
        return RUNTIME[self.fmt][1]

    @property
    def runtime_version(self) -> str | None:
        return version(self.runtime)

    def describe(self) -> dict:
        return {"format": self.fmt, "runtime": self.runtime, "runtime_version": self.runtime_version,
                "converter": self.converter, "converter_version": self.converter_version,
                "export_seconds": round(self.export_seconds, 3), **{f"option_{k}": str(v) for k, v in self.runtime_options.items()}}

    def fresh(self, **runtime_options) -> "Artefact":
        """The same file in a new runtime session (fresh state), with other runtime options if given."""
        options = {**self.runtime_options, **runtime_options} if runtime_options else dict(self.runtime_options)
        return dataclasses.replace(self, runtime_options=options, _session=None, _input_name=None)

    # ---------------------------------------------------------------- loading
    def session(self):
        if self._session is None:
            try:
                self._session = getattr(self, f"_load_{self.fmt}")()
            except (RuntimeMissing, NotApplicable):
                raise
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot load the artefact is a finding
                raise ExportFailed("load", exc) from exc
        return self._session

    def _load_tf_saved_model(self):
        import tensorflow as tf

        return tf.saved_model.load(str(self.path))

    def _load_onnx(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(self.path.with_suffix(".ort-optimized.onnx"))
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self._input_name = sess.get_inputs()[0].name
        return sess

    def _load_openvino(self):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(self.path))
        config = {"INFERENCE_PRECISION_HINT": self.runtime_options["precision"]} if self.runtime_options.get("precision") else {}
        return core, model, core.compile_model(model, "CPU", config)

    def _litert(self, delegates: bool):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Interpreter(model_path=str(self.path), experimental_op_resolver_type=kind)

    def _load_litert(self):
        return self._litert(delegates=self.runtime_options.get("delegates", True))

    def _load_torch(self):
        import torch

        return torch.export.load(str(self.path)).module()

    # ---------------------------------------------------------------- running
    def run(self, x: np.ndarray) -> np.ndarray:
        """The artefact's first output on x (float32 numpy), in its runtime."""
        sess = self.session()
        x = np.ascontiguousarray(x)
        try:
            if self.fmt == "tf_saved_model":
                import tensorflow as tf

                out = sess.serve(tf.constant(x))
                out = out[0] if isinstance(out, (list, tuple)) else next(iter(out.values())) if isinstance(out, dict) else out
                return np.asarray(out.numpy())
            if self.fmt == "onnx":
                return np.asarray(sess.run(None, {self._input_name: x})[0])
            if self.fmt == "openvino":
                return np.asarray(sess[2](x)[0])
            if self.fmt == "litert":
                inp, out = sess.get_input_details()[0], sess.get_output_details()[0]
                if tuple(inp["shape"]) != x.shape:
                    sess.resize_tensor_input(inp["index"], x.shape)
                sess.allocate_tensors()
                sess.set_tensor(inp["index"], x.astype(inp["dtype"]))
                sess.invoke()
                return np.array(sess.get_tensor(out["index"]))
            import torch

            out = sess(torch.from_numpy(x))
            out = out[0] if isinstance(out, (list, tuple)) else out
            return out.detach().cpu().numpy()
        except Exception as exc:  # noqa: BLE001 - e.g. a batch size the artefact fixed at export
            raise ExportFailed("run", exc) from exc

    def serve(self, x: np.ndarray) -> np.ndarray:
        """The artefact's outputs on x as a user serves it: in one call, or in chunks of the batch size the
        artefact fixed at export (torch's .pt2 and litert-torch trace with a batch of one)."""
        batch = self.input_shape()[:1]
        if batch and isinstance(batch[0], int) and batch[0] != len(x) and len(x) % batch[0] == 0:
            return np.concatenate([self.run(x[i:i + batch[0]]) for i in range(0, len(x), batch[0])])
        return self.run(x)

    def input_shape(self) -> list:
        """The artefact's declared input shape (None or a name for a dynamic dimension)."""
        sess = self.session()
        if self.fmt == "onnx":
            return list(sess.get_inputs()[0].shape)
        if self.fmt == "openvino":
            return [None if d.is_dynamic else d.get_length() for d in sess[1].inputs[0].get_partial_shape()]
        if self.fmt == "litert":
            sig = sess.get_input_details()[0]["shape_signature"]
            return [None if s < 0 else int(s) for s in sig]
        if self.fmt == "tf_saved_model":
            spec = sess.serve.concrete_functions[0].structured_input_signature[0][0]
            return list(spec.shape.as_list())
        import torch

        ep = torch.export.load(str(self.path))
        ph = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name not in ep.graph_signature.inputs_to_parameters
              and n.name not in ep.graph_signature.inputs_to_buffers and n.name not in ep.graph_signature.inputs_to_lifted_tensor_constants]
        val = ph[-1].meta.get("val")
        return [d if isinstance(d, int) else str(d) for d in val.shape] if val is not None else []

    # ---------------------------------------------------------------- what the graph holds
    def census(self) -> Census:
        return getattr(self, f"_census_{self.fmt}")()

    def _census_tf_saved_model(self):
        graphs = _tf_graph_defs(self.session())
        ops = Counter(n.op for g in graphs for n in g)
        opaque = [o for o in ops if o in ("XlaCallModule",)]
        return Census(dict(ops), None, opaque)

    def _census_onnx(self):
        import onnx

        self.session()
        ops = Counter(n.op_type for n in onnx.load(str(self.path)).graph.node)
        opt = self.path.with_suffix(".ort-optimized.onnx")
        rt = dict(Counter(n.op_type for n in onnx.load(str(opt)).graph.node)) if opt.exists() else None
        return Census(dict(ops), rt)

    def _census_openvino(self):
        _, model, compiled = self.session()
        ops = Counter(o.get_type_name() for o in model.get_ordered_ops())
        rt = Counter()
        for o in compiled.get_runtime_model().get_ordered_ops():
            info = o.get_rt_info()
            rt[f"{info['layerType'].astype(str)}:{info['runtimePrecision'].astype(str)}"] += 1
        return Census(dict(ops), dict(rt))

    def _census_litert(self):
        plain = self._litert(delegates=False)
        plain.allocate_tensors()
        ops = Counter(o["op_name"] for o in plain._get_ops_details())
        default = self._litert(delegates=True)
        default.allocate_tensors()
        rt = Counter(o["op_name"] for o in default._get_ops_details())
        return Census(dict(ops), dict(rt))

    def _census_torch(self):
        import torch

        ep = torch.export.load(str(self.path))
        ops = Counter(str(n.target) for n in ep.graph.nodes if n.op == "call_function")
        return Census({k: v for k, v in ops.items() if "_assert_tensor_metadata" not in k})

    def constants(self) -> list[tuple[str, np.ndarray]]:
        """Every float constant the exported graph holds (weights, folded weights, scalars such as epsilon,
        float attributes), as (name, float64 array); int8 weights of a quantised model dequantised."""
        out = []
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for n, a in getattr(self, f"_constants_{self.fmt}")():
                a = np.asarray(a)
                if a.dtype.kind == "f" and a.size and np.all(np.isfinite(a)):  # a runtime's scratch buffers may hold NaN
                    out.append((n, a.astype(np.float64)))
        return out

    def _constants_tf_saved_model(self):
        from tensorflow.python.framework import tensor_util

        loaded = self.session()
        out = [(v.name, v.numpy()) for v in loaded.variables]
        for g in _tf_graph_defs(loaded):
            out += [(n.name, tensor_util.MakeNdarray(n.attr["value"].tensor)) for n in g if n.op == "Const"]
            out += [(f"{n.name}/{k}", np.float32(a.f)) for n in g for k, a in n.attr.items() if a.WhichOneof("value") == "f"]
            for n in g:
                if n.op == "XlaCallModule":
                    out += _stablehlo_constants(n.attr["module"].s)
        return out

    def _constants_onnx(self):
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(self.path)).graph
        out = [(t.name, numpy_helper.to_array(t)) for t in graph.initializer]
        for n in graph.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    out.append((f"{n.name}/{a.name}", numpy_helper.to_array(a.t)))
                elif a.type == onnx.AttributeProto.FLOAT:
                    out.append((f"{n.name}/{a.name}", np.float32(a.f)))
        return out

    def _constants_openvino(self):
        _, model, _ = self.session()
        return [(o.get_friendly_name(), np.array(o.get_data())) for o in model.get_ordered_ops()
                if o.get_type_name() == "Constant"]

    def _constants_litert(self):
        it = self._litert(delegates=False)
        it.allocate_tensors()
        out = []
        for d in it.get_tensor_details():
            try:
                a = np.array(it.get_tensor(d["index"]))
            except ValueError:
                continue
            q = d.get("quantization_parameters") or {}
            if a.dtype.kind == "i" and a.dtype.itemsize == 1 and len(q.get("scales", ())):
                shape = [1] * a.ndim
                if a.ndim:
                    shape[q.get("quantized_dimension", 0)] = -1
                scales = np.reshape(q["scales"], shape if len(q["scales"]) > 1 else [])
                zps = np.reshape(q["zero_points"], shape if len(q["zero_points"]) > 1 else [])
                a = (a.astype(np.float64) - zps) * scales
            out.append((d["name"], a))
        return out

    def _constants_torch(self):
        import torch

        ep = torch.export.load(str(self.path))
        items = list(ep.state_dict.items()) + list(ep.constants.items())
        out = [(k, v.detach().cpu().numpy()) for k, v in items if isinstance(v, torch.Tensor)]
        # python floats in the graph (epsilon is aten.add(var, 0.001)): float32, as the op computes in float32
        out += [(f"{n.name}/arg{i}", np.float32(a)) for n in ep.graph.nodes if n.op == "call_function"
                for i, a in enumerate(n.args) if isinstance(a, float)]
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The mutable state the runtime holds between calls (a SavedModel's variables, a torch module's
        buffers and parameters); empty for formats whose constants are immutable (ONNX, OpenVINO, LiteRT
        without resource variables)."""
        sess = self.session()
        if self.fmt == "tf_saved_model":
            return {v.name: np.array(v.numpy()) for v in sess.variables}
        if self.fmt == "torch":
            return {k: v.detach().cpu().numpy().copy() for k, v in sess.state_dict().items()}
        return {}


def _tf_graph_defs(loaded) -> list:
    """The node lists of the serve endpoint's graph and of every function in its library."""
    fn = loaded.signatures.get("serving_default") if hasattr(loaded, "signatures") else None
    fn = fn or loaded.serve.concrete_functions[0]
    gd = fn.graph.as_graph_def()
    return [list(gd.node)] + [list(f.node_def) for f in gd.library.function]


def _stablehlo_constants(module: bytes) -> list:
    """The float32 scalar constants written in a jax2tf XlaCallModule's StableHLO (epsilon lives there), read
    with jax's own deserializer; none when jax is not installed or the module is not a portable artifact."""
    try:
        from jax._src.interpreters import mlir as jmlir
        from jax._src.lib import _jax

        with jmlir.make_ir_context():
            text = jmlir.module_to_string(_jax.mlir.deserialize_portable_artifact(module))
    except Exception:  # noqa: BLE001 - nothing more to read
        return []
    out = []
    for i, m in enumerate(re.finditer(r"stablehlo\.constant dense<([^>]+)>\s*:\s*tensor<f32>", text)):
        v = m.group(1)
        value = np.frombuffer(bytes.fromhex(v[2:])[::-1], np.float32)[0] if v.startswith("0x") else np.float32(float(v))
        out.append((f"stablehlo_const_{i}", np.float32(value)))
    return out


# --------------------------------------------------------------------------- exporting


def export(model, fmt: str, workdir, *, name: str = "model", input_signature=None, runtime_options=None,
           **export_kwargs) -> Artefact:
    """model.export(workdir/name<suffix>, format=fmt) (tf_keras: Model.export for SavedModel, TFLiteConverter
    for litert), timed, then the artefact (its runtime is loaded on first use). `runtime_options`:
    {"precision": "f32"|"bf16"|...} for OpenVINO's INFERENCE_PRECISION_HINT (None: the runtime's default),
    {"delegates": False} for LiteRT without its default delegates. Raises NotApplicable, RuntimeMissing or
    ExportFailed (see the module doc)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    keras_api = hasattr(model, "export") and "format" in inspect.signature(model.export).parameters
    backend = _model_backend(model)
    conv = CONVERTER.get((fmt, backend))
    path = Path(workdir) / f"{name}{SUFFIX[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not keras_api:  # tf_keras: Model.export(filepath) writes a SavedModel; litert through the TFLite converter
        if fmt == "tf_saved_model":
            _call(lambda: model.export(str(path)), "tensorflow")
        elif fmt == "litert":
            import tensorflow as tf

            def convert():
                converter = tf.lite.TFLiteConverter.from_keras_model(model)
                for k, v in export_kwargs.items():  # as Keras 3's LiteRTExporter applies them
                    if k == "target_spec":
                        for a, b in v.items():
                            setattr(converter.target_spec, a, b)
                    else:
                        setattr(converter, k, v)
                path.write_bytes(converter.convert())

            _call(convert, "tensorflow")
        else:
            raise NotApplicable(f"tf_keras' Model.export has no format argument (signature: export{inspect.signature(model.export)}): "
                                "it writes a TensorFlow SavedModel only")
        conv = ("tensorflow", "tensorflow")
    else:
        kwargs = dict(export_kwargs)
        if fmt == "openvino":
            _openvino_telemetry_off()
        if input_signature is not None:
            kwargs["input_signature"] = input_signature
        if "verbose" in inspect.signature(model.export).parameters:  # Keras >= 3.6
            kwargs["verbose"] = False
        _call(lambda: model.export(str(path), format=fmt, **kwargs), conv[1] if conv else "")
        if fmt != "tf_saved_model" and (path / "saved_model.pb").is_file():
            # Keras 3.0-3.7's Model.export takes `format` and ignores it: a SavedModel, whatever was asked
            raise NotApplicable(f"this Keras' Model.export ignores format={fmt!r}: it wrote a TF SavedModel "
                                f"({path.name}/saved_model.pb); formats other than tf_saved_model are honoured from "
                                "Keras 3.8")
    seconds = time.perf_counter() - t0
    _need(*RUNTIME[fmt], f"serving format={fmt}")  # after the export: Keras' own refusal comes first
    conv = conv or ("keras", "keras")
    return Artefact(fmt, backend, path, seconds, conv[1], version(conv[1]), dict(runtime_options or {}))


def _openvino_telemetry_off() -> None:
    """OpenVINO's converter sends usage telemetry from a forked process unless the user opted out (its consent
    file, or CI=true). A fork in a process that runs JAX's threads deadlocks (observed: the JAX run hung in
    openvino_telemetry's backend_ga4.send), and a measurement has no business on the network: the converter gets
    OpenVINO's own telemetry stub, in this process only."""
    try:
        from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils
    except ImportError:
        return
    convert_impl.tm = telemetry_utils.tm = telemetry_stub


def _model_backend(model) -> str:
    mod = type(model).__module__ or ""
    if mod.startswith("tf_keras") or not hasattr(model, "export") or "format" not in inspect.signature(model.export).parameters:
        return "tensorflow"
    import keras

    return keras.backend.backend()


def _call(fn, converter: str) -> None:
    import contextlib
    import io

    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            fn()
    except (ValueError, NotImplementedError) as exc:
        if _REFUSAL.search(str(exc)):
            raise NotApplicable(str(exc).strip()) from None
        raise ExportFailed("export", exc) from exc
    except ImportError as exc:
        raise RuntimeMissing(f"{exc} ({converter or 'a converter'} is not installed); install bnspec's deploy extra: "
                             "pip install -e '.[deploy]'") from None
    except Exception as exc:  # noqa: BLE001 - an export Keras supports that raises is a finding
        raise ExportFailed("export", exc) from exc


@dataclass
class ExportResult:
    """What `export_and_run` measured: the artefact's outputs on x, its census, the runtime and its version,
    and the seconds spent exporting and running."""

    fmt: str
    outputs: np.ndarray
    census: Census
    runtime: str
    runtime_version: str | None
    converter: str
    converter_version: str | None
    export_seconds: float
    run_seconds: float
    path: Path
    artefact: Artefact


def export_and_run(model, fmt: str, x, workdir, **kwargs) -> ExportResult:
    """Export `model` as `fmt` under `workdir`, serve x in the format's runtime (in chunks of the batch the
    artefact fixed at export, if it fixed one), and take its census. kwargs go to `export` (name,
    input_signature, runtime_options, Keras' own export options). Raises NotApplicable (Keras refuses the pair:
    `reason` is its message), RuntimeMissing, ExportFailed."""
    art = export(model, fmt, workdir, **kwargs)
    t0 = time.perf_counter()
    y = art.serve(np.asarray(x, np.float32))
    seconds = time.perf_counter() - t0
    return ExportResult(fmt, y, art.census(), art.runtime, art.runtime_version, art.converter, art.converter_version,
                        art.export_seconds, seconds, art.path, art)


# --------------------------------------------------------------------------- the float32 bound of an exported network
#
# Keras evaluates a Dense/Conv2D layer followed by inference-mode BN as two steps: z = x.W + b (a dot product of
# length k), then y = z*inv + (beta - mean*inv) with inv = gamma/sqrt(var+eps) (bnspec.reference.bn_bound).
# An exported graph may keep that, precompute the per-channel scale a = gamma/sqrt(var+eps) and shift
# c = beta - a*mean (constant folding), or fold both into the layer: W' = W*a, b' = b*a + c (BN "folded").
# Folding changes the rounding, not the function. With u = 2^-24 and the rounding model of
# bnspec.reference.mlp_inference (errors independent, zero-mean, <= u relative; a dot product of length k has
# error sd <= sqrt(k)*u*sum|w_i x_i|; incoming errors propagate as sqrt((W^2)^T sigma^2); the result is
# LAMBDA = 6 standard deviations), the folded evaluation of one output element adds to Keras' own terms:
#   (1) the folded weights: a carries R_A = 4 roundings (the add of eps, the sqrt and division, or an rsqrt of
#       at most 2 ulp, the product with gamma), W*a one more, so |W' - W*a| <= (R_A+1)*u*|W*a| and the dot
#       product moves by at most (R_A+1)*u*|a|*sum|x_i||W_i|: a systematic term, entered here as if it were a
#       standard deviation (so LAMBDA covers it 6 times over);
#   (2) the folded bias: b*a (R_A+1 roundings on |b*a|), a*mean (R_A+1 on |a*mean|), beta - a*mean and the
#       sum (one each): u*((R_A+1)|b*a| + (R_A+2)|a*mean| + |beta|);
#   (3) the dot product itself over W' (sqrt(k)*u*|a|*sum|x_i||W_i|), the same as Keras' term times |a|.
# A graph that keeps BN as separate arithmetic (or as one fused op) has at most Keras' terms (bn_bound) plus
# (1)-(2) when it precomputes a and c; so the bound below for "the exported graph" is the sum of Keras' terms
# and the folding terms, whichever evaluation the converter and the runtime chose (the census says which).
# Two float32 evaluations of the same function then differ by at most keras_bound + export_bound.
# Other steps: tanh/sigmoid are 1-Lipschitz and add u*|y|; ReLU is 1-Lipschitz and exact; a global average
# over P positions has an error sd of at most the mean of the incoming sds plus its own sum's
# sqrt(P)*u*mean|h| and the division's u*|mean|. A reduced-precision runtime is the same analysis with its
# unit roundoff (bfloat16 2^-8, float16 2^-11) and, for weights stored in it, one more relative rounding.


@dataclass
class Step:
    """One layer of a network's inference function: dense | conv | bn | act | gap | flatten."""

    kind: str
    p: dict


def _arr(v) -> np.ndarray | None:
    if v is None:
        return None
    from bnspec.measure.backend import to_numpy

    return to_numpy(v, np.float64)


def plan_of(model) -> list[Step]:
    """The model's layers (a chain: Sequential, a linear Functional, or a subclass whose layers are tracked in
    call order), or a list of layers, as numpy Steps for `network_bound`. Conv2D: stride 1, no dilation."""
    steps = []
    for layer in (model if isinstance(model, (list, tuple)) else model.layers):
        kind = type(layer).__name__
        act = getattr(layer, "activation", None)
        act = getattr(act, "__name__", None)
        if kind == "InputLayer":
            continue
        if kind == "Dense":
            steps.append(Step("dense", {"W": _arr(layer.kernel), "b": _arr(layer.bias) if layer.use_bias else None}))
        elif kind == "Conv2D":
            if tuple(layer.strides) != (1, 1) or tuple(layer.dilation_rate) != (1, 1):
                raise ValueError(f"plan_of: {layer.name}: only stride 1 and no dilation")
            steps.append(Step("conv", {"W": _arr(layer.kernel), "b": _arr(layer.bias) if layer.use_bias else None,
                                       "padding": layer.padding, "cf": layer.data_format == "channels_first"}))
        elif "BatchNorm" in kind:
            n = int(layer.moving_mean.shape[0])
            steps.append(Step("bn", {"gamma": _arr(layer.gamma) if layer.gamma is not None else np.ones(n),
                                     "beta": _arr(layer.beta) if layer.beta is not None else np.zeros(n),
                                     "mean": _arr(layer.moving_mean), "var": _arr(layer.moving_variance),
                                     "eps": float(layer.epsilon), "axis": layer.axis if isinstance(layer.axis, int) else layer.axis[0]}))
            continue
        elif kind in ("Activation", "ReLU"):
            steps.append(Step("act", {"fn": "relu" if kind == "ReLU" else act}))
            continue
        elif kind == "GlobalAveragePooling2D":
            steps.append(Step("gap", {"cf": layer.data_format == "channels_first"}))
            continue
        elif kind == "Flatten":
            steps.append(Step("flatten", {}))
            continue
        else:
            raise ValueError(f"plan_of: no float64 reference for layer {layer.name} ({kind})")
        if act not in (None, "linear"):
            steps.append(Step("act", {"fn": act}))
    return steps


def bn_state(step: Step) -> dict:
    return {k: step.p[k] for k in ("gamma", "beta", "mean", "var", "eps")}


def _scale_shift(p: dict):
    a = p["gamma"] / np.sqrt(p["var"] + p["eps"])
    return a, p["beta"] - a * p["mean"]


def _linear(h, s2, step: Step):
    """(z, |.|-weighted sum A, propagated incoming error variance, k) of a dense or conv step (channels last)."""
    W, b = step.p["W"], step.p["b"]
    if step.kind == "dense":
        z, A, prop, k = h @ W, np.abs(h) @ np.abs(W), s2 @ W**2, W.shape[0]
    else:
        kh, kw, cin, cout = W.shape
        if step.p["padding"] == "same":
            pad = ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0))
            h, s2 = np.pad(h, pad), np.pad(s2, pad)
        win = lambda t: np.lib.stride_tricks.sliding_window_view(t, (kh, kw), axis=(1, 2))  # n,i,j,c,u,v  # noqa: E731
        Wm = W.transpose(2, 0, 1, 3)  # c,u,v,o
        z = np.einsum("nijcuv,cuvo->nijo", win(h), Wm)
        A = np.einsum("nijcuv,cuvo->nijo", win(np.abs(h)), np.abs(Wm))
        prop = np.einsum("nijcuv,cuvo->nijo", win(s2), Wm**2)
        k = kh * kw * cin
    if b is not None:
        z = z + b
    return z, A, prop, k


def network_bound(x, plan: list[Step], *, u_keras: float = U32, u_export: float = U32, weight_rel: float = 0.0,
                  weight_rel_keras: float = 0.0, input_rel_keras: float = 0.0, input_rel_export: float = 0.0,
                  channels_first: bool | None = None):
    """(ref, keras_bound, export_bound): the network's exact output in float64 for x, and elementwise bounds on
    |Keras' output - ref| and |the exported graph's output - ref| (see the derivation above). `u_*` are the
    unit roundoffs the two evaluate in, `weight_rel[_keras]` a relative rounding of every weight of the export
    [of Keras] (weights stored or cast to a 16-bit type), `input_rel_*` a relative rounding of the input (cast to
    a 16-bit type). A BN step with "n_reduce" (batch statistics given as its mean/var) adds the reduction
    error of statistics over n_reduce values (bnspec.reference.bn_bound). Channels-first inputs (default: when
    a step says so) are computed channels last; a BN's axis is then the last."""
    h = np.asarray(x, np.float64)
    if channels_first if channels_first is not None else any(s.p.get("cf") for s in plan):
        h = np.moveaxis(h, 1, -1)
    s2k, s2e = (input_rel_keras * np.abs(h)) ** 2, (input_rel_export * np.abs(h)) ** 2
    rk, re_ = u_keras / U32, u_export / U32  # bn_bound is written for float32: scale it to another unit roundoff
    i = 0
    while i < len(plan):
        step = plan[i]
        nxt = plan[i + 1] if i + 1 < len(plan) else None
        if step.kind in ("dense", "conv"):
            z, A, prop, k = _linear(h, s2k, step)
            _, _, prop_e, _ = _linear(h, s2e, step)
            absb = np.abs(step.p["b"]) if step.p["b"] is not None else 0.0
            s2k = prop + (np.sqrt(k) * u_keras * (A + absb)) ** 2 + (weight_rel_keras * (A + absb)) ** 2
            if nxt is not None and nxt.kind == "bn":  # BN after a linear layer: kept or folded
                p = nxt.p
                a, c = _scale_shift(p)
                y = reference.bn_inference(z, p["gamma"], p["beta"], p["mean"], p["var"], p["eps"])
                bnb = reference.bn_bound(z, p["gamma"], p["beta"], p["mean"], p["var"], p["eps"], n_reduce=p.get("n_reduce", 0))
                s2k = s2k * a**2 + (rk * bnb) ** 2
                bias = np.abs(step.p["b"] * a) if step.p["b"] is not None else 0.0
                fold_w = (R_A + 1) * u_export * A * np.abs(a)
                fold_b = u_export * ((R_A + 1) * bias + (R_A + 2) * np.abs(a * p["mean"]) + np.abs(p["beta"]))
                own = np.sqrt(k) * u_export * (A * np.abs(a) + np.abs(step.p["b"] * a + c if step.p["b"] is not None else c))
                wq = weight_rel * (A * np.abs(a) + bias + np.abs(c))
                s2e = prop_e * a**2 + own**2 + fold_w**2 + fold_b**2 + wq**2 + (re_ * bnb) ** 2
                h = y
                i += 2
                continue
            s2e = prop_e + (np.sqrt(k) * u_export * (A + absb)) ** 2 + (weight_rel * (A + absb)) ** 2
            h = z
        elif step.kind == "bn":
            p = step.p
            a, c = _scale_shift(p)
            y = reference.bn_inference(h, p["gamma"], p["beta"], p["mean"], p["var"], p["eps"])
            bnb = reference.bn_bound(h, p["gamma"], p["beta"], p["mean"], p["var"], p["eps"], n_reduce=p.get("n_reduce", 0))
            affine = u_export * (R_A * np.abs(a * h) + (R_A + 2) * np.abs(a * p["mean"]) + np.abs(p["beta"]))
            s2k = s2k * a**2 + (rk * bnb) ** 2
            s2e = s2e * a**2 + (re_ * bnb) ** 2 + affine**2 + (weight_rel * (np.abs(a * h) + np.abs(c))) ** 2
            h = y
        elif step.kind == "act":
            fn = step.p["fn"]
            if fn == "relu":
                h = np.maximum(h, 0.0)
            else:
                h = np.tanh(h) if fn == "tanh" else 1.0 / (1.0 + np.exp(-h)) if fn == "sigmoid" else None
                if h is None:
                    raise ValueError(f"network_bound: no reference for activation {fn!r}")
                s2k, s2e = s2k + (u_keras * np.abs(h)) ** 2, s2e + (u_export * np.abs(h)) ** 2
        elif step.kind == "gap":
            P = h.shape[1] * h.shape[2]
            m = h.mean(axis=(1, 2))
            own = lambda u: np.sqrt(P) * u * np.abs(h).mean(axis=(1, 2)) + u * np.abs(m)  # noqa: E731
            s2k = (np.sqrt(s2k).mean(axis=(1, 2)) + own(u_keras)) ** 2
            s2e = (np.sqrt(s2e).mean(axis=(1, 2)) + own(u_export)) ** 2
            h = m
        elif step.kind == "flatten":
            h, s2k, s2e = (t.reshape(t.shape[0], -1) for t in (h, s2k, s2e))
        i += 1
    return h, LAMBDA * np.sqrt(s2k), LAMBDA * np.sqrt(s2e)


# --------------------------------------------------------------------------- how a BN layer's numbers reach the graph


@dataclass
class Carry:
    """Where a BN layer's numbers are in an exported graph. `facts`: name -> {"const", "ratio"} for each
    number found (ratio: the worst |constant - expected| / its bound; 0 for a bitwise match); `form`: the
    first complete description found ("kept", "kept, var+eps precomputed", "kept, rsqrt precomputed",
    "scale precomputed", "scale/shift", "scale, bias folded" (b*a + c), "folded into the kernel"), None when none is complete;
    `eps_alternative`: for a form where epsilon is implicit, the ratio of the same number computed without
    epsilon (> 1: the graph can be told from one that dropped epsilon)."""

    form: str | None
    facts: dict
    eps_alternative: float | None = None

    @property
    def ok(self) -> bool:
        return self.form is not None


FORMS = (("kept", ("mean", "var", "gamma", "beta", "eps")), ("kept, var+eps precomputed", ("mean", "var_eps", "gamma", "beta")),
         ("kept, rsqrt precomputed", ("mean", "inv", "gamma", "beta")), ("scale precomputed", ("mean", "scale", "beta")),
         ("scale/shift", ("scale", "shift")), ("scale, bias folded", ("scale", "bias")),
         ("folded into the kernel", ("kernel", "bias")))


def kernel_found(constants, kernel, scale=None, u: float = U32) -> str | None:
    """The name of a constant holding `kernel` (Keras layout) in any axis order: bitwise, or folded with a BN
    scale `scale` (W*a, within (R_A+1)u) when given; None when the graph holds neither."""
    W = np.asarray(kernel, np.float64)
    targets = [(W, np.zeros_like(W))] + ([(W * scale, (R_A + 1) * u * np.abs(W * scale))] if scale is not None else [])
    for nm, arr in constants:
        if arr.size != W.size or arr.ndim != W.ndim:
            continue
        for perm in itertools.permutations(range(arr.ndim)):
            t = arr.transpose(perm)
            if t.shape == W.shape and any(np.all(np.abs(t - w) <= b) for w, b in targets):
                return nm
    return None


def carried(constants, state: dict, kernel=None, bias=None, u: float = U32) -> Carry:
    """How the BN layer with `state` (gamma, beta, mean, var: the layer's float32 values; eps) reaches the
    graph whose float `constants` are given ([(name, array)], Artefact.constants()), given the kernel (Keras
    layout, output channels last) and bias of the layer before it, if any. Statistics kept as they are must
    match bitwise; numbers the converter computed (var+eps, 1/sqrt(var+eps), a, c, W*a, b*a + c) within the
    roundings derived above network_bound."""
    f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731
    mean, var, gamma, beta = (np.asarray(state[k], np.float64) for k in ("mean", "var", "gamma", "beta"))
    eps = float(state["eps"])
    n = mean.size
    vecs = [(nm, a.ravel()) for nm, a in constants if a.size == n]
    facts: dict = {}

    def exact(name, target):
        for nm, v in vecs:
            if np.array_equal(f32(v), f32(target)):
                facts[name] = {"const": nm, "ratio": 0.0}
                return

    def near(name, target, bound, pool=None, alt=None):
        best = None
        for nm, v in (pool if pool is not None else vecs):
            with np.errstate(divide="ignore", invalid="ignore"):
                r = float(np.max(np.where(bound > 0, np.abs(v - target) / np.where(bound > 0, bound, 1), np.where(v == target, 0, np.inf))))
            if best is None or r < best[1]:
                best = (nm, r, v)
        if best is not None and best[1] <= 1.0:
            facts[name] = {"const": best[0], "ratio": best[1]}
            if alt is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    facts[name]["eps_alternative"] = float(np.max(np.abs(best[2] - alt) / np.where(bound > 0, bound, np.inf)))

    for name, target in (("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)):
        exact(name, target)
    if any(a.size == 1 and np.float32(a.ravel()[0]) == np.float32(eps) for _, a in constants):
        facts["eps"] = {"const": next(nm for nm, a in constants if a.size == 1 and np.float32(a.ravel()[0]) == np.float32(eps)), "ratio": 0.0}
    a = gamma / np.sqrt(var + eps)
    a0 = gamma / np.sqrt(var)
    c = beta - a * mean
    near("var_eps", var + eps, u * np.abs(var + eps), alt=var)
    near("inv", 1 / np.sqrt(var + eps), (R_A - 1) * u / np.sqrt(var + eps), alt=1 / np.sqrt(var))
    near("scale", a, R_A * u * np.abs(a), alt=a0)
    shift_bound = u * ((R_A + 2) * np.abs(a * mean) + np.abs(beta) + np.abs(c))
    near("shift", c, shift_bound, alt=beta - a0 * mean)
    if kernel is not None:
        W = np.asarray(kernel, np.float64)
        target, alt = W * a, W * a0
        pool = []
        for nm, arr in constants:
            if arr.size != W.size or arr.ndim != W.ndim:
                continue
            for perm in itertools.permutations(range(arr.ndim)):
                if arr.transpose(perm).shape == W.shape:
                    pool.append((f"{nm} (axes {perm})", arr.transpose(perm)))
        near("kernel", target, (R_A + 1) * u * np.abs(target), pool=pool, alt=alt)
        b = np.zeros(n) if bias is None else np.asarray(bias, np.float64)
        tb = b * a + c
        near("bias", tb, u * ((R_A + 1) * np.abs(b * a) + (R_A + 2) * np.abs(a * mean) + np.abs(beta) + np.abs(tb)),
             alt=b * a0 + beta - a0 * mean)
    form = next((name for name, need in FORMS if all(k in facts for k in need)), None)
    eps_alt = None
    if form is not None:
        alts = [facts[k]["eps_alternative"] for k in dict(FORMS)[form] if "eps_alternative" in facts.get(k, {})]
        eps_alt = min(alts) if alts else None
    return Carry(form, facts, eps_alt)


def training_plan(x, plan: list[Step], which=None) -> list[Step]:
    """`plan` with its BN steps (the indices in `which`, default all) normalising with the batch statistics of
    their float64 inputs on x (training mode; biased variance), each with the reduction's n_reduce."""
    out = list(plan)
    cf = any(s.p.get("cf") for s in plan)
    for i, step in enumerate(plan):
        if step.kind == "bn" and (which is None or i in which):
            h, _, _ = network_bound(x, out[:i], channels_first=cf)
            mean, var = reference.batch_stats(h, -1)
            out[i] = Step("bn", {**step.p, "mean": mean, "var": var, "n_reduce": h.size // h.shape[-1]})
    return out
