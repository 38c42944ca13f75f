"""Judging the BN statistics the forward passes measured (bnspec.audit.measurements): untrained layers
(M02), near-zero moving variance (C16), moving statistics far from the data: stale (L03) or a
train/inference shift (L04), and the per-time-step evidence for a BN inside TimeDistributed (C29).
No Keras.

Limits, and where they come from:

* Never trained (M02): moving statistics exactly equal to their initializer's constants. Exact: the
  initial values 0 and 1 are representable, and any training step moves them.
* Near-zero moving variance (C16): var <= eps, i.e. eps is at least half of var + eps, so the gain
  gamma/sqrt(var + eps) is within sqrt(2) of its maximum gamma/sqrt(eps): the numerical guard, not the
  data, sets the scale. It is a trap when the data's variance there exceeds the moving variance by
  more than sampling noise (next point): every deviation is then amplified up to gamma/sqrt(eps).
* Far from the data (L03/L04). With n examples from the distribution the moving statistics estimate, the
  batch mean of a feature is within 6*sqrt(var/n) of the moving mean, and log(batch var / moving var)
  within 6*sqrt((kurtosis-1)/n) (6 sigma; counting examples, not pixels, is conservative for convolutional
  features whose pixels are correlated). Float32 rounding of the moving statistics is added: each EMA
  step rounds ~4 times (bnspec.reference.ema_bounds), and errors decay by `momentum` per step, so they stay
  below 4*U32*(|old|+|batch|)/(1-momentum). Only with data: random inputs say nothing about the training
  distribution.
* Stale or shifted. The moving statistics average what the layer saw in training mode, where every
  upstream BN normalised with its batch's statistics (and Dropout was active). The forward passes record
  each layer's inputs twice: in inference mode and in training mode (model(x, training=True), variables
  restored). A feature far from the moving statistics in BOTH, by at least half its inference-mode distance
  in training mode (STALE_SHARE), is stale: recomputing the statistics in training mode (PreciseBN) repairs
  it (L03). A feature far in inference mode that training mode brings back within the limit, or most of the
  way, is a train/inference shift: its statistics are right for training, and the upstream layers hand it
  another distribution at inference; PreciseBN, itself a training-mode pass, would recompute the same
  statistics (L04). The training-mode pass runs at the audit's batch size, not the training batch size, so
  it reproduces training only approximately: hence "most of the way", not "exactly". A shift below a layer
  that is itself stale is that layer's consequence and is attached to its finding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnspec.audit.findings import Finding, Target, make
from bnspec.audit.measurements import BNState, Measurements, Moments
from bnspec.audit.tree import Layer, downstream_of, graph_known
from bnspec.reference import U32

SIGMA = 6.0
# A feature far in inference mode is stale when in training mode it stays far AND keeps at least this share of
# its distance (in units of the limit): below it, switching the upstream layers to training mode explains most
# of the discrepancy. The training-mode pass runs at the audit's batch size, not the training batch size, so
# it reproduces training only approximately. Measured: InceptionV3 (weights=None, 139x139, PreciseBN over 64
# batches of 2) leaves no feature far in training mode (its 4 far layers: inference variance ratio up to 4.58,
# training at most 2.56, within the limit); an 8-layer Dense(32)+BN MLP calibrated over batches of 2 without
# the unbiased factor leaves one feature of 32 in bn5 at 1.15 limits in training mode against 2.33 in
# inference mode (ratio 24.9 -> 4.17), while its 31 others and every other layer are back within the limit.
STALE_SHARE = 0.5
PRECISE_BN = "bnspec.subjects.popstats.recompute(model, batches)"


@dataclass(frozen=True)
class Distance:
    """How far one set of input statistics is from a layer's moving statistics, per feature, in units of
    the module doc's limits: `score` > 1 is beyond sampling noise (far)."""

    examples: int
    ratio: np.ndarray  # (data var + eps) / (moving var + eps)
    shift: np.ndarray  # (data mean - moving mean) / sqrt(moving var + eps)
    mean_score: np.ndarray  # |data mean - moving mean| / its limit
    var_score: np.ndarray  # |log ratio| / its limit
    log_limit: np.ndarray

    @property
    def score(self) -> np.ndarray:
        return np.maximum(self.mean_score, self.var_score)

    @property
    def mean_far(self) -> np.ndarray:
        return self.mean_score > 1.0

    @property
    def var_far(self) -> np.ndarray:
        return self.var_score > 1.0

    @property
    def far(self) -> np.ndarray:
        return self.score > 1.0

    def summary(self, features: np.ndarray) -> dict:
        idx = np.flatnonzero(features)
        if not idx.size:
            return {}
        return {"worst_normalised_shift": float(np.max(np.abs(self.shift[idx]))),
                "variance_ratio_range": [float(self.ratio[idx].min()), float(self.ratio[idx].max())],
                "distance_in_limits_range": [float(self.score[idx].min()), float(self.score[idx].max())]}


