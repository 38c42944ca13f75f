"""Field traps: Keras API, fine-tuning and serving: behaviours Keras users report (GitHub issues, the
keras.io guides) about BN in transfer learning, preprocessing pipelines, exports, migration from
Keras 2 and the TF1 compatibility API, measured as claims.

Versions: only the three measured points are claimed (keras3 = Keras 3.15.1, keras-nightly =
3.16.0.dev, tfkeras = tf_keras 2.21); ranges such as ">=3.16.0.dev0" say what the nightly showed.

Tests: tests/claims/test_field_api.py."""

from bnspec.claims._model import KERAS316, Claim, Expect, HOLDS, REFUTED

ORDER = 200
TITLE = "Field traps: Keras API, fine-tuning and serving"

GUIDE_TL = "keras.io guide 'Transfer learning & fine-tuning' (guides/transfer_learning.py)"
CONTEXT_LEAK = (
    "Keras 3.15 writes a layer's resolved `training` value, including a default taken from its call() "
    "signature, into the call context shared with every layer called after it"
)

CLAIMS = (
    Claim(
        "C01",
        "base_model(x, training=False) keeps BN frozen in fit",
        "In the transfer-learning recipe (x = base_model(inputs, training=False) in the outer model, then "
        "base_model.trainable = True, recompile and fit()), the BN layers inside base_model keep their "
        "moving statistics bitwise unchanged during fit() and normalise with them: fit's loss is the "
        "inference-mode loss.",
        f"{GUIDE_TL}, fine-tuning section; keras-team/keras#20285; PR #20298 and commit 09c133c (guide text "
        "changed, example kept); PR #23364 (3.16: construction-time training wins)",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="Keras 2: an argument given to a layer call while building "
                   "the model beats the framework's training flag"),
            Expect(HOLDS, flavour="keras3", versions=KERAS316, change="keras#23364",
                   why="keras-nightly 3.16.0.dev: arguments given while building a Functional model take "
                   "precedence again (PR #23364)"),
            Expect(HOLDS, flavour="keras3", case="kind=subclassed",
                   why="training=False is an argument of a call inside call(): fit's flag does not reach it"),
            Expect(REFUTED, flavour="keras3", mechanism="moving_stats_follow_fit",
                   why="Keras 3.15's Functional.call wraps every node (operation_fn) and writes fit's "
                   "training=True over the node's baked training=False, so the nested BN runs in training mode "
                   "and its moving statistics take one EMA step towards the batch statistics per fit step"),
        ),
        note="The fit uses SGD(learning_rate=0) and one batch, so the Dense weights stay fixed and the inner "
        "BN's new moving mean can be predicted exactly: momentum*old + (1-momentum)*batch mean of its input. "
        "kind=subclassed is the same recipe with the outer model written as a subclass.",
        advice="on Keras 3.15 and earlier do not rely on training=False in a Functional model to freeze BN "
        "for fine-tuning: set trainable=False on the BN layers themselves (they then run in inference mode), "
        "or write the outer model as a subclass",
    ),
    Claim(
        "C02",
        "BN after Resizing/CenterCrop/RandomFlip stays in inference",
        "For Input -> {CenterCrop | Resizing | RandomFlip} -> Flatten -> BatchNormalization, model(x) without "
        "a training argument, the `serve` endpoint of model.export() and model.export(format='litert') "
        "normalise with the moving statistics and leave them unchanged, like predict().",
        "keras-team/keras PR #23166 (3.16: a signature default no longer leaks to sibling layers); "
        "BaseImagePreprocessingLayer.call(data, training=True) (Keras >= 3.6; Random* layers since 3.0); "
        "ExportArchive endpoint registers model.__call__ (training=None); export/litert.py uses "
        "partial(model.__call__, training=False)",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="tf_keras enters and leaves the call context per layer: a "
                   "preprocessing layer's default never reaches the BN layer"),
            Expect(HOLDS, flavour="keras3", versions=KERAS316, change="keras#23166",
                   why="keras-nightly 3.16.0.dev: a signature default is no longer propagated (PR #23166)"),
            *(Expect(HOLDS, flavour="keras3", versions="<3.6", case=f"preproc={name}", change="keras@20c67d6bc2",
                     why=f"before Keras 3.6 {name} is a plain layer without a training argument; from 3.6 (commit "
                         "20c67d6, no PR) it is a BaseImagePreprocessingLayer whose call(data, training=True) default "
                         "reaches the BN layer")
              for name in ("CenterCrop", "Resizing")),
            Expect(HOLDS, flavour="keras3", case="entry=export_litert",
                   why="the LiteRT exporter calls the model with training=False explicitly"),
            Expect(REFUTED, flavour="keras3", mechanism="bn_training_mode",
                   why=f"{CONTEXT_LEAK}: the preprocessing layer's training=True default reaches the BN layer, "
                   "which normalises with the batch statistics and updates its moving statistics, in model(x) "
                   "and in the exported SavedModel's serve endpoint (whose variables move too)"),
        ),
        note="x is symmetric under horizontal and vertical flips and the crop/resize keep the 4x4 size, so "
        "every preprocessing layer maps x to itself bitwise in both modes (checked): only the BN mode can "
        "change the output.",
        advice="on Keras 3.15, call a model with preprocessing layers as model(x, training=False) (or use "
        "predict()), and export with an explicit training=False endpoint (ExportArchive.add_endpoint with "
        "partial(model.__call__, training=False)); never serve model.export()'s default endpoint of such a "
        "model",
    ),
    Claim(
        "C12",
        "Keras-2-only BN arguments: honoured or rejected",
        "Each Keras 2 BatchNormalization argument (fused, virtual_batch_size, adjustment, a list axis, renorm) "
        "is either honoured or rejected with an error at construction, and a tf_keras .h5 model whose BN "
        "normalises over several axes either loads with those axes or fails to load: none is silently "
        "ignored or changed.",
        "deepchem#4034 (BatchNormalization(fused=False) on TF 2.16: 'Unrecognized keyword arguments'); "
        "keras-team/keras PR #22047 (renorm re-added, 3.14); Keras 3 legacy/saving/saving_utils.py (drops a "
        "multi-element axis list); keras-team/keras#19577",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="tf_keras is Keras 2: it accepts and applies every one of them"),
            Expect(HOLDS, flavour="keras3", why="Keras 3 raises at construction (ValueError 'Unrecognized keyword "
                   "arguments' for fused/virtual_batch_size/adjustment, TypeError from int(axis) for a list); "
                   "renorm is accepted and builds its renorm variables (>= 3.14); the .h5 loader drops the "
                   "list axis but the weight-shape check then fails the load"),
        ),
        note="'Honoured' is measured: tf_keras' ghost batches, adjustment and multi-axis statistics match "
        "their float64 references; fused is read back from the built layer; renorm builds its renorm "
        "variables. tf_keras' ghost batches are interleaved, not consecutive: it reshapes the batch to "
        "(virtual_batch_size, -1, ...) and reduces over the first axis, so ghost batch j holds examples j, "
        "j + n/virtual_batch_size, ... TRAPS.md believed the multi-axis .h5 would load silently into Keras 3 "
        "with axis -1; measured: the loader does drop the list axis, but the saved (1, H, W, 1) weights do "
        "not fit the rebuilt (C,) layer and load_model raises a shape-mismatch ValueError that does not "
        "mention the axis. 'Rejected' is the specific refusal, not any exception: a ValueError 'Unrecognized keyword "
        "arguments' naming the argument; for the list axis the TypeError of int() naming the 'list' (it does not name "
        "the argument: the same constructor without axis=[1, 2] is accepted, the control); for the .h5 the "
        "ValueError 'Shape mismatch' naming the BN layer and its saved (1, 3, 3, 1) weights. Any other exception (a "
        "junk file, a crash) is an error of the test, never 'rejected'.",
        advice="when porting Keras 2 code, remove fused/virtual_batch_size/adjustment (Keras 3 has no ghost "
        "batch norm or adjustment: write a custom layer) and replace a multi-axis BN by a reshape plus a "
        "single-axis BN (or LayerNormalization), retraining or converting the weights",
    ),
    Claim(
        "C17",
        "TFLite folds BN into the conv and matches Keras",
        "Converting Conv2D(use_bias=False) -> BatchNormalization -> ReLU to TFLite leaves no separate BN "
        "arithmetic after CONV_2D (scale and shift folded into the convolution) and the TFLite float32 output "
        "equals Keras' inference output within the float32 rounding of both evaluations.",
        "keras-team/keras-core#824 (BN not fused as well as in Keras 2); tensorflow/tensorflow#27707, #25033; "
        "TFLiteConverter.from_keras_model; Keras 3 model.export(format='litert')",
        expected=(Expect(HOLDS, why="the converter folds the inference-mode BN (mul/add) into CONV_2D's "
                         "weights and bias, with ReLU as its fused activation, on both Keras flavours"),),
        note="Op names are read from the TFLite interpreter with the default delegates off (XNNPACK would "
        "report the whole graph as one DELEGATE op). TRAPS.md was unsure for Keras 3 (keras-core#824): the "
        "measured graph is a single CONV_2D.",
        advice="no action needed for Conv2D -> BN -> ReLU on TensorFlow 2.21: the converted model has one "
        "CONV_2D per block; check interpreter._get_ops_details() if a custom block leaves MUL/ADD behind",
    ),
    Claim(
        "C18",
        "a bias right before BN is useless in training",
        "For Dense(use_bias=True) (or a 1x1 Conv2D) followed by BatchNormalization in training mode, the "
        "output does not depend on the bias and the bias' gradient is zero up to float32 rounding.",
        "keras-team/keras PR #21888 (Dense docstring: set use_bias=False before BatchNormalization); "
        "Ioffe & Szegedy 2015, section 3.2",
        note="In inference mode the bias does shift the output (by gamma*delta/sqrt(moving_var+eps)) until the "
        "moving mean catches up: that shift is recorded as the test's power.",
        advice="build Dense/Conv layers that feed BatchNormalization with use_bias=False: the bias is a "
        "wasted parameter in training, and a stale one at inference",
    ),
    Claim(
        "C23",
        "tf.compat.v1 BN with trainable=False uses batch statistics",
        "tf.compat.v1.keras.layers.BatchNormalization with trainable=False, called with training=True, "
        "normalises with the batch statistics (the pre-TF-2.0 behaviour).",
        "tf_keras batch_normalization_v1.py (_USE_V2_BEHAVIOR = False) and _get_training_value; datumbox "
        "blog 'The Batch Normalization layer of Keras is broken'; keras-team/keras PR #9965",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="the V1 layer only lets trainable=False force inference mode "
                   "under V2 behaviour"),
            Expect(REFUTED, flavour="keras3", mechanism="inference_mode",
                   why="with Keras 3 as tf.keras, tf.compat.v1.keras.layers.BatchNormalization is Keras 3's own "
                   "layer, which runs in inference mode whenever trainable=False"),
        ),
        note="TensorFlow-specific (tf.compat.v1): skipped on the jax and torch backends. On keras3 the alias "
        "itself is the finding: the trap is gone with Keras 3, and so is the V1 behaviour old code relied on.",
        advice="code on the tf.compat.v1 Keras API running on tf_keras: trainable=False does not freeze BN's "
        "mode there; pass training=False (or move to the V2 layer)",
    ),
    Claim(
        "C24",
        "a boolean tensor `training` in tf.function selects the mode",
        "Inside one tf.function trace, bn(x, training=t) with t = tf.constant(True) normalises with the batch "
        "statistics and updates the moving statistics, and with t = tf.constant(False) uses the moving "
        "statistics.",
        "tf_keras smart_cond on `training` (batch_normalization.py); Keras 3 `if training and self.trainable` "
        "(batch_normalization.py L363); tensorflow/tensorflow#36848, #32477",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="tf_keras selects the branch with smart_cond / tf.cond at run "
                   "time"),
            Expect(REFUTED, flavour="keras3", mechanism="tensor_flag_raises",
                   why="Keras 3 evaluates `training` with a Python `if`; Keras code is not converted by "
                   "autograph, so tracing raises OperatorNotAllowedInGraphError (a Python bool works, one trace "
                   "per value)"),
        ),
        note="TensorFlow-specific (tf.function): skipped on the jax and torch backends.",
        advice="on Keras 3 pass `training` as a Python bool (tf.function retraces once per value); a boolean "
        "tensor only works in tf_keras",
    ),
    Claim(
        "C25",
        "a tf_keras SavedModel in TFSMLayer stays in inference",
        "A tf_keras model with BN saved as a TF SavedModel and wrapped in Keras 3 "
        "keras.layers.TFSMLayer(path, call_endpoint='serving_default') normalises with the saved moving "
        "statistics and does not update them during fit() of an outer model, even with training=True.",
        "keras.layers.TFSMLayer docstring (training behaviour only through call_training_endpoint); "
        "Keras 3 load_model refuses legacy SavedModels",
        expected=(Expect(HOLDS, why="the serving signature was traced with training=False; TFSMLayer has no "
                         "training endpoint to switch to"),),
        note="Keras 3 TensorFlow backend only (TFSMLayer raises on jax/torch; tf_keras has no TFSMLayer). The "
        "SavedModel is made by the tfkeras tox interpreter in a subprocess and cached. gamma and beta do train "
        "through the layer (recorded). On Keras 3.1-3.9 the case errors (no verdict): TFSMLayer tracks the "
        "loaded tf.Variables unwrapped, and reading the model's losses fails with 'UninitializedVariable' "
        "object has no attribute 'regularizer' (keras#19206 dropped the getattr fallback in 3.1; keras#20955, "
        "fixed by #20995 in 3.10, which wraps them in Keras variables).",
        advice="fine-tuning a reloaded tf_keras SavedModel through TFSMLayer never adapts its BN statistics: "
        "rebuild the model in Keras 3 and load the weights if BN must adapt",
    ),
)
