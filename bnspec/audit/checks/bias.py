"""A bias in front of a training-mode BN, which removes it again (C18). No Keras."""

from __future__ import annotations

from bnspec.audit.findings import Finding, Target, make
from bnspec.audit.tree import Layer, feeds_only, single_axis

# Layers whose output is x @ W (+ b) per output channel: a bias there is removed again by a
# training-mode BN's mean subtraction (C18).
AFFINE_CLASSES = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                            "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
                            "SeparableConv2D", "Convolution1D", "Convolution2D", "Convolution3D"})


def check_bias_before_bn(root: Layer, target: Target, resolver=None) -> list[Finding]:
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
            consumers = feeds_only(container, layer)
            if len(consumers) != 1 or not consumers[0].is_bn or len(consumers[0].calls) != 1:
                continue
            bn = consumers[0]
            if not bn.effectively_trainable():
                continue  # frozen BN: moving mean fixed, the bias does shift the output
            rank = bn.rank() or layer.rank()
            axis = single_axis(bn.config.get("axis", -1))
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
