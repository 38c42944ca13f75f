"""The float32 error bound of a model's inference output, propagated through its graph layer by layer: how far
an exported model's output may lie from Keras' `model(x, training=False)` by rounding alone. numpy only: the
layers come in as `Op`s (weights as arrays) with the float32 inputs and outputs Keras computed for them
(bnspec.audit.graph captures both), so the bound holds for any architecture built of the layers below.

The rounding model is the project's (bnspec.reference.mlp_inference, bnspec.subjects.export.network_bound):
u = 2^-24; rounding errors independent, zero-mean, at most u relative; each tensor carries, per element, the
standard deviation sigma of its accumulated error against the exact (real-number) evaluation, once for Keras'
float32 evaluation (sk) and once for the exported graph's (se); the drift bound of a tensor is
LAMBDA * (sk + se) (LAMBDA = 6 standard deviations, each side's own bound; two evaluations of one function
differ by at most the sum). Magnitudes |x| are read from Keras' float32 activations (network_bound reads
them from its float64 forward pass: the two differ in the second order only, u times the error itself).
The per-layer rules (and their derivation) are bnspec.audit.rules.

Every Op's float64 model is checked against Keras' own float32 output on the same float32 inputs, within that
layer's own rounding (LAMBDA * sigma_own; exact ops bitwise): a layer whose semantics the model gets wrong
(padding, a mode) is reported and the bound withheld. A layer without a model (`kind="unknown"`) withholds it
too: no verdict, never an invented tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnspec.audit.rules import Op, evaluate
from bnspec.reference import LAMBDA

__all__ = ["Op", "GraphBound", "propagate", "merge", "bn_targets", "self_check", "foldable"]


@dataclass
class GraphBound:
    """sk/se: tensor id -> sigma (only the kept tensors: BN outputs and graph outputs); `bn`: (path, tensor id)
    of every BN layer in graph order; `unknown`: (path, class, why) of layers without a float32 model;
    `mismatched`: (path, class, ratio) of layers whose float64 model does not reproduce Keras' output;
    `folded`: (linear path, BN path) pairs the export may fold; `checked`: layers self-checked."""

    sk: dict = field(default_factory=dict)
    se: dict = field(default_factory=dict)
    bn: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    folded: list = field(default_factory=list)
    checked: int = 0
    worst_self_check: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unknown and not self.mismatched

    def why_not(self) -> str:
        parts = [f"{p} ({c}): {w}" for p, c, w in self.unknown[:3]]
        parts += [f"{p} ({c}): its float64 model differs from Keras' output by {r:.3g} x its own rounding bound"
                  for p, c, r in self.mismatched[:3]]
        more = len(self.unknown) + len(self.mismatched) - len(parts)
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")

    def bound(self, tid: int) -> np.ndarray:
        return LAMBDA * (self.sk[tid] + self.se[tid])


# --------------------------------------------------------------------------- the graph


def self_check(keras_out: np.ndarray, y: np.ndarray, own) -> float:
    """max |Keras' float32 output - the float64 model| / (LAMBDA * own rounding sigma); exact ops (own 0) must
    match bitwise; a shape mismatch or a non-finite model is inf."""
    k = np.asarray(keras_out, np.float64)
    if k.shape != y.shape:
        return float("inf")
    diff = np.abs(k - y)
    if not np.all(np.isfinite(diff)):
        same_nonfinite = np.array_equal(np.isfinite(k), np.isfinite(y)) and np.all((k == y) | np.isfinite(k))
        if not same_nonfinite:
            return float("inf")
        diff = np.where(np.isfinite(diff), diff, 0.0)
    b = LAMBDA * np.broadcast_to(np.asarray(own, np.float64), diff.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(b > 0, diff / np.where(b > 0, b, 1.0), np.where(diff == 0, 0.0, np.inf))
    return float(r.max()) if r.size else 0.0


def foldable(op: Op, nxt: Op, consumers: dict) -> bool:
    """`nxt` is a BN in inference mode on `op`'s channel axis, the only consumer of a Dense/Conv `op` without
    an activation: a converter may fold it into op's weights."""
    if op.kind not in ("dense", "conv", "depthwise") or nxt.kind != "bn" or nxt.p.get("mode") == "batch":
        return False
    if op.p.get("activation") not in (None, "linear") or len(consumers.get(op.output, ())) != 1:
        return False
    return nxt.inputs == [op.output]


