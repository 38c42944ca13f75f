"""One BN object normalising several positions: a BN layer (or a model holding BN) called at several
places of a graph (N08), and a BN layer inside `TimeDistributed`, which calls it once per time step (C29).
No Keras."""

from __future__ import annotations

from bnspec.audit.checks.gates import is_keras3
from bnspec.audit.findings import Finding, Target, make
from bnspec.audit.tree import Layer, bns_in

# The claim behind the TimeDistributed(BatchNormalization) finding (bnspec/claims/field_training.py: refuted on
# Keras 3, holds on tf_keras); were it ever missing from the catalogue, findings.lookup says so and the finding stands.
TIME_DISTRIBUTED_CLAIM = "C29"
TIME_DISTRIBUTED_SOURCES = "keras-team/keras#7466, keras-team/keras#16239, tensorflow/tensorflow#30109"


def check_shared_bn(root: Layer, target: Target, resolver=None) -> list[Finding]:
    """One BN object called at several positions, directly or inside a model called several times (N08)."""
    out = []
    for layer in root.walk():
        if layer.parent is None or layer.parent.kind != "functional" or len(layer.calls) < 2:
            continue
        if layer.is_bn:
            bns = [layer]
        elif layer.holds_layers:
            bns = bns_in(layer)
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


def time_steps(wrapper: Layer) -> int | None:
    """T, the wrapper's axis 1, from its build shape (None when the config does not say)."""
    shape = wrapper.build_shape
    if isinstance(shape, (list, tuple)) and len(shape) >= 3 and isinstance(shape[1], int):
        return shape[1]
    return None


def check_time_distributed_bn(root: Layer, target: Target, resolver=None) -> list[Finding]:
    """`TimeDistributed` around a BN layer (or a model holding BN): BN applied per time step (C29)."""
    out = []
    for wrapper in root.walk():
        if wrapper.kind != "wrapper" or wrapper.class_name != "TimeDistributed":
            continue
        bns = bns_in(wrapper)
        if not bns:
            continue
        steps = time_steps(wrapper)
        momenta = sorted({b.config.get("momentum") for b in bns if isinstance(b.config.get("momentum"), (int, float))})
        evidence = {"wrapper": "TimeDistributed", "bn": [b.path for b in bns][:8], "time_steps": steps}
        if is_keras3(target):
            mechanism = ("Keras 3 calls the inner BN once per time step: in training each step is normalised with "
                         "its own batch statistics (over the batch, not batch x time), every training step applies "
                         "T successive EMA updates to the moving statistics, and inference normalises every step "
                         "with the one shared pair of moving statistics")
            if steps and momenta:
                evidence["ema_updates_per_training_step"] = steps
                evidence["effective_momentum_per_training_step"] = [round(m ** steps, 6) for m in momenta]
        else:
            mechanism = ("tf_keras reshapes its own layer classes, BatchNormalization included, to the merged "
                         "(batch x time) axis and calls them once, so BN normalises over batch and time together "
                         "(measured: C29 holds on tf_keras); only a layer class of the user's own, wrapping BN, is "
                         "called per time step when the batch size is static (tf_keras/layers/rnn/time_distributed.py). "
                         "Moving to Keras 3 changes this: there it is applied per step")
        finding = make(
            TIME_DISTRIBUTED_CLAIM, "time-distributed-bn", "warning" if is_keras3(target) else "info", wrapper.path,
            f"BatchNormalization inside TimeDistributed: BN applied per time step, {len(bns)} BN layer(s)", target,
            evidence=evidence,
            fix=f"{mechanism} ({TIME_DISTRIBUTED_SOURCES}). Recomputing the moving statistics (PreciseBN) cannot "
            "repair that: they are one average over all steps. To normalise over batch and time together, apply "
            "BatchNormalization() to the (batch, time, ...) tensor directly (it reduces over every axis but the "
            "feature axis, batch and time included), or reshape to (batch*time, ...), apply BN, and reshape back; "
            "for statistics per time step, give each step its own BN layer")
        finding.affects = [b.path for b in bns]
        out.append(finding)
    return out
