"""The mutation harness: the claim suite run against deliberately wrong BatchNormalization layers.

Does the suite have the power to see a wrong BN? Each *mutant* is Keras' BatchNormalization with one
realistic deviation, named after where it happens in the wild (PyTorch's conventions, Keras 2/TF1
behaviour, tf_keras' fused kernel, bugs fixed in Keras' history, numerical slips), and each names the
claim(s) whose mechanism it breaks. `bnspec mutants` runs the claims each mutant needs, once per
mutant, and compares every test case with one baseline run of the real layer:

  killed    every named claim has a test case whose verdict/outcome flipped (and failed)
  gap       something failed, but not (all of) the claim(s) that name the mechanism: a bystander
            caught it, so the named claim's test needs sharpening
  survived  nothing failed: the suite cannot see this deviation at all

Activation: BNSPEC_MUTANT=<name>. bnspec.flavours.keras_module(), the one place that imports Keras,
calls `install(module, name)`, so every process the suite starts (xdist workers, the training
subprocess) gets the mutant. The mutant class replaces `keras.layers.BatchNormalization` everywhere
Keras resolves that name, including the object registry used by `.keras` loading, so a saved and
reloaded model holds the mutant too. Each mutant run has its own BNSPEC_HOME (its own model cache).

Output: reports/mutants/results.json (mutant -> origin, named claims, killers, verdict) and
`render_section(doc)`, the report's kill-matrix section. Reading the JSON and rendering need no
TensorFlow; only `install()` and `mutant_class()` import Keras' internals.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bnspec import BnspecError

ENV = "BNSPEC_MUTANT"
SCHEMA = 1
ROOT = Path(__file__).resolve().parents[1]  # the repository: tests/claims lives here
DEFAULT_OUT = Path("reports/mutants")

# Cheap layer-level claims (about 2 s of test time together) run for every mutant besides its named
# claims: they make the kill matrix show who else notices, at almost no cost.
PANEL = ("K01", "K02", "K03", "K04", "K05", "K09", "K10", "K13", "K15", "K16", "N06",
         "P01", "P02", "P05", "E01", "E02", "E03", "X02", "X03", "C05", "C09", "C14", "C19")


@dataclass(frozen=True)
class Mutant:
    name: str
    deviation: str  # what it computes wrongly, one line
    origin: str  # where this deviation happens in the wild
    claims: tuple[str, ...]  # the claims that name its mechanism: each must kill it
    extra: tuple[str, ...] = ()  # further (costlier) claims worth running besides the panel
    shows: tuple[str, ...] = ()  # tests/unit/test_mutants.py probes on which it must deviate

    def run_claims(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.claims) | set(self.extra) | set(PANEL)))


CATALOGUE: tuple[Mutant, ...] = (
    Mutant("torch-momentum",
           "moving = momentum*batch + (1-momentum)*moving: PyTorch's momentum convention with Keras' number",
           "PyTorch's convention (torch.nn.BatchNorm1d, momentum=0.1 means 0.9 in Keras) copied into a port",
           ("K03", "X01"), shows=("update",)),
    Mutant("torch-unbiased-running-var",
           "the moving variance tracks the unbiased m/(m-1) batch variance, for every input rank",
           "PyTorch's running_var ('unbiased estimator'), or Algorithm 2 step 10 applied to the EMA",
           ("K03", "K16", "X02"), shows=("update",)),
    Mutant("fused-kernel-unbiased",
           "4-D inputs only: the moving variance tracks the unbiased m/(m-1) batch variance",
           "tf_keras / Keras 2 with fused=True (tf.compat.v1.nn.fused_batch_norm) on NHWC/NCHW inputs",
           ("K16", "E03"), shows=("conv_update",)),
    Mutant("unbiased-normalisation",
           "training mode normalises with the unbiased (1/(m-1)) batch variance",
           "numpy ddof=1 / torch.var(unbiased=True default) in a hand-written BN",
           ("K01",), shows=("train",)),
    Mutant("eps-outside-sqrt",
           "y = gamma*(x-mean)/(sqrt(var)+eps) + beta",
           "hand-written normalisation layers (e.g. the Annotated Transformer's LayerNorm, std + eps)",
           ("K01", "K02"), shows=("train", "inference")),
    Mutant("torch-epsilon",
           "normalises with epsilon 1e-5 whatever `epsilon` says (the attribute still reads 1e-3)",
           "PyTorch's default eps=1e-5 hard-coded in a converted or fused kernel",
           ("K01", "K02", "C09"), shows=("train", "inference")),
    Mutant("trainable-ignored",
           "trainable=False does not force inference mode: training=True still uses and updates batch statistics",
           "TF1 / Keras 2 before TF 2.0 (BatchNormalization honoured `training` over `trainable`)",
           ("K04", "N03"), shows=("frozen",)),
    Mutant("inference-updates-moving",
           "inference calls (predict, model(x)) also update the moving statistics of a trainable layer",
           "the study notebook's belief (N02); a layer that assigns the EMA whatever the mode",
           ("M01", "K03", "N02"), shows=("inference_state",)),
    Mutant("training-uses-moving",
           "training mode normalises with the moving statistics (still updating them)",
           "Caffe's use_global_stats left on while training; a frozen-BN (FrozenBatchNorm) swap",
           ("K01",), shows=("train",)),
    Mutant("gamma-ignored",
           "the scale gamma is not applied",
           "conversion/folding scripts that drop gamma (scale=False applied silently)",
           ("K01", "K02"), shows=("train", "inference")),
    Mutant("beta-ignored",
           "the offset beta is not applied",
           "conversion/folding scripts that drop beta (center=False applied silently)",
           ("K01", "K02", "N06"), shows=("train", "inference")),
    Mutant("mask-ignored",
           "the mask is ignored: masked steps count in the batch mean and variance",
           "Keras 2 / tf_keras (BatchNormalization.call has no mask argument)",
           ("K10",), extra=("C15", "C26", "C27"), shows=("mask",)),
    Mutant("one-pass-variance",
           "batch variance as E[x^2] - E[x]^2 in float32 (catastrophic cancellation at large offsets)",
           "Keras 3's torch backend ops.moments ('faster but less numerically stable'), keras-core PR #866",
           ("C05",), shows=("offset",)),
    Mutant("per-activation-conv",
           "conv inputs: statistics per activation (over the batch axis only), not shared over locations",
           "tf.nn.moments(x, axes=[0]) on conv feature maps in from-scratch BN (the paper's section 3.2)",
           ("K15",), shows=("conv",)),
    Mutant("stop-gradient-stats",
           "no gradient flows through the batch mean and variance",
           "Keras 3.0 torch backend (detached mean/variance), fixed by keras-team/keras PR #19102",
           ("E02", "C14"), shows=("gradient",)),
    Mutant("moving-std",
           "the moving variance is updated with the batch standard deviation instead of the variance",
           "Batch Renormalization's bookkeeping (Keras tracks moving_stddev for renorm) leaking into plain BN",
           ("K03", "K16"), shows=("update",)),
    Mutant("float16-compute",
           "under mixed_float16 the normalisation is computed in float16 (no float32 upcast)",
           "Keras 3 before BatchNormalization.call upcast float16 inputs ('BN is prone to overflow')",
           ("K09",), extra=("C06",), shows=("mixed",)),
    Mutant("training-none-is-training",
           "training=None (a plain call, model(x)) means training mode",
           "PyTorch's default (modules train until .eval()); Keras 1 learning-phase defaults",
           ("K02", "M01", "N04"), shows=("inference_none",)),
    Mutant("track-running-stats-false",
           "batch statistics in inference too, and the moving statistics are never updated",
           "PyTorch's track_running_stats=False",
           ("K02", "K03"), shows=("inference", "update")),
    Mutant("update-ops-not-run",
           "training mode never updates the moving statistics",
           "TF1 tf.layers.batch_normalization without the UPDATE_OPS control dependency",
           ("K03", "M02"), shows=("update",)),
    Mutant("moving-stats-trainable",
           "the moving mean and variance are trainable weights (in trainable_weights, counted as trainable)",
           "hand-written BN with tf.Variable(...) for the moving statistics (trainable=True by default), a TF1 classic",
           ("K05", "K07"), shows=("weights",)),
    Mutant("trainable-only-checkpoint",
           "loading a saved model restores gamma and beta but not the moving statistics (back to 0 and 1)",
           "TF1 tf.train.Saver(var_list=tf.trainable_variables()): checkpoints without the moving statistics",
           ("K14",), shows=("save_load",)),
    Mutant("config-drops-momentum",
           "get_config() leaves out momentum: from_config/.keras loading rebuilds the layer with 0.99",
           "get_config omissions fixed over Keras' history (a constructor argument missing from the config)",
           ("K13",), shows=("config",)),
)

BY_NAME = {m.name: m for m in CATALOGUE}


CONTROL = "identity"  # the harness' own re-implementation with no deviation: must kill nothing


def get(name: str) -> Mutant:
    try:
        return BY_NAME[name]
    except KeyError:
        raise BnspecError(f"unknown mutant {name!r}; known: {', '.join(BY_NAME)}") from None


# --------------------------------------------------------------------------- the mutant layers


def _keras_src(module):
    """Keras 3's internal modules the mutants are built from (keras3 and keras-nightly flavours)."""
    if not hasattr(module, "src") or getattr(module, "__name__", "") != "keras":
        raise BnspecError(f"mutants patch Keras 3's BatchNormalization; the module under test is "
                          f"{getattr(module, '__name__', module)!r} (use the keras3 or keras-nightly flavour)")
    from keras.src import backend, ops
    from keras.src.layers.normalization import batch_normalization

    return backend, ops, batch_normalization