def propagate(ops: list[Op], values: dict, inputs: list, keep=(), dead_relu: bool = True) -> GraphBound:
    """The bound through `ops` (in execution order) on the captured float32 `values` (tensor id -> array); the
    model's inputs are exact (sigma 0). Kept: BN outputs and `keep` (the graph outputs); every other sigma is
    dropped once its last consumer ran. A layer without a model, or whose model fails the self-check, stops
    the propagation of everything downstream of it (recorded in `unknown` / `mismatched`). dead_relu=False:
    ReLU passes every sigma on, as network_bound does (for comparing with it)."""
    gb = GraphBound()
    sk, se = {}, {}
    for tid in inputs:
        sk[tid] = se[tid] = np.zeros(np.shape(values[tid]))
    consumers: dict = {}
    for op in ops:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)
    remaining = {t: len(c) for t, c in consumers.items()}
    keep = set(keep)
    folds: dict = {}
    for op in ops:
        if any(t not in sk for t in op.inputs):  # downstream of a layer without a bound
            if op.kind == "unknown":
                gb.unknown.append((op.path, op.cls, op.why))
            continue
        got = None
        if op.kind != "unknown":
            nxt = consumers.get(op.output, [None])[0]
            fold_out = {} if nxt is not None and foldable(op, nxt, consumers) else None
            xs = [np.asarray(values[t], np.float64) for t in op.inputs]
            fold_in = folds.pop(op.inputs[0], None) if op.kind == "bn" else None
            got = evaluate(op, xs, [sk[t] for t in op.inputs], [se[t] for t in op.inputs], fold_in, fold_out,
                           dead_relu)
        if got is None:
            fn = op.p.get("fn") or op.p.get("activation")
            gb.unknown.append((op.path, op.cls, op.why or f"no float32 model for the activation {fn!r}"))
            continue
        if fold_out is not None:
            folds[op.output] = fold_out
            gb.folded.append((op.path, nxt.path))
        ratio = self_check(values[op.output], got.y, got.own)
        gb.checked += 1
        gb.worst_self_check = max(gb.worst_self_check, ratio)
        if ratio > 1.0:
            gb.mismatched.append((op.path, op.cls, ratio))
            continue
        sk[op.output], se[op.output] = got.sk, got.se
        if op.kind == "bn":
            keep.add(op.output)
            gb.bn.append((op.path, op.output))
        for t in op.inputs:
            remaining[t] -= 1
            if remaining[t] == 0 and t not in keep:
                sk.pop(t, None), se.pop(t, None)
    gb.sk = {t: sk[t] for t in keep if t in sk}
    gb.se = {t: se[t] for t in keep if t in se}
    return gb


def bn_targets(ops: list[Op]) -> list[tuple[str, int, int, int | None]]:
    """(BN path, its input's tensor id, its output's, the output id of a ReLU that alone consumes it or None),
    in graph order."""
    consumers: dict = {}
    for op in ops:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)
    out = []
    for op in ops:
        if op.kind == "bn":
            after = consumers.get(op.output, [])
            relu = after[0] if len(after) == 1 and after[0].kind == "act" and after[0].p.get("fn") == "relu" else None
            out.append((op.path, op.inputs[0], op.output, relu.output if relu is not None else None))
    return out


def merge(parts: list[GraphBound]) -> GraphBound:
    """One GraphBound from those of consecutive chunks of examples (sigmas concatenated along the batch)."""
    first = parts[0]
    out = GraphBound(bn=first.bn, folded=first.folded, checked=sum(p.checked for p in parts),
                     worst_self_check=max(p.worst_self_check for p in parts))
    for p in parts:
        out.unknown += [u for u in p.unknown if u not in out.unknown]
        out.mismatched += [m for m in p.mismatched if m[0] not in {x[0] for x in out.mismatched}]
    for t in first.sk:
        if all(t in p.sk for p in parts):
            out.sk[t] = np.concatenate([p.sk[t] for p in parts])
            out.se[t] = np.concatenate([p.se[t] for p in parts])
    return out
