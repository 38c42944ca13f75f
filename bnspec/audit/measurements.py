"""What the forward passes measured (bnspec.audit.forward), as typed values; no judgement (that is
bnspec.audit.judge and bnspec.audit.statistics) and no Keras.

  Measurements    everything one audit measured; `summary()` is the JSON `measured` block
  EntryResult     one inference entry point (model(x, training=False), model(x), predict(x)): which
                  variables it changed, whether its outputs are finite, the training argument BN saw
  Change          one variable an inference call changed
  Comparison      two sets of outputs compared bit for bit
  BatchDependence an example alone (a batch of copies of it) vs in the full batch
  BatchOfOne      a literal batch of one vs the full batch (evidence only)
  BNState         one BN layer's variables and hyper-parameters
  Moments         one BN layer's input statistics per feature (mean, central moment sums), mergeable
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

ENTRY_TEXT = {"predict": "predict(x)", "call": "model(x)", "call_training_false": "model(x, training=False)"}


@dataclass(frozen=True)
class Moments:
    """Per-feature statistics of a BN layer's input, reduced over every axis but the layer's feature
    axis/axes, in float64. `examples` counts along axis 0 (what the sampling-noise limits count: pixels of
    one image are correlated), `count` the values per feature. m2, m3, m4 are sums of centred powers, so
    that two sets merge exactly (Pébay 2008, eqs. 3.1-3.3): one BN layer called several times (a shared
    layer, a layer inside TimeDistributed) pools its calls."""

    examples: int
    count: int
    mean: np.ndarray
    m2: np.ndarray
    m3: np.ndarray
    m4: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, axis) -> Moments:
        x = np.asarray(x, np.float64)
        keep = [a % x.ndim for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
        reduce = tuple(i for i in range(x.ndim) if i not in keep)
        count = int(np.prod([x.shape[i] for i in reduce])) if reduce else 1
        mean = x.mean(axis=reduce, keepdims=True)
        c = x - mean
        c2 = c * c
        m2 = c2.sum(axis=reduce)
        return cls(examples=int(x.shape[0]), count=count, mean=mean.reshape(m2.shape), m2=m2,
                   m3=(c2 * c).sum(axis=reduce), m4=(c2 * c2).sum(axis=reduce))

    def merge(self, other: Moments) -> Moments:
        na, nb = float(self.count), float(other.count)
        n = na + nb
        d = other.mean - self.mean
        mean = self.mean + d * nb / n
        m2 = self.m2 + other.m2 + d ** 2 * na * nb / n
        m3 = (self.m3 + other.m3 + d ** 3 * na * nb * (na - nb) / n ** 2
              + 3 * d * (na * other.m2 - nb * self.m2) / n)
        m4 = (self.m4 + other.m4 + d ** 4 * na * nb * (na * na - na * nb + nb * nb) / n ** 3
              + 6 * d ** 2 * (na * na * other.m2 + nb * nb * self.m2) / n ** 2
              + 4 * d * (na * other.m3 - nb * self.m3) / n)
        return Moments(self.examples + other.examples, self.count + other.count, mean, m2, m3, m4)

    @staticmethod
    def pooled(parts: list[Moments]) -> Moments:
        out = parts[0]
        for part in parts[1:]:
            out = out.merge(part)
        return out

    @property
    def var(self) -> np.ndarray:
        """The biased variance (what a training-mode BN divides by)."""
        return self.m2 / self.count

    @property
    def kurtosis(self) -> np.ndarray:
        """m4 / var^2 per feature; 3 (Gaussian) where the variance is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.m2 > 0, self.count * self.m4 / np.where(self.m2 > 0, self.m2, 1.0) ** 2, 3.0)

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.mean).all() and np.isfinite(self.m2).all() and np.isfinite(self.m4).all())


@dataclass(frozen=True)
class BNState:
    """One BN layer's variables (float64 copies; None where the layer has none, e.g. scale=False) and
    hyper-parameters; `initial` holds the constant each variable's initializer fills with (None: not a
    constant initializer)."""

    moving_mean: np.ndarray | None
    moving_variance: np.ndarray | None
    gamma: np.ndarray | None
    beta: np.ndarray | None
    epsilon: float
    momentum: float
    axis: int | list
    trainable: bool
    initial: dict  # {"moving_mean", "moving_variance", "gamma", "beta"} -> float | None

    def at_initial_state(self) -> bool | None:
        """Both moving statistics exactly equal to their initializer's constants (None: cannot tell)."""
        if self.moving_mean is None or self.moving_variance is None or self.initial.get("moving_mean") is None \
                or self.initial.get("moving_variance") is None:
            return None
        return bool(np.all(self.moving_mean == self.initial["moving_mean"])
                    and np.all(self.moving_variance == self.initial["moving_variance"]))

    def affine_trained(self) -> bool:
        """gamma or beta moved off its initial constant."""
        return any(getattr(self, k) is not None and self.initial.get(k) is not None
                   and not np.all(getattr(self, k) == self.initial[k]) for k in ("gamma", "beta"))