def distance(st: BNState, x: Moments) -> Distance | None:
    """The module doc's limits applied to `x` (None when the shapes do not match)."""
    mu, var, eps = st.moving_mean, st.moving_variance, st.epsilon
    if mu is None or var is None or mu.shape != x.mean.shape:
        return None
    n, mean_b, var_b = x.examples, x.mean, x.var
    keep = max(1.0 - st.momentum, 1e-3)
    round_mean = 4 * U32 * (np.abs(mu) + np.abs(mean_b)) / keep
    round_var = 4 * U32 * (np.abs(var) + var_b) / keep
    ratio = (var_b + eps) / (var + eps)  # data variance over what the layer divides by
    log_limit = SIGMA * np.sqrt(np.maximum(x.kurtosis - 1.0, 2.0 / 3.0) / n) + np.log1p(round_var / (var + eps))
    mean_limit = SIGMA * np.sqrt(np.maximum(var, var_b) / n) + round_mean
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.where(mean_limit > 0, np.abs(mean_b - mu) / np.where(mean_limit > 0, mean_limit, 1.0),
                              np.where(mean_b == mu, 0.0, np.inf))
    return Distance(n, ratio, (mean_b - mu) / np.sqrt(var + eps), mean_score, np.abs(np.log(ratio)) / log_limit,
                    log_limit)


# --------------------------------------------------------------------------- M02


def _initial_state(m: Measurements, model_path: str, target: Target) -> tuple[list[Finding], set]:
    """(M02 findings, paths of layers at their initial state: the other checks skip them)."""
    states = m.bn_state
    at_init = {p: st.at_initial_state() for p, st in states.items() if st.at_initial_state() is not None}
    trained_affine = {p: states[p].affine_trained() for p in at_init}
    if at_init and all(at_init.values()) and not any(trained_affine.values()):
        return [make("M02", "untrained", "info", model_path,
                     f"all {len(at_init)} BN layers hold their initial statistics and gamma/beta: an untrained "
                     "model?", target, source="dynamic", evidence={"bn_layers_at_initial_state": len(at_init)},
                     fix="if it was trained, BN never ran in training mode (see M02); the statistics checks "
                     "are skipped for layers at their initial state")], set(at_init)
    out = []
    for path, initial in at_init.items():
        if not initial or not states[path].trainable:
            continue
        why = ("gamma/beta were trained but the moving statistics never updated" if trained_affine[path] else
               "the moving statistics never updated while other BN layers' did")
        out.append(make("M02", "stats-never-updated", "warning", path, why, target, source="dynamic",
                        evidence={"moving_mean": "all initial", "moving_variance": "all initial",
                                  "gamma_or_beta_trained": trained_affine[path]},
                        fix="this layer never ran in training mode: a custom training loop that calls "
                        "model(x) without training=True, training=False hard-coded (tf_keras, Keras >= 3.16), "
                        f"or a branch fit() never runs; recompute the statistics with {PRECISE_BN} "
                        "(frozen weights, training-mode passes) or fix the training loop"))
    return out, {p for p, v in at_init.items() if v}


# --------------------------------------------------------------------------- C16


def _near_zero(path: str, st: BNState, d: Distance, x: Moments, target: Target, data_given: bool) -> list[Finding]:
    var, eps = st.moving_variance, st.epsilon
    near_zero = var <= eps  # eps at least half of var + eps: the gain is within sqrt(2) of gamma/sqrt(eps)
    if not near_zero.any():
        return []
    gamma = st.gamma if st.gamma is not None else np.ones_like(var)
    amplified = near_zero & (d.ratio > np.exp(d.log_limit))
    idx = np.flatnonzero(near_zero)
    ev = {"features_with_var_le_eps": int(near_zero.sum()), "of": int(var.size), "epsilon": eps,
          "max_gain_gamma_over_sqrt_var_eps": float((np.abs(gamma[idx]) / np.sqrt(var[idx] + eps)).max()),
          "amplified_on_data": int(amplified.sum()),
          "worst_output_std": float(np.max(np.abs(gamma[idx]) * np.sqrt(x.var[idx] / (var[idx] + eps)))),
          "inputs": "given data" if data_given else "random inputs"}
    return [make("C16", "near-zero-variance", "warning" if amplified.any() and data_given else "info", path,
                 f"{int(near_zero.sum())} feature(s) with moving variance <= epsilon"
                 + (f"; {int(amplified.sum())} amplified on the data" if amplified.any() else ""),
                 target, source="dynamic", evidence=ev,
                 fix="a feature constant in training (dead unit, padding column) gets moving variance -> 0 and "
                 "at inference any deviation is multiplied by up to gamma/sqrt(eps); make the feature vary "
                 "in training, drop it, or raise epsilon")]