_CLASSES: dict = {}


def _define_classes(module) -> dict:
    """name -> mutant class (plus "identity": the hooked layer with no deviation, the harness' control)."""
    if _CLASSES:
        return _CLASSES
    backend, ops, bn_module = _keras_src(module)
    original = getattr(bn_module.BatchNormalization, "bnspec_original", bn_module.BatchNormalization)

    class Hooked(original):
        """Keras 3.15's BatchNormalization.call (renorm excepted, which goes to Keras' own code) split
        into the pieces the mutants override. With no override it computes what Keras computes."""

        bnspec_mutant = "identity"
        bnspec_original = original

        def call(self, inputs, training=None, mask=None):
            if self.renorm:
                return super().call(inputs, training=training, mask=mask)
            if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
                raise ValueError("The mask provided should be one dimension less than the inputs. Received: "
                                 f"mask.shape={mask.shape}, inputs.shape={inputs.shape}")
            inputs = ops.cast(inputs, self._m_compute_dtype(inputs))
            moving_mean = ops.cast(self.moving_mean, inputs.dtype)
            moving_variance = ops.cast(self.moving_variance, inputs.dtype)
            gamma = ops.cast(self.gamma, inputs.dtype) if self.scale else None
            beta = ops.cast(self.beta, inputs.dtype) if self.center else None
            if self._m_training(training):
                mean, variance = self._moments(inputs, mask)
                self._m_update(inputs, moving_mean, moving_variance, mean, variance)
                mean, variance = self._m_train_stats(inputs, mean, variance, moving_mean, moving_variance)
            else:
                mean, variance = self._m_inference_stats(inputs, mask, moving_mean, moving_variance)
            outputs = self._m_normalise(inputs, mean, variance, gamma, beta)
            return ops.cast(outputs, self.compute_dtype)

        # the pieces ----------------------------------------------------------------------------
        def _m_compute_dtype(self, inputs):
            return backend.result_type(inputs.dtype, "float32")

        def _m_training(self, training):
            return training and self.trainable

        def _m_ema(self, moving, value):
            return moving * self.momentum + value * (1.0 - self.momentum)

        def _m_variance_target(self, inputs, mean, variance):
            return variance

        def _m_update(self, inputs, moving_mean, moving_variance, mean, variance):
            new_mean = self._m_ema(moving_mean, mean)
            new_var = self._m_ema(moving_variance, self._m_variance_target(inputs, mean, variance))
            self.moving_mean.assign(ops.cast(new_mean, self.moving_mean.dtype))
            self.moving_variance.assign(ops.cast(new_var, self.moving_variance.dtype))

        def _m_train_stats(self, inputs, mean, variance, moving_mean, moving_variance):
            return mean, variance

        def _m_inference_stats(self, inputs, mask, moving_mean, moving_variance):
            return moving_mean, moving_variance

        def _m_normalise(self, inputs, mean, variance, gamma, beta, epsilon=None):
            return ops.batch_normalization(x=inputs, mean=mean, variance=variance, axis=self.axis, offset=beta,
                                           scale=gamma, epsilon=self.epsilon if epsilon is None else epsilon)

        # helpers for the mutants ---------------------------------------------------------------
        def _m_count(self, inputs):
            """Elements per feature (m) as a per-feature tensor."""
            return ops.sum(ops.ones_like(inputs), axis=self._reduction_axes)

        def _m_unbiased(self, inputs, variance):
            m = self._m_count(inputs)
            return variance * m / ops.maximum(m - 1.0, 1.0)

        def _m_bcast(self, inputs, v):
            if v is None or len(v.shape) == len(inputs.shape):
                return v
            shape = [1] * len(inputs.shape)
            shape[self.axis] = -1
            return ops.reshape(v, shape)

        def _m_affine(self, inputs, mean, inv_std, gamma, beta):
            b = lambda v: self._m_bcast(inputs, v)  # noqa: E731
            y = (inputs - b(mean)) * b(inv_std)
            if gamma is not None:
                y = y * b(gamma)
            if beta is not None:
                y = y + b(beta)
            return y

    Hooked.__name__ = Hooked.__qualname__ = "BatchNormalization"

    def mutant(name, **methods):
        cls = type("BatchNormalization", (Hooked,), {"bnspec_mutant": name, **methods})
        cls.__qualname__ = "BatchNormalization"
        cls.__module__ = Hooked.__module__
        return cls

    def torch_momentum_ema(self, moving, value):
        return moving * (1.0 - self.momentum) + value * self.momentum

    def unbiased_target(self, inputs, mean, variance):
        return self._m_unbiased(inputs, variance)

    def fused_target(self, inputs, mean, variance):
        return self._m_unbiased(inputs, variance) if len(inputs.shape) == 4 else variance

    def unbiased_train(self, inputs, mean, variance, moving_mean, moving_variance):
        return mean, self._m_unbiased(inputs, variance)

    def eps_outside(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return self._m_affine(inputs, mean, 1.0 / (ops.sqrt(variance) + self.epsilon), gamma, beta)

    def torch_eps(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return Hooked._m_normalise(self, inputs, mean, variance, gamma, beta, epsilon=1e-5)

    def trainable_ignored(self, training):
        return bool(training)

    def inference_updates(self, inputs, mask, moving_mean, moving_variance):
        if self.trainable:
            mean, variance = self._moments(inputs, mask)
            self._m_update(inputs, moving_mean, moving_variance, mean, variance)
        return moving_mean, moving_variance

    def training_uses_moving(self, inputs, mean, variance, moving_mean, moving_variance):
        return moving_mean, moving_variance

    def no_gamma(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return Hooked._m_normalise(self, inputs, mean, variance, None, beta)

    def no_beta(self, inputs, mean, variance, gamma, beta, epsilon=None):
        return Hooked._m_normalise(self, inputs, mean, variance, gamma, None)

    def mask_ignored(self, inputs, mask):
        return original._moments(self, inputs, None)

    def one_pass(self, inputs, mask):
        if mask is not None:
            return original._moments(self, inputs, mask)
        mean = ops.mean(inputs, axis=self._reduction_axes)
        return mean, ops.mean(ops.square(inputs), axis=self._reduction_axes) - ops.square(mean)

    def per_activation_stats(self, inputs, mean, variance, moving_mean, moving_variance):
        if len(inputs.shape) <= 2:
            return mean, variance
        return ops.mean(inputs, axis=0, keepdims=True), ops.var(inputs, axis=0, keepdims=True)

    def per_activation_moments(self, inputs, mask):
        if len(inputs.shape) <= 2 or mask is not None:
            return original._moments(self, inputs, mask)
        # the moving statistics average the per-activation ones: the mean is right, the variance
        # misses the spread between locations
        return (ops.mean(inputs, axis=self._reduction_axes),
                ops.mean(ops.var(inputs, axis=0, keepdims=True), axis=self._reduction_axes))

    def per_activation_normalise(self, inputs, mean, variance, gamma, beta, epsilon=None):
        if len(mean.shape) == len(inputs.shape):
            return self._m_affine(inputs, mean, ops.rsqrt(variance + self.epsilon), gamma, beta)
        return Hooked._m_normalise(self, inputs, mean, variance, gamma, beta)

    def stop_gradient(self, inputs, mask):
        mean, variance = original._moments(self, inputs, mask)
        return ops.stop_gradient(mean), ops.stop_gradient(variance)

    def std_target(self, inputs, mean, variance):
        return ops.sqrt(variance)

    def float16_dtype(self, inputs):
        return self.compute_dtype

    def none_is_training(self, training):
        return (True if training is None else training) and self.trainable

    def batch_stats_always(self, inputs, mask, moving_mean, moving_variance):
        return self._moments(inputs, mask)

    def no_update(self, inputs, moving_mean, moving_variance, mean, variance):
        return None

    def build_trainable_moving(self, input_shape):
        original.build(self, input_shape)
        if self.trainable:
            self.moving_mean.trainable = self.moving_variance.trainable = True

    def load_trainable_only(self, store):
        original.load_own_variables(self, store)
        self.moving_mean.assign(ops.zeros_like(self.moving_mean))
        self.moving_variance.assign(ops.ones_like(self.moving_variance))

    def config_without_momentum(self):
        config = original.get_config(self)
        config.pop("momentum", None)
        return config

    classes = {
        "identity": Hooked,
        "torch-momentum": mutant("torch-momentum", _m_ema=torch_momentum_ema),
        "torch-unbiased-running-var": mutant("torch-unbiased-running-var", _m_variance_target=unbiased_target),
        "fused-kernel-unbiased": mutant("fused-kernel-unbiased", _m_variance_target=fused_target),
        "unbiased-normalisation": mutant("unbiased-normalisation", _m_train_stats=unbiased_train),
        "eps-outside-sqrt": mutant("eps-outside-sqrt", _m_normalise=eps_outside),
        "torch-epsilon": mutant("torch-epsilon", _m_normalise=torch_eps),
        "trainable-ignored": mutant("trainable-ignored", _m_training=trainable_ignored),
        "inference-updates-moving": mutant("inference-updates-moving", _m_inference_stats=inference_updates),
        "training-uses-moving": mutant("training-uses-moving", _m_train_stats=training_uses_moving),
        "gamma-ignored": mutant("gamma-ignored", _m_normalise=no_gamma),
        "beta-ignored": mutant("beta-ignored", _m_normalise=no_beta),
        "mask-ignored": mutant("mask-ignored", _moments=mask_ignored),
        "one-pass-variance": mutant("one-pass-variance", _moments=one_pass),
        "per-activation-conv": mutant("per-activation-conv", _m_train_stats=per_activation_stats,
                                      _moments=per_activation_moments, _m_normalise=per_activation_normalise),
        "stop-gradient-stats": mutant("stop-gradient-stats", _moments=stop_gradient),
        "moving-std": mutant("moving-std", _m_variance_target=std_target),
        "float16-compute": mutant("float16-compute", _m_compute_dtype=float16_dtype),
        "training-none-is-training": mutant("training-none-is-training", _m_training=none_is_training),
        "track-running-stats-false": mutant("track-running-stats-false", _m_inference_stats=batch_stats_always,
                                            _m_update=no_update),
        "update-ops-not-run": mutant("update-ops-not-run", _m_update=no_update),
        "moving-stats-trainable": mutant("moving-stats-trainable", build=build_trainable_moving),
        "trainable-only-checkpoint": mutant("trainable-only-checkpoint", load_own_variables=load_trainable_only),
        "config-drops-momentum": mutant("config-drops-momentum", get_config=config_without_momentum),
    }
    missing = set(BY_NAME) - set(classes)
    assert not missing, f"mutants without a class: {missing}"
    _CLASSES.update(classes)
    return _CLASSES


def mutant_class(module, name: str):
    """The mutant's layer class for the Keras `module`, without installing it ("identity": the
    harness' own re-implementation with no deviation, the control)."""
    if name != CONTROL:
        get(name)
    return _define_classes(module)[name]


def _routes(module):
    """Every place Keras looks "BatchNormalization" up: namespaces, and the public-name registry that
    `.keras` saving and loading use (name -> class and class -> name)."""
    import keras.src.layers as src_layers
    from keras.src import api_export
    from keras.src.layers.normalization import batch_normalization as bn_module

    namespaces = [module.layers, src_layers, bn_module]
    legacy = sys.modules.get("keras._tf_keras.keras.layers")
    if legacy is not None and hasattr(legacy, "BatchNormalization"):
        namespaces.append(legacy)
    return namespaces, api_export


def _swap(module, old, new) -> None:
    """Replace class `old` by `new` on every route (the old class keeps its public name too)."""
    namespaces, api_export = _routes(module)
    for namespace in namespaces:
        if getattr(namespace, "BatchNormalization", None) is old:
            namespace.BatchNormalization = new
    for public, symbol in list(api_export.REGISTERED_NAMES_TO_OBJS.items()):
        if symbol is old:
            api_export.REGISTERED_NAMES_TO_OBJS[public] = new
            api_export.REGISTERED_OBJS_TO_NAMES[new] = public


def install(module, name: str):
    """Make `module.layers.BatchNormalization` the mutant `name` everywhere Keras resolves that name:
    keras.layers, keras.src.layers, the defining module, and the registry `.keras` files are saved
    under and loaded from ("keras.layers.BatchNormalization"), so a reloaded model holds the mutant
    too. Idempotent for the same name; returns the class."""
    if name != CONTROL:
        get(name)  # an unknown name is one clear error, before Keras is touched
    current = getattr(module.layers.BatchNormalization, "bnspec_mutant", None)
    if current == name:
        return module.layers.BatchNormalization
    if current is not None:
        raise BnspecError(f"mutant {current!r} is already installed in this process; cannot install {name!r}")
    cls = mutant_class(module, name)
    _swap(module, cls.bnspec_original, cls)
    return cls


@contextlib.contextmanager
def installed(module, name: str):
    """install() for the duration of a `with` block, then the real class again (for tests)."""
    if getattr(module.layers.BatchNormalization, "bnspec_mutant", None) is not None:
        raise BnspecError("a mutant is already installed in this process")
    cls = install(module, name)
    try:
        yield cls
    finally:
        _swap(module, cls, cls.bnspec_original)


# --------------------------------------------------------------------------- the kill matrix (no TensorFlow)

FAILED = ("failed", "error")


def _load_tests(doc: dict) -> dict[str, dict]:
    return {t["nodeid"]: t for t in doc.get("tests", [])}


def kills(baseline: dict, mutated: dict) -> dict:
    """Compare a mutant run with the baseline run, test case by test case.

    A case kills when it failed (or errored) under the mutant and its (outcome, observed verdict)
    differs from the baseline's. Cases that fail identically on the baseline are broken, not kills;
    a kill on a case that fails differently on the baseline counts, but is marked (`shaky`).
    Returns {"killers": {claim: [nodeid]}, "crashed": [nodeid], "shaky": [nodeid], "broken": [nodeid],
    "messages": {crashed nodeid: the failure's first line}}."""
    base = _load_tests(baseline)
    killers: dict[str, list[str]] = {}
    crashed, shaky, broken, messages = [], [], [], {}
    for nodeid, t in sorted(_load_tests(mutated).items()):
        if t.get("outcome") not in FAILED or not t.get("claim"):
            continue
        b = base.get(nodeid)
        if b is not None and (b.get("outcome"), b.get("observed")) == (t.get("outcome"), t.get("observed")):
            broken.append(nodeid)
            continue
        killers.setdefault(t["claim"], []).append(nodeid)
        if t.get("outcome") == "error" or t.get("observed") is None:
            crashed.append(nodeid)  # an exception, not a verdict: a kill, but a blunt one
            messages[nodeid] = " ".join(str(t.get("message", "")).split())[:240]
        if b is not None and b.get("outcome") in FAILED:
            shaky.append(nodeid)  # the case fails without the mutant too (differently)
    return {"killers": killers, "crashed": crashed, "shaky": shaky, "broken": broken, "messages": messages}


def judge(mutant: Mutant, result: dict | None) -> dict:
    """The catalogue entry plus its kills -> one row of results.json. Per killing claim: the number
    of test cases that flipped, and how many of them only by an exception or on a case that also
    fails on the baseline. A named claim whose test cases fail only with an exception (no verdict)
    has not measured the mechanism: it stays `missing`, with the exception in `notes`."""
    row = {"deviation": mutant.deviation, "origin": mutant.origin, "named": list(mutant.claims)}
    if mutant.extra:
        row["extra"] = list(mutant.extra)
    if result is None or "killers" not in result:
        return row | {"verdict": "error", "killers": {}, "missing": list(mutant.claims),
                      "error": (result or {}).get("error", "no results")}
    killers = result["killers"]
    crashed, shaky = set(result.get("crashed", ())), set(result.get("shaky", ()))
    missing = [c for c in mutant.claims if not any(i not in crashed for i in killers.get(c, ()))]
    verdict = "survived" if not killers else "gap" if missing else "killed"
    notes = {c: result.get("messages", {}).get(killers[c][0], "an exception") for c in missing if c in killers}
    if notes:
        row["notes"] = notes
    row |= {"verdict": verdict, "missing": missing, "killers": {
        c: {"cases": len(ids), "by_exception": sum(i in crashed for i in ids),
            "also_failing_on_baseline": sum(i in shaky for i in ids)} for c, ids in sorted(killers.items())}}
    if result.get("broken"):
        row["broken_on_baseline"] = len(result["broken"])
    return row


def document(rows: dict[str, dict], versions: dict, seconds: float, baseline: dict | None = None,
             control: dict | None = None) -> dict:
    counts = {v: sum(r["verdict"] == v for r in rows.values()) for v in ("killed", "gap", "survived", "error")}
    doc = {"schema": SCHEMA, "flavour": versions.get("flavour"), "keras": versions.get("keras"),
           "tensorflow": versions.get("tensorflow"), "seconds": round(seconds), "counts": counts,
           "panel": list(PANEL),
           "mutants": rows}
    if baseline is not None:
        doc["baseline"] = baseline
    if control is not None:
        doc["control"] = control
    return doc


def load(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BnspecError(f"{path}: no mutant results; run `bnspec mutants` first") from None
    except (OSError, ValueError) as exc:
        raise BnspecError(f"{path}: unreadable mutant results ({exc}); run `bnspec mutants` again") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("mutants"), dict):
        raise BnspecError(f"{path}: not a mutant results file of schema {SCHEMA}; run `bnspec mutants` again")
    return doc


MARK = {"killed": "killed", "gap": "**gap**", "survived": "**survived**", "error": "**error**"}


def render_section(doc: dict) -> list[str]:
    """Markdown lines for the report: one line with the numbers, then the kill matrix (rows =
    mutants; the named claims with ✓/✗, then every other claim that caught it)."""
    rows, c = doc["mutants"], doc.get("counts", {})
    n = len(rows)
    minutes = f"{doc.get('seconds', 0) / 60:.1f} min"
    lines = [
        f"**{c.get('killed', 0)} of {n} mutants killed by the claims that name their mechanism**"
        f" ({c.get('gap', 0)} gap(s), {c.get('survived', 0)} survived, {c.get('error', 0)} error(s); "
        f"Keras {doc.get('keras')}, TensorFlow {doc.get('tensorflow')}, harness {minutes}).",
        "",
        "Each mutant is Keras' BatchNormalization with one deliberate, realistic deviation (`bnspec mutants`, "
        "catalogue in `bnspec/mutants.py`). ✓: a test case of the named claim flipped; ✗: it did not "
        "(a gap: the claim's test needs sharpening); `*`: caught only by an exception, not a verdict (for a named "
        "claim that is a gap too); "
        "`?`: caught only on test cases that also fail without the mutant.",
        "",
        "| mutant | deviation | where it happens | named claims | also caught by | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        killers = r.get("killers", {})

        def tag(claim):
            k = killers.get(claim)
            if not k:
                return claim
            return claim + ("*" if k["by_exception"] == k["cases"] else "") + \
                ("?" if k["also_failing_on_baseline"] == k["cases"] else "")

        named = ", ".join(f"{tag(cl)} {'✗' if cl in r.get('missing', ()) else '✓'}" for cl in r["named"])
        others = ", ".join(tag(cl) for cl in killers if cl not in r["named"]) or "–"
        lines.append(f"| `{name}` | {r['deviation']} | {r['origin']} | {named} | {others} | {MARK[r['verdict']]} |")
    control = doc.get("control")
    if control:
        lines += ["", "Control: the harness' own re-implementation of the layer with no deviation "
                  + ("flips no test case (clean)." if control["verdict"] == "clean" else
                     f"**{control['verdict']}**: it flips {', '.join(control.get('killers', {})) or 'nothing'}; "
                     "the kills above are not to be trusted.")]
    gaps = [(name, r) for name, r in rows.items() if r["verdict"] != "killed"]
    if gaps:
        lines += ["", "Not killed by their named claims:", ""]
        for name, r in gaps:
            notes = r.get("notes", {})
            flat = [c for c in r.get("missing", ()) if c not in notes]
            why = r.get("error") or "; ".join(
                ([f"{', '.join(flat)} did not flip"] if flat and r["verdict"] != "survived" else [])
                + (["no test case flipped"] if r["verdict"] == "survived" else [])
                + [f"{c} failed only with an exception, not a verdict: {msg}" for c, msg in notes.items()])
            lines.append(f"- `{name}` ({r['verdict']}): {why}")
    return lines


# --------------------------------------------------------------------------- running the harness


def _pytest_cmd(claims: list[str], results: Path, workers: int, slow: bool) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "tests/claims", f"--bnspec-claims={','.join(claims)}",
           f"--bnspec-results={results}", "-p", "no:cacheprovider", "-q", "--no-header", "-p", "no:randomly"]
    if workers:
        cmd += ["-n", str(workers)]
    if not slow:
        cmd += ["-m", "not slow"]
    return cmd


SLOW = {"P07", "P08", "P09", "P10"}


def _run_suite(mutant: str | None, claims: list[str], home: Path, env: dict, workers: int, timeout: float) -> dict:
    """One pytest run of `claims` (with BNSPEC_MUTANT=mutant unless None) in its own BNSPEC_HOME."""
    results = home / "results.json"
    results.unlink(missing_ok=True)
    run_env = dict(env, BNSPEC_HOME=str(home), BNSPEC_PREPARE="0", TF_CPP_MIN_LOG_LEVEL="2")
    run_env.pop(ENV, None)
    if mutant:
        run_env[ENV] = mutant
    started = time.time()
    with open(home / "pytest.log", "w") as log:
        try:
            proc = subprocess.run(_pytest_cmd(claims, results, workers, bool(SLOW & set(claims))), cwd=ROOT,
                                  env=run_env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    seconds = time.time() - started
    if not results.is_file():
        return {"error": f"pytest exit {code} and no results after {seconds:.0f} s (log: {home / 'pytest.log'})",
                "seconds": seconds}
    doc = json.loads(results.read_text())
    return {"doc": doc, "seconds": seconds, "code": code}


def _copy_reusable(baseline_home: Path, home: Path) -> None:
    """Models that do not contain Keras' BN (ExplicitBatchNorm's) are the same for every mutant."""
    models = baseline_home / "models"
    for entry in models.glob("*-explicit-*") if models.is_dir() else []:
        if entry.is_dir() and not entry.name.startswith("."):
            shutil.copytree(entry, home / "models" / entry.name, dirs_exist_ok=True)


def _mnist(env: dict, home_root: Path) -> None:
    if env.get("BNSPEC_MNIST"):
        return
    from bnspec import paths

    for candidate in (paths.home() / "data" / "mnist.npz", home_root / "baseline" / "data" / "mnist.npz"):
        if candidate.is_file():
            env["BNSPEC_MNIST"] = str(candidate)
            return


def harness(selected: list[Mutant], out: Path, home_root: Path, jobs: int = 2, workers: int = 1,
            timeout: float = 900, control: bool = True, log=print) -> dict:
    """Baseline run, then the control and every mutant (`jobs` at a time); writes OUT/results.json
    and OUT/MUTANTS.md and returns the document."""
    from bnspec import flavours

    versions = flavours.versions()
    if flavours.FAMILY[versions["flavour"]] != "keras3":
        raise BnspecError(f"mutants patch Keras 3's BatchNormalization; flavour {versions['flavour']} is not supported")
    if not (ROOT / "tests" / "claims").is_dir():
        raise BnspecError(f"the claim tests are not at {ROOT / 'tests' / 'claims'}: run the harness from a "
                          "source checkout (pip install -e .)")
    started = time.time()
    env = dict(os.environ)
    _mnist(env, home_root)
    union = sorted(set().union(*(m.run_claims() for m in selected)))
    base_home = home_root / "baseline"
    base_home.mkdir(parents=True, exist_ok=True)
    log(f"bnspec mutants: baseline (real BatchNormalization) on {len(union)} claims ...")
    # the baseline runs alone: it gets every worker the mutant runs will share
    base = _run_suite(None, union, base_home, env, max(workers, 1) * max(jobs, 1) if workers else 0, timeout)
    if "doc" not in base:
        raise BnspecError(f"the baseline run failed: {base['error']}")
    base_doc = base["doc"]
    broken = sorted(t["nodeid"] for t in base_doc["tests"] if t["outcome"] in FAILED)
    log(f"bnspec mutants: baseline: {len(base_doc['tests'])} test cases in {base['seconds']:.0f} s"
        + (f"; {len(broken)} FAIL without any mutant (a kill there counts only if the mutant changes "
           f"the outcome, and is marked '?'): "
           + ", ".join(broken[:5]) + (" ..." if len(broken) > 5 else "") if broken else ""))
    _mnist(env, home_root)  # the baseline may have fetched it
    rows: dict[str, dict] = {}
    done = [0]
    total = len(selected) + bool(control)

    def fresh_home(name: str) -> Path:
        home = home_root / name
        shutil.rmtree(home, ignore_errors=True)  # a fresh cache: models trained with this mutant only
        (home / "models").mkdir(parents=True)
        _copy_reusable(base_home, home)
        return home

    def one(m: Mutant | None):
        if m is None:  # the control: the harness' hooked layer with no deviation must flip nothing
            res = _run_suite(CONTROL, union, fresh_home(CONTROL), env, workers, timeout)
            result = kills(base_doc, res["doc"]) if "doc" in res else res
            row = {"claims_run": union, "killers": {c: len(ids) for c, ids in sorted(result.get("killers", {}).items())}}
            row["verdict"] = "error" if "error" in result else "clean" if not row["killers"] else "dirty"
            done[0] += 1
            log(f"bnspec mutants: [{done[0]}/{total}] control ({CONTROL}, no deviation): {row['verdict'].upper()}"
                + (f" -- the harness itself flips {', '.join(row['killers'])}" if row["killers"] else "")
                + (f"; {result['error']}" if "error" in result else "") + f" in {res['seconds']:.0f} s")
            return CONTROL, row
        res = _run_suite(m.name, list(m.run_claims()), fresh_home(m.name), env, workers, timeout)
        result = kills(base_doc, res["doc"]) if "doc" in res else res
        row = judge(m, result)
        done[0] += 1
        named = ", ".join(f"{c}{'✗' if c in row['missing'] else '✓'}" for c in m.claims)
        others = [c for c in row["killers"] if c not in m.claims]
        log(f"bnspec mutants: [{done[0]}/{total}] {m.name}: {row['verdict'].upper()} "
            f"(named {named}" + (f"; also {', '.join(others)}" if others else "")
            + (f"; {row['error']}" if row.get("error") else "") + f") in {res['seconds']:.0f} s")
        return m.name, row

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for name, row in pool.map(one, ([None] if control else []) + list(selected)):
            rows[name] = row
    control_row = rows.pop(CONTROL, None)
    rows = {m.name: rows[m.name] for m in selected}  # catalogue order
    doc = document(rows, versions, time.time() - started,
                   baseline={"claims": union, "test_cases": len(base_doc["tests"]), "broken": broken},
                   control=control_row)
    write(doc, out)
    return doc


def write(doc: dict, out: Path) -> None:
    from bnspec import paths

    paths.atomic_write_json(out / "results.json", doc)
    (out / "MUTANTS.md").write_text("# Mutation harness: kill matrix\n\n" + "\n".join(render_section(doc)) + "\n")


# --------------------------------------------------------------------------- command line


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "mutants", help="run the claim suite against deliberately wrong BN layers: does every claim catch its mutant?",
        description="Run the claims each mutant needs with Keras' BatchNormalization replaced by the mutant "
        "(BNSPEC_MUTANT, in every process), compare with one baseline run, and write the kill matrix to "
        "OUT/results.json and OUT/MUTANTS.md. Exit 1 if a mutant survives or is caught only by a bystander claim.")
    p.add_argument("--only", default=None, metavar="NAME,...", help="run only these mutants (comma-separated)")
    p.add_argument("--jobs", type=int, default=2, help="mutant runs at once (default 2)")
    p.add_argument("--workers", type=int, default=1,
                   help="pytest-xdist workers per run (-n; default 1: one TensorFlow import per run; 0 = no xdist)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results.json and MUTANTS.md go (default reports/mutants)")
    p.add_argument("--home", type=Path, default=None,
                   help="where each run's BNSPEC_HOME goes (default: $BNSPEC_HOME/mutants/<name>)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per pytest run before it counts as an error")
    p.add_argument("--no-control", action="store_true",
                   help="skip the control run (the harness' own layer with no deviation, which must flip nothing)")
    p.add_argument("--list", action="store_true", help="list the catalogue and exit")
    return p


def run(args) -> int:
    if args.list:
        for m in CATALOGUE:
            print(f"{m.name:28} {', '.join(m.claims):14} {m.deviation}  [{m.origin}]")
        return 0
    names = [n.strip() for n in (args.only or "").split(",") if n.strip()]
    selected = [get(n) for n in names] if names else list(CATALOGUE)
    if args.jobs < 1 or args.workers < 0:
        raise BnspecError("--jobs must be >= 1 and --workers >= 0")
    if args.home is None:
        from bnspec import paths

        home_root = paths.home() / "mutants"
    else:
        home_root = args.home
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    previous = load(out / "results.json") if names and (out / "results.json").is_file() else None
    doc = harness(selected, out, home_root, args.jobs, args.workers, args.timeout, control=not args.no_control)
    if previous is not None:  # a partial run updates its mutants' rows and keeps the others
        from bnspec import flavours

        kept = {n: r for n, r in previous["mutants"].items()
                if n in BY_NAME and all(isinstance(k, dict) for k in r.get("killers", {}).values())}
        rows = {m.name: doc["mutants"].get(m.name) or kept[m.name]
                for m in CATALOGUE if m.name in doc["mutants"] or m.name in kept}
        doc = document(rows, flavours.versions(), doc["seconds"], baseline=doc.get("baseline"),
                       control=doc.get("control") or previous.get("control"))
        write(doc, out)
    print(render_section(doc)[0])
    print(f"bnspec: wrote {out / 'results.json'} and {out / 'MUTANTS.md'}")
    bad = [m.name for m in selected if doc["mutants"][m.name]["verdict"] != "killed"]
    dirty = (doc.get("control") or {}).get("verdict") not in (None, "clean")
    return 1 if bad or dirty else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bnspec")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["mutants", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except BnspecError as exc:
        print(f"bnspec: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