@dataclass(frozen=True)
class Change:
    """A variable an inference call changed: its owner's path, its name, the largest |new - old|."""

    path: str
    variable: str
    max_change: float


@dataclass
class EntryResult:
    changed: list[Change]
    finite: bool
    bn_training_args: dict = field(default_factory=dict)  # BN path -> sorted training arguments it was called with


@dataclass(frozen=True)
class Comparison:
    bitwise_equal: bool
    max_abs_diff: float
    finite: bool

    @classmethod
    def of(cls, a: list[np.ndarray], b: list[np.ndarray]) -> Comparison:
        finite = all_finite(a) and all_finite(b)
        equal = len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))
        with np.errstate(invalid="ignore"):
            diff = max((float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0)
                       for x, y in zip(a, b)) if a and b else float("nan")
        return cls(bool(equal), diff, bool(finite))


@dataclass(frozen=True)
class BatchDependence(Comparison):
    """Examples `examples` run alone (each in a batch of copies of itself, same batch shape) vs in the full
    batch. `collapse`: the outputs alone agree to 3 digits while the same examples differ in the batch
    (the notebook's "every single prediction is the same class"); described, not judged."""

    examples: list = field(default_factory=list)
    spread_alone: float = 0.0
    spread_in_batch: float = 0.0
    collapse: bool = False
    argmax_alone: list | None = None
    argmax_in_batch: list | None = None

    def evidence(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("bitwise_equal", "finite") and v is not None}


@dataclass(frozen=True)
class BatchOfOne:
    """A literal batch of one, eager, vs its row in the full batch: other kernels, other rounding (evidence)."""

    entry: str
    example: int
    max_abs_diff_vs_full_batch: float
    output_scale: float


@dataclass
class Measurements:
    examples: int
    bn_layers: int
    entries: dict[str, EntryResult] = field(default_factory=dict)  # entry name (ENTRY_TEXT keys) -> result
    errors: dict[str, str] = field(default_factory=dict)  # what failed -> "Type: message"
    seconds: dict[str, float] = field(default_factory=dict)
    call_vs_training_false: Comparison | None = None
    batch_dependence: dict[str, BatchDependence] = field(default_factory=dict)
    batch_size_1: BatchOfOne | None = None
    bn_state: dict[str, BNState] = field(default_factory=dict)  # BN path -> state
    nonfinite_variables: list[str] = field(default_factory=list)  # paths of layers holding NaN/inf
    outputs_finite: dict[str, bool] = field(default_factory=dict)
    bn_inputs: dict[str, list[Moments]] = field(default_factory=dict)  # inference mode, one entry per call
    bn_inputs_training: dict[str, list[Moments]] | None = None  # model(x, training=True); None: not measured
    training_pass_error: str | None = None
    inputs_unreadable: int = 0  # BN calls whose input could not be read (no statistics for them)
    forward_passes: int = 0

    def summary(self) -> dict:
        """The JSON `measured` block (no arrays)."""
        out = {"examples": self.examples, "bn_layers": self.bn_layers, "forward_passes": self.forward_passes,
               "errors": self.errors, "seconds": self.seconds, "outputs_finite": self.outputs_finite,
               "nonfinite_variables": self.nonfinite_variables,
               "variables_changed_by": {e: [f"{c.path}:{c.variable}" for c in info.changed]
                                        for e, info in self.entries.items()},
               "batch_dependence": {e: asdict(c) for e, c in self.batch_dependence.items()},
               "training_mode_inputs": self.bn_inputs_training is not None}
        if self.call_vs_training_false is not None:
            out["call_vs_training_false"] = asdict(self.call_vs_training_false)
        if self.batch_size_1 is not None:
            out["batch_size_1"] = asdict(self.batch_size_1)
        if self.training_pass_error:
            out["training_pass_error"] = self.training_pass_error
        return out


def all_finite(arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays if np.issubdtype(a.dtype, np.floating))