# --------------------------------------------------------------------------- L03 / L04


@dataclass
class _Far:
    """One layer whose inference-mode inputs are far from its moving statistics."""

    path: str
    inference: Distance
    training: Distance | None  # None: the training-mode pass did not measure this layer
    far: np.ndarray  # features far in inference mode (near-zero features excluded: C16 speaks for them)
    stale: np.ndarray  # ... and in training mode too (all of `far` when training is None)

    @property
    def shifted(self) -> np.ndarray:
        return self.far & ~self.stale

    def evidence(self, why_untold: str | None) -> dict:
        inf = self.inference
        ev = {"examples": inf.examples, "features_far_in_inference": int(self.far.sum()), "of": int(self.far.size),
              "mean_far": int((inf.mean_far & self.far).sum()), "variance_far": int((inf.var_far & self.far).sum()),
              **self.inference.summary(self.far),
              "limit": f"{SIGMA:g} sigma of sampling noise over {inf.examples} examples"}
        if self.training is not None:
            ev["features_far_in_training_mode"] = int((self.training.far & self.far).sum())
            ev["training_mode"] = self.training.summary(self.far)
        else:
            ev["training_mode"] = why_untold
        return ev


def _upstream_bn(root: Layer | None, order: list[str]) -> dict[str, set]:
    """BN path -> the BN paths that run before it on its data: from the graph where it is known, else
    every BN layer called before it in the inference pass."""
    if root is not None and graph_known(root):
        out: dict = {}
        for b in root.walk():
            if b.is_bn:
                for later in downstream_of(b):
                    if later.is_bn:
                        out.setdefault(later.path, set()).add(b.path)
        return out
    return {p: set(order[:i]) for i, p in enumerate(order)}


def _far_layers(m: Measurements, skip: set) -> list[_Far]:
    out = []
    for path, st in m.bn_state.items():
        if path in skip or path not in m.bn_inputs or st.moving_variance is None:
            continue
        x = Moments.pooled(m.bn_inputs[path])
        d = distance(st, x) if x.finite and x.examples >= 2 and np.isfinite(st.moving_mean).all() and \
            np.isfinite(st.moving_variance).all() else None
        if d is None:
            continue
        far = d.far & ~(st.moving_variance <= st.epsilon)
        if not far.any():
            continue
        training = None
        if m.bn_inputs_training is not None and path in m.bn_inputs_training:
            t = Moments.pooled(m.bn_inputs_training[path])
            training = distance(st, t) if t.finite else None
        if training is None:
            stale = far
        else:  # far in training mode too, and by at least half its inference-mode distance (module doc)
            stale = far & training.far & (training.score >= STALE_SHARE * d.score)
        out.append(_Far(path, d, training, far, stale))
    return out


