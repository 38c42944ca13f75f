"""Field traps: training loops and wrappers. What users assume about BN when a wrapper, the optimizer or a
custom loop stands between fit() and the layer: TimeDistributed, gradient accumulation, the optimizer's
weight EMA, zero sample weights and JAX's stateless_call (issue #24, the traps found since C01-C28).

Tests: tests/claims/test_field_training.py, run once per backend (KERAS_BACKEND=tensorflow|jax|torch) and on
tf_keras where the API exists (C30 needs gradient_accumulation_steps, C33 the JAX backend)."""

from bnspec.claims._model import KD, Claim, Expect, HOLDS, REFUTED

ORDER = 240
TITLE = "Field traps: training loops and wrappers"

CLAIMS = (
    Claim(
        "C29",
        "TimeDistributed(BN) normalises over batch and time",
        "TimeDistributed(BatchNormalization(momentum=0.5)) on a (B, T, F) = (16, 4, 3) batch whose time steps "
        "drift (-6, -2, 2, 6 added to each feature's values) behaves like BatchNormalization on the merged "
        "(B*T, F) axis: in "
        "training mode (model(x, training=True), and one fit() step) the output is normalised with the "
        "statistics of all B*T rows and the moving statistics take one EMA update with them.",
        "keras-team/keras#7466 (TimeDistributed BN and its moving statistics), keras-team/keras#16239 "
        "(TimeDistributed(BN) predicts differently from BN on the 3-D tensor), tensorflow/tensorflow#30109 "
        "(BN inside TimeDistributed: bad validation loss); "
        "Keras 3 layers/rnn/time_distributed.py (a Python loop calling the inner layer once per step when T is "
        "static); tf_keras layers/rnn/time_distributed.py (built-in layers always take the reshape path)",
        expected=(
            Expect(REFUTED, flavour="keras3", mechanism="per_step_statistics",
                   why="Keras 3's TimeDistributed calls the inner layer once per time step: each step is normalised "
                       "with its own batch statistics (over B rows, not B*T), and every training call applies T "
                       "successive EMA updates to the one shared pair of moving statistics (the last step weighs "
                       "1 - momentum, the first (1 - momentum) momentum^(T-1))"),
            Expect(HOLDS, flavour="tfkeras",
                   why="tf_keras' TimeDistributed reshapes built-in layers to (B*T, ...) and calls BN once, in "
                       "eager calls and in fit() alike"),
        ),
        note=("Sequential([Input((4, 3)), TimeDistributed(BatchNormalization(momentum=0.5))]) with randomised "
              "gamma/beta/moving statistics; case call: model(x, training=True), whose output and moving "
              "statistics are compared; case fit: one fit() step with SGD(0) (gamma and beta stay), whose moving "
              "statistics are compared. Both hypotheses are computed in float64: merged (reference.bn_train on "
              "(B*T, F), one reference.ema update) and per step (bn_train per step, T chained updates), each with "
              "its float32 bound (reference.bn_bound, ema_bounds accumulated); the per-step alternative must lie "
              "outside the merged bound (power). Recorded: the training output's per-step mean with gamma/beta "
              "undone (0 for every step under per-step statistics) and the inference output's per-step mean "
              "after the step (one shared statistic for all steps). Measured: "
              "Keras 3.15.1 (TensorFlow, JAX, torch) and keras-nightly 3.16.0.dev (all three): refuted in both "
              "cases, the moving mean 2.61 from the merged update (3.3e5 x its bound) and within 0.05 x the bound "
              "of the 4 chained per-step updates; the output (call) 5.8 from the merged normalisation and within "
              "0.1 x the per-step bound; the training output's step means |.| < 1e-6, the inference output's "
              "-10.9, -5.9, -1.2, +3.7 (after this one call the shared statistic sits near the late steps: the "
              "last update weighs 1/2, the first 1/16). tf_keras 2.21: holds in both cases (0.02 x the merged "
              "bounds; the per-step alternative 4.2e5 x away); training step means -1.29, -0.44, 0.42, 1.31 "
              "(merged statistics), inference -1.9 ... 1.6 (tf_keras takes the per-step path only for a layer that "
              "is not an exported Keras class, e.g. a user's Layer subclass holding a BN, and only with a static "
              "batch size)."),
        advice=("on Keras 3 don't wrap BatchNormalization in TimeDistributed to normalise sequences: apply "
                "BatchNormalization() to the (batch, time, features) tensor directly (it reduces over batch and "
                "time), or reshape to (batch*time, features) and back; for statistics per time step give each "
                "step its own BN layer. A model ported from tf_keras changes behaviour here"),
    ),
    Claim(
        "C30",
        "gradient accumulation: k micro-batches = one batch",
        "With optimizer(gradient_accumulation_steps=4), fit() over 4 micro-batches of 8 examples treats BN like "
        "one batch of 32: after the accumulated update the moving statistics (momentum 0.9) are one EMA update "
        "with the statistics of the 32 examples, as fit(batch_size=32) gives.",
        "Keras 3 optimizer docstring (gradient_accumulation_steps: 'useful when your batch size is very small, "
        "in order to reduce gradient noise'); keras-team/keras#16633, keras-team/keras#18948 (gradient "
        "accumulation in Keras); keras-team/tf-keras#107; Keras 3 optimizers/base_optimizer.py apply (only "
        "the weight update is deferred)",
        expected=(
            Expect(REFUTED, mechanism="per_microbatch_statistics",
                   why="accumulation defers only the optimizer's update: every micro-batch runs a full training "
                       "step, so BN normalises each micro-batch with its own statistics and updates the moving "
                       "statistics once per micro-batch (k updates per weight update)"),
        ),
        note=("Sequential([Input((3,)), BatchNormalization(momentum=0.9)]) (BN first, so its statistics do not "
              "depend on the weights), SGD(0.1, gradient_accumulation_steps=4), MSE to random targets; fit() on "
              "the first 3 micro-batches, then on the 4th (the optimizer's accumulators persist). The design is "
              "checked: gamma/beta bitwise unchanged after 3 micro-batches and changed after the 4th. The "
              "micro-batches' means differ by 3 (feature scales 0.5..3), so 4 chained EMA updates "
              "(reference.ema_bounds accumulated) and one update with the 32 examples differ beyond the bound "
              "(power). tf_keras' optimizers have no gradient_accumulation_steps: not applicable. Measured: "
              "refuted on Keras 3.15.1 and keras-nightly 3.16.0.dev, TensorFlow, JAX and torch alike: the moving "
              "mean is 1.62 from one update with the 32 examples' statistics (6.6e5 x the bound) and 1.7-2.1e-7 "
              "from the 4 per-micro-batch updates (0.03 x the bound; variance 0.007 x); gamma/beta changed only "
              "after micro-batch 4 (by 0.10)."),
        advice=("gradient accumulation does not give BN a larger batch: each micro-batch is normalised with its "
                "own, noisier statistics, and the moving statistics see k EMA updates per weight update (raise "
                "BN's momentum to momentum^(1/k) per update if the averaging horizon matters); for small "
                "micro-batches prefer GroupNormalization/LayerNormalization or recompute the statistics after "
                "training"),
    ),
    Claim(
        "C31",
        "use_ema=True keeps BN statistics consistent",
        "After fit() with an optimizer's use_ema=True (ema_momentum 0.99) the model is consistent: BN's moving "
        "statistics describe the inputs BN receives under the model's final (averaged) weights, as they do "
        "without EMA.",
        "Keras optimizer docstring (use_ema: 'the EMA of the weights of the model'; fit() overwrites the "
        "model's variables with their moving average after the last epoch); keras-team/keras#18949 (EMA in "
        "optimizers); Keras 3 backend/*/trainer.py fit (finalize_variable_values(self.trainable_weights)); "
        "Izmailov et al. 2018 (SWA: recompute BN statistics for averaged weights)",
        expected=(
            Expect(REFUTED, mechanism="trainable_only_averaged",
                   why="fit() replaces only the trainable weights by their EMA at the end "
                       "(finalize_variable_values(trainable_weights)); the moving statistics are non-trainable and "
                       "stay those accumulated with the raw weights, so they no longer match the weights they "
                       "normalise"),
        ),
        note=("Dense(6) -> BN(momentum 0) -> tanh -> Dense(1) from fixed weights, 20 full-batch SGD steps on 64 "
              "examples (learning rate 0.2, 0 for the last step), once with use_ema=True and once without (the "
              "twin: the same raw trajectory). With BN momentum 0 and a last step that cannot move the weights, "
              "the moving statistics must equal the batch statistics of Dense(x) under the final weights within "
              "C03's float32 bound (dot-product rounding propagated into the statistics); the run without EMA "
              "is checked to do exactly that (the design's control). The statistic is the distance of the moving "
              "statistics from the final weights' batch statistics over that bound: rounding cannot exceed 1, "
              "and the raw-weights alternative must (power). Mechanism: the moving statistics are within the "
              "bound of the raw weights' statistics while the kernel differs from the twin's (also recorded: "
              "whether they are bitwise the twin's). Recorded for scale: max |log(data variance / moving "
              "variance)| with and without EMA, and the MSE of the final model with the stored vs re-estimated "
              "statistics (float64 forward). Measured: "
              "refuted everywhere. Keras 3.15.1 and keras-nightly 3.16.0.dev on TensorFlow, JAX and torch: the "
              "moving variance is 0.106 from the final weights' batch variance (2.3e4 x the bound; mean 0.040, "
              "1.9e4 x) and within 0.02 x the bound of the raw weights' statistics, bitwise the twin's; max "
              "|log(data var / moving var)| 0.198 with EMA vs <= 3.2e-7 without; MSE 1.82 with the stored "
              "statistics, 1.76 re-estimated (0.77 without EMA: twenty steps of EMA 0.99 average mostly early "
              "weights). tf_keras 2.21: 0.178 (6.4e4 x), |log ratio| 0.491, MSE 4.99 vs 4.93 (its averages start "
              "from the initial weights, Keras 3's from the first step's)."),
        advice=("after training with use_ema=True (or any weight averaging: SWA, Polyak), recompute BN's moving "
                "statistics with the averaged weights: run the training data through the model in training mode "
                "with the trainable weights frozen (or set each BN's statistics from a forward pass, PreciseBN) "
                "before evaluating or exporting"),
    ),
    Claim(
        "C32",
        "zero sample_weight rows stay out of BN statistics",
        "Rows given sample_weight 0 (a batch padded to a fixed size with zero rows, half of it here) do not "
        "enter BN's statistics: after one fit() step with momentum 0 the moving mean and variance are those "
        "of the rows with weight 1; case sample_weight_and_mask also passes the padding to BN as its mask.",
        "tensorflow/tensorflow#30161 (BatchNormalization ignores the mask when computing mean/variance; padded "
        "samples bias the statistics), pytorch/pytorch#70529 (BatchNorm on padded variable-length batches); "
        f"{KD} (call argument `mask`; sample weights are an argument of fit()'s loss, not of layers)",
        expected=(
            Expect(HOLDS, case="weighting=sample_weight_and_mask",
                   why="BN's mask excludes the masked rows from the batch mean and variance (K10)"),
            Expect(REFUTED, mechanism="padded_rows_counted",
                   why="(sample_weight alone) sample_weight only weights the loss; BN never sees it, so the zero "
                       "rows enter the batch statistics and the moving statistics (the mean is pulled toward 0 by the "
                       "padded fraction)"),
        ),
        note=("BatchNormalization(momentum=0) (randomised gamma/beta) in a Functional model, MSE to random "
              "targets, SGD(0), one fit() step on 16 rows of mean ~5 plus 16 zero rows with sample_weight 0; "
              "the mask case adds a boolean input passed as bn(x, mask=keep). Weighted-rows reference: "
              "reference.ema_bounds of the 16 rows, scaled to a 32-element reduction, plus Keras' count + 1e-7 "
              "divisor; the all-rows alternative must lie outside it (power), and the refutation must match the "
              "statistics of all 32 rows within their bound. Measured: "
              "the same on every run (Keras 3.15.1 and keras-nightly 3.16.0.dev on TensorFlow, JAX and torch; "
              "tf_keras 2.21): with sample_weight alone the moving mean is [3.27, 2.14, 2.55], the statistics of "
              "all 32 rows (within 0.04-0.08 x their bound), not the weighted rows' [6.54, 4.27, 5.11] (2.0e5 x "
              "the bound); with the mask as well it is the weighted rows' within 0.03 x the bound."),
        advice=("don't rely on sample_weight=0 to hide padding from BN: pass the padding as BN's mask "
                "(bn(x, mask=keep), or a Masking layer upstream for sequences), drop the padded rows, or pad "
                "with real examples (repeat the batch) instead of zeros"),
    ),
    Claim(
        "C33",
        "JAX stateless_call loops train BN",
        "A custom JAX training loop (jax.jit of model.stateless_call + jax.value_and_grad + "
        "optimizer.stateless_apply, 3 batches) that writes the final variables back to the model leaves BN's "
        "moving statistics (momentum 0.5) with the 3 EMA updates of the batches' statistics.",
        "keras-team/keras#20378 (the keras.io JAX training-loop guides called stateless_call without "
        "training=True and did not manage the non-trainable state); keras.io 'Writing a training loop from "
        "scratch in JAX'; Keras 3 layers/layer.py stateless_call (returns the updated non-trainable variables)",
        expected=(
            Expect(HOLDS, case="variant=training_and_writeback",
                   why="with training=True stateless_call runs BN in training mode and returns the updated moving "
                       "statistics, which the loop threads through its state and writes back"),
            Expect(REFUTED, case="variant=no_training_arg", mechanism="training_defaults_false",
                   why="stateless_call's training argument defaults to inference mode: BN normalises with the "
                       "moving statistics and returns them unchanged, so the loop never updates them"),
            Expect(REFUTED, mechanism="state_not_written_back",
                   why="(variant no_writeback) stateless_call never touches the model's variables: the updated "
                       "statistics live only in the loop's returned state, and a loop that writes back only the "
                       "trainable variables leaves the model's moving statistics at their initial values"),
        ),
        note=("Sequential([Input((3,)), BatchNormalization(momentum=0.5), Dense(1)]) with randomised BN state "
              "(BN first: its statistics do not depend on the weights), SGD(0.1), 3 batches of 16. Variants: "
              "training=True with every variable written back (the guide as corrected in #20378); the same loop "
              "without training=; training=True but only the trainable variables written back. Reference: 3 "
              "chained EMA updates (reference.ema_bounds accumulated); the unchanged state must lie outside the "
              "bound (power). Mechanisms: the loop's returned non-trainable state bitwise the initial one "
              "(inference mode); the loop's state within the 3-update bound while the model's variables are "
              "bitwise initial (not written back). JAX backend only (C03 covers fit(); TensorFlow and torch "
              "loops update the variables in place). Measured: "
              "Keras 3.15.1 and keras-nightly 3.16.0.dev (JAX 0.10.2): training_and_writeback holds (7.3e-8 from "
              "the 3 updates, 0.03 x the bound); no_training_arg is refuted with the loop's state bitwise the "
              "initial one (the model's moving mean 2.36 from the 3 updates, 1.4e6 x the bound); no_writeback is "
              "refuted with the loop's state within 0.03 x the bound of the 3 updates and the model's statistics "
              "bitwise initial. Keras 3.16's call-context fix (#23364, C03) does not change either default."),
        advice=("in a JAX training loop call model.stateless_call(trainable, non_trainable, x, training=True), "
                "carry the returned non_trainable_variables into the next step, and after the loop assign both "
                "trainable and non-trainable values back to the model (for v, val in "
                "zip(model.non_trainable_variables, ...): v.assign(val)) before predicting or saving"),
    ),
)
