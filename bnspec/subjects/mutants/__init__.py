"""The deliberately wrong BatchNormalization layers of the mutation harness (bnspec.harness.mutants runs
them): each *mutant* is Keras 3's BatchNormalization with one realistic deviation, named after where it
happens in the wild, and names the claim(s) whose mechanism it breaks.

This module is the catalogue (data: `Mutant`, `CATALOGUE`; no Keras) and the installer. The layers live in
one module per family, each class an ordinary class on the shared pieces of hooked.py:

  hooked          Pieces (Keras' call split into overridable pieces), the Hooked base made once per Keras
                  module (also the harness' control, "identity"), build()
  pytorch         PyTorch's conventions            legacy         Keras 2 / TF1 behaviour
  fused           tf_keras' fused kernel           keras_history  bugs fixed in Keras 3's history
  handwritten     slips of hand-written BN         numerics       formula and dtype slips
  serialisation   what saving and loading lose

A mutant reaches a process only through its run (bnspec.run.Run.mutant): bnspec.subjects.keras_for(run)
calls `install(keras, name)`, which replaces `keras.layers.BatchNormalization` everywhere Keras resolves
that name, including the object registry used by `.keras` loading, so a saved and reloaded model holds the
mutant too. Only `install()`, `installed()` and `mutant_class()` import Keras' internals.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from bnspec import BnspecError, provenance

HERE = Path(__file__).resolve().parent
FAMILIES = ("pytorch", "legacy", "fused", "keras_history", "handwritten", "numerics", "serialisation")


@dataclass(frozen=True)
class Mutant:
    name: str
    deviation: str  # what it computes wrongly, one line
    origin: str  # where this deviation happens in the wild
    claims: tuple[str, ...]  # the claims that name its mechanism: each must kill it
    extra: tuple[str, ...] = ()  # further (costlier) claims worth running besides the panel
    shows: tuple[str, ...] = ()  # tests/unit/test_mutants.py probes on which it must deviate
    family: str = ""  # the module of this package that defines its class


def _family(name: str, *mutants: Mutant) -> tuple[Mutant, ...]:
    return tuple(replace(m, family=name) for m in mutants)


CATALOGUE: tuple[Mutant, ...] = (
    *_family(
        "pytorch",
        Mutant("torch-momentum",
               "moving = momentum*batch + (1-momentum)*moving: PyTorch's momentum convention with Keras' number",
               "PyTorch's convention (torch.nn.BatchNorm1d, momentum=0.1 means 0.9 in Keras) copied into a port",
               ("K03", "X01"), shows=("update",)),
        Mutant("torch-unbiased-running-var",
               "the moving variance tracks the unbiased m/(m-1) batch variance, for every input rank",
               "PyTorch's running_var ('unbiased estimator'), or Algorithm 2 step 10 applied to the EMA",
               ("K03", "K16", "X02"), shows=("update",)),
        Mutant("torch-epsilon",
               "normalises with epsilon 1e-5 whatever `epsilon` says (the attribute still reads 1e-3)",
               "PyTorch's default eps=1e-5 hard-coded in a converted or fused kernel",
               ("K01", "K02", "C09"), shows=("train", "inference")),
        Mutant("training-none-is-training",
               "training=None (a plain call, model(x)) means training mode",
               "PyTorch's default (modules train until .eval()); Keras 1 learning-phase defaults",
               ("K02", "M01", "N04"), shows=("inference_none",)),
        Mutant("track-running-stats-false",
               "batch statistics in inference too, and the moving statistics are never updated",
               "PyTorch's track_running_stats=False",
               ("K02", "K03"), shows=("inference", "update")),
    ),
    *_family(
        "fused",
        Mutant("fused-kernel-unbiased",
               "4-D inputs only: the moving variance tracks the unbiased m/(m-1) batch variance",
               "tf_keras / Keras 2 with fused=True (tf.compat.v1.nn.fused_batch_norm) on NHWC/NCHW inputs",
               ("K16", "E03"), shows=("conv_update",)),
    ),
    *_family(
        "legacy",
        Mutant("trainable-ignored",
               "trainable=False does not force inference mode: training=True still uses and updates batch statistics",
               "TF1 / Keras 2 before TF 2.0 (BatchNormalization honoured `training` over `trainable`)",
               ("K04", "N03"), shows=("frozen",)),
        Mutant("mask-ignored",
               "the mask is ignored: masked steps count in the batch mean and variance",
               "Keras 2 / tf_keras (BatchNormalization.call has no mask argument)",
               ("K10",), extra=("C15", "C26", "C27"), shows=("mask",)),
        Mutant("update-ops-not-run",
               "training mode never updates the moving statistics",
               "TF1 tf.layers.batch_normalization without the UPDATE_OPS control dependency",
               ("K03", "M02"), shows=("update",)),
        Mutant("moving-stats-trainable",
               "the moving mean and variance are trainable weights (in trainable_weights, counted as trainable)",
               "hand-written BN with tf.Variable(...) for the moving statistics (trainable=True by default), a TF1 classic",
               ("K05", "K07"), shows=("weights",)),
    ),
    *_family(
        "numerics",
        Mutant("unbiased-normalisation",
               "training mode normalises with the unbiased (1/(m-1)) batch variance",
               "numpy ddof=1 / torch.var(unbiased=True default) in a hand-written BN",
               ("K01",), shows=("train",)),
        Mutant("eps-outside-sqrt",
               "y = gamma*(x-mean)/(sqrt(var)+eps) + beta",
               "hand-written normalisation layers (e.g. the Annotated Transformer's LayerNorm, std + eps)",
               ("K01", "K02"), shows=("train", "inference")),
        Mutant("moving-std",
               "the moving variance is updated with the batch standard deviation instead of the variance",
               "Batch Renormalization's bookkeeping (Keras tracks moving_stddev for renorm) leaking into plain BN",
               ("K03", "K16"), shows=("update",)),
        Mutant("float64-computes-in-float32",
               "a float64 layer normalises in float32: the upcast is a cast to float32 instead of to the wider of "
               "the input's dtype and float32 (the output is still float64)",
               "a float32 upcast written for 16-bit inputs applied to every dtype (flax's LayerNorm cast its input "
               "to float32 whatever its dtype, google/flax#612)",
               ("K18",), shows=("float64",)),
    ),
    *_family(
        "handwritten",
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
        Mutant("per-activation-conv",
               "conv inputs: statistics per activation (over the batch axis only), not shared over locations",
               "tf.nn.moments(x, axes=[0]) on conv feature maps in from-scratch BN (the paper's section 3.2)",
               ("K15",), shows=("conv",)),
        Mutant("renorm-correction-ignored",
               "renorm=True keeps renorm's weights, config and moving-statistics bookkeeping, but the training "
               "forward pass does not apply (r, d): it normalises with the batch statistics like plain BN",
               "Batch Renormalization ports that track renorm_mean/renorm_stddev but leave the correction out of "
               "the output (corrections misplaced: tensorpack#360, ajbrock/Neural-Photo-Editor#14)",
               ("K17",), extra=("K12", "C22"), shows=("renorm_train",)),
    ),
    *_family(
        "keras_history",
        Mutant("one-pass-variance",
               "batch variance as E[x^2] - E[x]^2 in float32 (catastrophic cancellation at large offsets)",
               "Keras 3's torch backend ops.moments ('faster but less numerically stable'), keras-core PR #866",
               ("C05",), shows=("offset",)),
        Mutant("stop-gradient-stats",
               "no gradient flows through the batch mean and variance",
               "Keras 3.0 torch backend (detached mean/variance), fixed by keras-team/keras PR #19102",
               ("E02", "C14"), shows=("gradient",)),
        Mutant("float16-compute",
               "under mixed_float16 the normalisation is computed in float16 (no float32 upcast)",
               "Keras 3 before BatchNormalization.call upcast float16 inputs ('BN is prone to overflow')",
               ("K09",), extra=("C06",), shows=("mixed",)),
        Mutant("mixed-16bit-moving-average",
               "under mixed_float16/mixed_bfloat16 the moving-average update runs in the 16-bit compute dtype: "
               "every stored statistic is rounded to 16 bits (the variables stay float32) and the average stalls "
               "once (1-momentum)*abs(batch - moving) is below half a 16-bit ulp",
               "keras-core before 'Opt out normalization layer from mixed precision' (keras-team/keras-core PR #412): "
               "the layer computed, and averaged, in its 16-bit compute dtype; NVIDIA's guide keeps BN statistics "
               "in float32",
               ("C06",), shows=("mixed_update",)),
    ),
    *_family(
        "serialisation",
        Mutant("trainable-only-checkpoint",
               "loading a saved model restores gamma and beta but not the moving statistics (back to 0 and 1)",
               "TF1 tf.train.Saver(var_list=tf.trainable_variables()): checkpoints without the moving statistics",
               ("K14",), shows=("save_load",)),
        Mutant("config-drops-momentum",
               "get_config() leaves out momentum: from_config/.keras loading rebuilds the layer with 0.99",
               "get_config omissions fixed over Keras' history (a constructor argument missing from the config)",
               ("K13",), shows=("config",)),
    ),
)

BY_NAME = {m.name: m for m in CATALOGUE}


CONTROL = "identity"  # the harness' own re-implementation with no deviation: must kill nothing


def get(name: str) -> Mutant:
    try:
        return BY_NAME[name]
    except KeyError:
        raise BnspecError(f"unknown mutant {name!r}; known: {', '.join(BY_NAME)}") from None


def sources(name: str) -> tuple[Path, ...]:
    """The files that define the mutant's layer (the control's: hooked.py alone)."""
    return (HERE / "hooked.py",) + (() if name == CONTROL else (HERE / f"{get(name).family}.py",))


def code(name: str) -> str:
    """A hash of the mutant's layer code (sources()): a row of the kill matrix measured with other mutant code
    is not this code's measurement."""
    return provenance.file_hash(*sources(name))


def family_classes(family: str) -> dict:
    """name -> class (built on hooked.Pieces) of one family module. Imports no Keras."""
    if family not in FAMILIES:
        raise BnspecError(f"unknown mutant family {family!r}; known: {', '.join(FAMILIES)}")
    module = importlib.import_module(f"{__name__}.{family}")
    return {cls.bnspec_mutant: cls for cls in module.CLASSES}


# --------------------------------------------------------------------------- the mutant layers

_CLASSES: dict = {}  # (Keras' own class, name) -> mutant class


def mutant_class(module, name: str):
    """The mutant's layer class for the Keras `module`, without installing it ("identity": the
    harness' own re-implementation with no deviation, the control)."""
    from bnspec.subjects.mutants import hooked

    base = hooked.hooked(module)
    if name == CONTROL:
        return base
    mutant = get(name)
    key = (base.bnspec_original, name)
    if key not in _CLASSES:
        classes = family_classes(mutant.family)
        if name not in classes:
            raise BnspecError(f"mutant {name!r} has no class in bnspec/subjects/mutants/{mutant.family}.py")
        _CLASSES[key] = hooked.build(module, classes[name])
    return _CLASSES[key]


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