def _stale_or_shifted(m: Measurements, far_layers: list[_Far], root: Layer | None, target: Target) -> list[Finding]:
    why_untold = ("not measured: " + m.training_pass_error) if m.training_pass_error else "not measured"
    upstream = _upstream_bn(root, list(m.bn_inputs))
    stale: dict[str, Finding] = {}
    out = []
    for f in far_layers:
        if not f.stale.any():
            continue
        finding = make(
            "L03", "stale-statistics", "warning", f.path,
            f"moving statistics far from the data's batch statistics in {int(f.stale.sum())}/{f.far.size} feature(s)"
            + (", in training mode too" if f.training is not None else ""), target, source="dynamic",
            evidence=f.evidence(why_untold),
            fix="inference normalises these features with statistics that do not describe the data"
            + (" (in training mode as well, where the moving statistics should match)" if f.training is not None
               else "; whether a train/inference shift explains it could not be measured")
            + ": if the data is right (same preprocessing as in training), recompute the statistics with "
            f"frozen weights (PreciseBN: {PRECISE_BN}); if not, fix the preprocessing (e.g. pixel scale 0-255 "
            "vs 0-1)")
        stale[f.path] = finding
        out.append(finding)
    for f in far_layers:
        if f.stale.any() or not f.shifted.any():
            continue
        shifted = f.shifted
        cause = next((stale[p] for p in stale if p in upstream.get(f.path, ())), None)
        if cause is not None:
            cause.confirmed.append(
                f"{f.path}: {int(shifted.sum())}/{shifted.size} feature(s) far from the moving statistics in inference "
                f"mode only (not in training mode): follows from the stale statistics of {cause.layer} upstream")
            cause.affects.append(f.path)
            continue
        out.append(make(
            "L04", "train-inference-shift", "warning", f.path,
            f"train/inference shift: inputs far from the moving statistics in {int(shifted.sum())}/{shifted.size} "
            "feature(s) in inference mode, not in training mode", target, source="dynamic",
            evidence=dict(f.evidence(why_untold), upstream_bn=len(upstream.get(f.path, ()))),
            fix="the moving statistics describe this layer's inputs in training mode (any feature still beyond the "
            "limit there, features_far_in_training_mode, keeps less than half its inference-mode distance), "
            "so recomputing them in training mode (PreciseBN) would give the same values and cannot help. In "
            "inference mode the layers upstream hand this layer another distribution: upstream BN layers "
            "normalise with population instead of batch statistics (and Dropout is off), and the difference "
            "compounds with depth and grows as training batches shrink (L04). Measure the accuracy in inference "
            "mode and accept it, or recalibrate for inference: recompute the statistics layer by layer in "
            "inference mode, each from the inputs its already-recalibrated upstream layers give it (shift-aware "
            "recalibration); larger training batches also shrink the gap"))
    return out


# --------------------------------------------------------------------------- C29


def _per_step(path: str, st: BNState, steps: list[Moments]) -> str | None:
    """The per-time-step evidence for a BN inside TimeDistributed: how far each step's inputs are from the
    one shared pair of moving statistics (in training each step is normalised with its own batch's)."""
    ds = [distance(st, s) for s in steps if s.finite]
    ds = [d for d in ds if d is not None]
    if len(ds) < 2:
        return None
    shifts = [float(np.max(np.abs(d.shift))) for d in ds]
    ratios = [float(np.median(d.ratio)) for d in ds]
    far = sum(bool(d.far.any()) for d in ds)
    return (f"{path}: {len(ds)} time steps, each normalised at inference with the same moving statistics; worst "
            f"normalised mean offset per step {min(shifts):.3g}..{max(shifts):.3g}, median variance ratio per step "
            f"{min(ratios):.3g}..{max(ratios):.3g}; {far}/{len(ds)} step(s) beyond {SIGMA:g} sigma of sampling "
            "noise")


def judge_statistics(m: Measurements, model_path: str, static_findings: list[Finding], target: Target,
                     data_given: bool, root: Layer | None = None) -> list[Finding]:
    """Findings from the BN statistics. `root`: the model's tree (upstream/downstream questions); a BN
    inside TimeDistributed (a static C29 finding's `affects`) gets its measurements attached to that
    finding instead of a stale/shift verdict."""
    out, at_init = _initial_state(m, model_path, target)
    wrapped = {p: f for f in static_findings if f.check == "time-distributed-bn" for p in f.affects}
    for path, st in m.bn_state.items():
        if path in at_init or path not in m.bn_inputs or st.moving_variance is None:
            continue
        x = Moments.pooled(m.bn_inputs[path])
        if not x.finite:
            out.append(make("C10", "non-finite", "error", path, "NaN/inf in this BN layer's inputs", target,
                            source="dynamic", evidence={"input_finite": False},
                            fix="a NaN upstream; no statistics comparison is possible on these inputs"))
            continue
        if not (np.isfinite(st.moving_mean).all() and np.isfinite(st.moving_variance).all()):
            continue  # reported as non-finite variables
        d = distance(st, x)
        if d is None or x.examples < 2:
            continue
        out += _near_zero(path, st, d, x, target, data_given)
        if path in wrapped and data_given:
            text = _per_step(path, st, m.bn_inputs[path])
            if text:
                wrapped[path].confirmed.append(text)
    if data_given:
        out += _stale_or_shifted(m, _far_layers(m, at_init | set(wrapped)), root, target)
    return out
