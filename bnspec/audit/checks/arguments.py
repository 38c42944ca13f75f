"""BN's constructor arguments read from the config: Keras-2-only arguments (C12), a 16-bit dtype policy
(C06), momentum in PyTorch's convention (X01), epsilon below the fused kernel's old clamp (C09). No Keras."""

from __future__ import annotations

from bnspec.audit.checks.gates import before, gate, is_keras3
from bnspec.audit.findings import Finding, Target, make
from bnspec.audit.tree import Layer, dtype_name, single_axis

KERAS2_ONLY = ("fused", "virtual_batch_size", "adjustment")
TFKERAS_MIN_EPSILON = 1.001e-5  # tf.nn.fused_batch_norm: "min_epsilon = 1.001e-5" (cuDNN requirement), C09
SIXTEEN_BIT = ("float16", "bfloat16")


def check_keras2_args(root: Layer, target: Target, resolver=None) -> list[Finding]:
    """Keras-2-only BN arguments in the config (C12)."""
    out = []
    keras3 = is_keras3(target)
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
        if cfg.get("renorm") and keras3 and before(target, (3, 14)):
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


def check_dtype(root: Layer, target: Target, resolver=None) -> list[Finding]:
    """BN under a pure 16-bit dtype policy: 16-bit moving statistics (C06)."""
    out = []
    for layer in root.walk():
        if not layer.is_bn:
            continue
        policy = dtype_name(layer.config.get("dtype"))
        if policy not in SIXTEEN_BIT:
            continue
        live, verdict = gate("C06", target, [{"dtype": policy}], "refuted", is_keras3(target))
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


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_hyperparameters(root: Layer, target: Target, resolver=None) -> list[Finding]:
    """momentum in PyTorch's convention (X01); epsilon below the fused kernel's old 1.001e-5 clamp (C09)."""
    out = []
    for layer in root.walk():
        if not layer.is_bn:
            continue
        momentum, eps = layer.config.get("momentum"), layer.config.get("epsilon")
        # Keras' momentum is the weight of the OLD value. Below 0.5 the newest batch outweighs the whole
        # history, i.e. the "moving average" is mostly the last batch: that is PyTorch's convention
        # (momentum = weight of the NEW batch, default 0.1) copied without converting (X01).
        if _number(momentum) and momentum < 0.5:
            out.append(make(
                "X01", "torch-momentum", "warning", layer.path,
                f"momentum={momentum}: PyTorch's convention copied verbatim?", target,
                evidence={"momentum": momentum, "keras_equivalent_of_torch": round(1 - momentum, 6)},
                fix=f"Keras keeps momentum*old + (1-momentum)*batch; PyTorch's momentum={momentum} is Keras' "
                f"momentum={round(1 - momentum, 6)}"))
        if _number(eps) and eps < TFKERAS_MIN_EPSILON:
            rank = layer.rank()
            axis = single_axis(layer.config.get("axis", -1))
            fused_shape = rank in (4, 5) and isinstance(axis, int) and axis in (1, -1, rank - 1)
            layout = "nhwc" if fused_shape and axis != 1 else ("nchw" if fused_shape else
                                                               ("dense" if rank is not None else "unknown"))
            live, verdict = gate("C09", target, [{"layout": layout}], "refuted",
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
