"""Field traps: numerical edge cases. What users report about BN at the edges of its arithmetic: 16-bit
variables, batches with one value per channel, tiny epsilons, NaN inputs, masks (fully masked, 4-D,
fractional), constant features, renorm's moving variance, and tf_keras' Bessel correction.

Tests: tests/claims/test_field_numerics.py. Single-layer experiments, compared with the float64
reference (bnspec.reference) within float32 bounds; claims about NaN count non-finite values."""

from bnspec.claims._model import KD, PAPER, PRECISE, Claim, Expect, HOLDS, REFUTED

ORDER = 210
TITLE = "Field traps: numerical edge cases"

SIXTEEN_BIT_VARIABLES = (
    "Keras 3 creates gamma, beta and the moving statistics with the layer's variable dtype, which is "
    "bfloat16/float16 under a pure 16-bit policy; the update is computed in float32 and rounded into the "
    "16-bit variable, so an EMA step smaller than half a 16-bit ulp is lost and the statistics stall short "
    "of the stream's value"
)
FUSED_IGNORES_MASK = (
    "tf_keras sends 4-D inputs through the fused kernel, which has no mask input: it warns ('Masking is not "
    "supported with fused=True ... mask will be ignored') and normalises with the statistics of every position"
)
KERAS315_BOOL_MASK = (
    "since keras-team/keras PR #22392 (v3.15.0) the mask is cast to bool and applied with ops.where, so any "
    "non-zero weight counts as a full step (measured on 3.15.1 and 3.16.0.dev)"
)
RENORM_STDDEV = (
    "with renorm=True the layer tracks moving_stddev = EMA of sqrt(var + eps) and sets moving_variance = "
    "relu(moving_stddev^2 - eps); by Jensen (E sqrt(v))^2 <= E v, so the moving variance is smaller than the "
    "EMA of the variances whenever the batch variances vary"
)

MIXED_AUTOCAST = (
    "Keras 3.0-3.1 autocast every float variable read inside call() to the compute dtype, the moving statistics "
    "too: under a mixed policy each update starts from the 16-bit rounding of the float32 variable, so the "
    "average moves in 16-bit steps and stalls like a 16-bit variable's; 3.2 (keras#19391) added "
    "add_weight(autocast=False) for them"
)

CLAIMS = (
    Claim(
        "C06",
        "16-bit dtype policy: moving statistics converge",
        "A BN layer created with a 16-bit dtype policy, pure (dtype='bfloat16' or 'float16') or mixed "
        "('mixed_bfloat16' or 'mixed_float16': 16-bit computation, float32 variables), and trained on a "
        "stationary stream follows the moving-statistics EMA that float32 arithmetic gives (within float32 "
        "rounding) and never overflows to inf, as a float32 layer does.",
        "Keras 3 BatchNormalization.build (add_weight without a dtype: the layer's variable dtype) and call "
        "(float32 update assigned into the variable); tf_keras BatchNormalization._param_dtype ('Raise "
        "parameters of fp16 batch norm to fp32'); Keras mixed precision guide (mixed_* policies keep float32 "
        "variables: claim K09)",
        expected=(
            Expect(HOLDS, flavour="tfkeras",
                   why="tf_keras raises the parameters of a float16/bfloat16 layer to float32 (_param_dtype)"),
            Expect(REFUTED, flavour="keras3", versions="<3.2", case="dtype=mixed_float16,stream=wide",
                   mechanism="float16_overflow", change="keras#19391",
                   why=MIXED_AUTOCAST + "; the variance near 1e5 passes float16's maximum when it is read: +inf"),
            *(Expect(REFUTED, flavour="keras3", versions="<3.2", case=f"dtype={policy}", mechanism="rounded_16bit_ema",
                     change="keras#19391", why=MIXED_AUTOCAST) for policy in ("mixed_bfloat16", "mixed_float16")),
            Expect(HOLDS, flavour="keras3", case="dtype=mixed_bfloat16",
                   why="a mixed policy keeps float32 variables and Keras 3 upcasts 16-bit inputs to float32 before "
                       "the moments and the update (BatchNormalization.call): the float32 EMA"),
            Expect(HOLDS, flavour="keras3", case="dtype=mixed_float16",
                   why="a mixed policy keeps float32 variables and Keras 3 upcasts 16-bit inputs to float32 before "
                       "the moments and the update (BatchNormalization.call): the float32 EMA"),
            Expect(REFUTED, flavour="keras3", case="dtype=float16,stream=wide", mechanism="float16_overflow",
                   why="Keras 3 keeps the moving variance in float16, and the EMA of a variance near 1e5 passes "
                       "float16's maximum 65504: the stored value rounds to +inf and stays inf"),
            Expect(REFUTED, flavour="keras3", mechanism="rounded_16bit_ema", why=SIXTEEN_BIT_VARIABLES),
        ),
        note=("300 training calls (momentum 0.99) on one fixed 64 x 8 batch exactly representable in both 16-bit "
              "formats: 'moderate' (mean ~0.3, variance ~1.3, moving statistics starting at 0/1) and 'wide' "
              "(variance ~1e5). The moving statistics are compared with the exact float64 EMA (bound: "
              "reference.ema_bounds per step, summed over the contracting EMA); the mechanism replays the EMA "
              "with every update rounded to the variable's 16-bit dtype (ml_dtypes) and requires the layer "
              "within 2 ulps of that replay (rounding is monotone and a one-ulp difference shrinks by the "
              "momentum, so two replays never drift further apart; 2 ulps cover a binade boundary). Believed "
              "(TRAPS.md): holds tf_keras, refuted Keras 3 (stall; float16 overflow). Measured as believed on "
              "all three Keras 3 backends and keras-nightly, identically: bfloat16 keeps the moving variance at "
              "exactly 1.0 (exact EMA 1.286) and the mean at 0.25 (0.285), both stalled (one more call changes "
              "nothing), and the wide stream's variance at 74624 (95029); float16 lags (variance 1.252) and its "
              "wide stream's moving variance is +inf (the EMA passes 65504 after ~110 calls); every value is the "
              "16-bit replay's. tf_keras' float32 variables follow the float32 EMA within its bound. The mixed "
              "policies (dtype=mixed_bfloat16/mixed_float16: the same streams, the input cast to the 16-bit compute "
              "dtype changes nothing since it is exactly representable) hold everywhere: the moving statistics "
              "are the float32 EMA's within its bound; a layer that averaged in the 16-bit compute dtype (keras-core "
              "before PR #412, the mixed-16bit-moving-average mutant) stalls hundreds of bounds away."),
        advice=("never build BN under a pure 'bfloat16'/'float16' policy in Keras 3: use 'mixed_bfloat16' / "
                "'mixed_float16' (float32 variables), or give the BN layers dtype='float32'"),
    ),
    Claim(
        "C08",
        "one value per channel keeps the moving variance finite",
        "A training call on a 4-D or 5-D batch with one value per channel (N*H*W = 1, e.g. shape (1, 1, 1, C) "
        "in an image-pooling or squeeze-excitation branch with batch size 1) leaves the moving variance "
        "finite: momentum * old + (1 - momentum) * 0, as for a dense batch of one; the output is beta.",
        "tensorflow/tensorflow#34062 and #48845 (NaN moving_variance with fused=True on GPU for input "
        "(1, 1, 1, C)); tensorflow/models#5066 (deeplabv3+ with batch_size=1: NaN image_pooling moving "
        "variance); PR tensorflow/tensorflow#40338 review (the CPU kernel avoids NaN for N < 2, cuDNN "
        "returns NaN); tf_keras BatchNormalization._fused_batch_norm",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="device=gpu,shape=nhwc_1x1x1",
                   mechanism="nonfinite_moving_variance",
                   why="not measured here (no GPU was lent): the reports show cuDNN's fused kernel returning a NaN "
                       "unbiased variance for one value per channel, which tf_keras' fused update writes"),
            Expect(REFUTED, flavour="tfkeras", case="device=gpu,shape=nchw_1x1x1",
                   mechanism="nonfinite_moving_variance",
                   why="not measured here (no GPU was lent): as for NHWC, the cuDNN fused kernel"),
            Expect(REFUTED, flavour="tfkeras", case="device=gpu,shape=ndhwc_1x1x1x1",
                   mechanism="nonfinite_moving_variance",
                   why="not measured here (no GPU was lent): as for NHWC, the cuDNN fused kernel"),
            Expect(HOLDS, flavour="tfkeras",
                   why="on CPU tf_keras' fused kernel returns variance 0 for one value per channel (its Bessel "
                       "factor is guarded for N < 2) and tf_keras adds no m/(m-1) factor of its own "
                       "(_bessels_correction_test_only is True)"),
            Expect(HOLDS, why="Keras 3 has no fused kernel: the variance of one value is 0 on every backend"),
        ),
        note=("A layer with randomised state (probes.make_bn) is called once with training=True on shape "
              "(1, 1, 1, 8) (NHWC), (1, 8, 1, 1) (NCHW, axis=1), (1, 1, 1, 1, 8) (5-D) and, as the control the "
              "reports compare with, (1, 8) (dense); the moving statistics are counted for non-finite values "
              "and otherwise compared with the EMA of mean = x, variance = 0 (reference.ema_bounds), the output "
              "with beta (reference.batch_of_one_bound). Believed (TRAPS.md): refuted on tf_keras (NaN on GPU, "
              "and on CPU through an m/(m-1) = 1/0 factor), holds on Keras 3. Measured on CPU: holds everywhere, "
              "tf_keras included (moving variance 0.99 x old, exactly as tensorflow#34062 itself reported for "
              "CPU): tf_keras' own Bessel helper is a no-op outside its legacy tests, and the CPU kernel guards "
              "N < 2. The GPU cases need a GPU: their expectations come from the reports, not from a measurement."),
        advice=("don't train BN on one value per channel (batch size 1 after global pooling): on a GPU with "
                "tf_keras' fused kernel the moving variance becomes NaN; freeze that BN, use a larger batch, or "
                "use LayerNormalization/GroupNormalization there"),
    ),
    Claim(
        "C09",
        "epsilon is used as given for every input rank",
        "With epsilon = 1e-8 (any epsilon below 1.001e-5, e.g. PyTorch's 1e-5 or 0), BN computes "
        "gamma * (x - mean) / sqrt(var + epsilon) + beta with that epsilon for dense and convolutional "
        "(NHWC and NCHW) inputs alike, in inference and in training mode.",
        "tensorflow/tensorflow#37768 ('min_epsilon of fused_batch_norm is incorrect'), #8090, PR "
        "tensorflow/tensorflow#53065 (TensorFlow's nn_impl.fused_batch_norm used to raise epsilon to 1.001e-5, "
        "'a requirement by CUDNN'); tf_keras sends 4-D inputs through fused_batch_norm",
        expected=(
            Expect(HOLDS, why="TensorFlow 2.21's fused_batch_norm passes epsilon to the kernel unchanged, and Keras 3 "
                              "uses the exact epsilon in its own formula on every backend"),
        ),
        note=("Inference: moving mean 0, moving variance 1e-6, gamma 1, beta 0, x ~ 1e-3 (with epsilon 1e-8 "
              "the output is ~0.995 x 1000 x; with 1.001e-5 it would be ~0.301 x 1000 x); training: x ~ "
              "N(0, 1e-3^2), batch variance ~1e-6. The output is compared with the reference of epsilon 1e-8 "
              "(reference.bn_bound), and the clamped epsilon must be told apart (verdict.power). Believed "
              "(TRAPS.md): refuted on tf_keras for 4-D inputs (silently 1.001e-5). Measured: holds everywhere "
              "on CPU with TensorFlow 2.21, tf_keras' fused path included: the clamp is gone from "
              "nn_impl.fused_batch_norm. GPU cases (cuDNN) need a GPU; not measured here."),
        advice=("when porting weights with a small epsilon (PyTorch's 1e-5, ONNX models) check which TensorFlow "
                "you deploy on: older releases clamp the fused path's epsilon to 1.001e-5, which changes "
                "channels whose variance is ~1e-5 or smaller"),
    ),
    Claim(
        "C10",
        "a NaN example poisons the batch; masked NaNs do not",
        "(a) In training mode one NaN in one example makes that feature's output NaN for every example of the "
        "batch and its moving statistics NaN for good (every later inference output of that feature is NaN), "
        "while in inference mode only that example's output is NaN. (b) NaN values at masked positions (the "
        "`mask` argument) do not reach the batch statistics, the moving statistics or the unmasked outputs.",
        f"{PAPER} §3.1 (normalisation couples the examples of a batch); {PRECISE}; keras-team/keras PR #22392 "
        "(v3.15.0: mask applied with ops.where instead of mask * inputs, so NaN * 0 no longer leaks); tf_keras "
        "BatchNormalization (tf.nn.weighted_moments with the mask as frequency weights)",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="part=masked_nan", mechanism="masked_nan_propagates",
                   why="tf_keras weights the inputs by the mask (tf.nn.weighted_moments multiplies x by the "
                       "frequency weights), and NaN x 0 = NaN: every feature holding a masked NaN gets NaN batch "
                       "and moving statistics"),
            Expect(REFUTED, flavour="keras3", versions="<3.15", case="part=masked_nan", mechanism="masked_nan_propagates",
                   change="keras#22392",
                   why="before Keras 3.15 (PR #22392) the mask multiplies the inputs (NaN x 0 = NaN), so a masked "
                       "NaN reaches the batch and moving statistics of its feature"),
            Expect(HOLDS, why="a batch statistic sums over the batch, so one NaN reaches every example of its "
                              "feature and the moving statistics, and nothing resets them; Keras 3.15+ selects "
                              "unmasked values with ops.where, so masked NaNs never enter a sum"),
        ),
        note=("(a) x: 32 x 4 with x[3, 0] = NaN, a layer with randomised state: NaN counts per feature in an "
              "inference call, a training call, the moving statistics, and a later inference call on clean "
              "data; the finite parts are compared with the float64 reference. (b) x: 8 x 10 x 4, ~30% of the "
              "steps masked, NaN at the masked steps of features 0 and 2, 50.0 at those of features 1 and 3 (so "
              "that an ignored mask would show); the moving statistics and unmasked outputs are counted for "
              "non-finite values and compared with the statistics of the unmasked steps. Believed (TRAPS.md): (a) "
              "holds everywhere; (b) holds on Keras >= 3.15, refuted on tf_keras (and, from the source, on Keras "
              "3.0-3.14: not measured). Measured as believed: (a) NaN counts [1, 0, 0, 0] in inference, "
              "[32, 0, 0, 0] in training and afterwards; (b) tf_keras' moving statistics are NaN exactly in "
              "features 0 and 2."),
        advice=("check for NaN/inf before the first BN layer (tf.debugging.check_numerics, or a finite-check "
                "in the input pipeline): one bad example in one training batch destroys that feature's moving "
                "statistics permanently; with tf_keras, or Keras before 3.15, zero masked positions out "
                "instead of leaving NaN there"),
    ),
    Claim(
        "C15",
        "a fully masked batch leaves the moving statistics alone",
        "A training call in which every step is masked (mask argument all False, or a Masking layer that "
        "masks every step) leaves the moving mean and variance unchanged.",
        "Keras 3 BatchNormalization._moments (masked sums divided by count + backend.epsilon(), so 0 for an "
        "empty mask, and the update still runs); keras-team/keras test_input_fully_masked (checks the output "
        "only); tf_keras tf.nn.weighted_moments (divide_no_nan: 0 for zero total weight)",
        expected=(
            Expect(REFUTED, mechanism="pulled_toward_zero",
                   why="with no unmasked step the batch mean and variance come out as 0 (0 / (0 + 1e-7) in Keras "
                       "3, divide_no_nan in tf_keras) and the moving-average update still runs, so both moving "
                       "statistics shrink to momentum x old"),
        ),
        note=("x: 4 x 6 x 3 with mean 3, a layer with randomised state (moving mean N(0, 2), variance in "
              "[0.5, 4]), one training call with everything masked. 'Unchanged' is bitwise (verdict.equal); the "
              "mechanism compares the moving statistics with momentum x old (reference.ema with batch "
              "statistics 0, reference.ema_bounds). Believed (TRAPS.md): refuted everywhere. Measured: as "
              "believed, on every flavour and backend; the outputs of the masked batch are gamma x x / "
              "sqrt(epsilon) + beta (up to ~400 here), since they are normalised with mean 0 and variance 0."),
        advice=("filter out batches (or sequences) whose mask is all False before a training step: each such "
                "step multiplies the moving mean and variance by the momentum; and every batch gets the same EMA "
                "weight however few unmasked steps it has"),
    ),
    Claim(
        "C16",
        "a constant feature: inference amplifies by 1/sqrt(eps)",
        "If a feature is constant for n training steps (a dead ReLU unit, a padded column), its moving "
        "variance decays to momentum^n * v0 with no floor, and inference maps a deviation d from that "
        "constant to gamma * d / sqrt(momentum^n * v0 + epsilon): about gamma * d / sqrt(epsilon) (31.6 "
        "gamma d at the default epsilon) once momentum^n * v0 << epsilon.",
        f"{KD} (moving_var = moving_var * momentum + var(batch) * (1 - momentum)); keras-team/keras test "
        "test_bachnorm_ignore_masked_values (expects moving_variance 0.0 for a constant feature)",
        expected=(
            Expect(HOLDS, why="the batch variance of a constant feature is exactly 0, so the EMA only decays; "
                              "epsilon is the only floor"),
        ),
        note=("150 training calls (momentum 0.9) with feature 0 = 2.0 in every example and the other features "
              "random, dense (32 x 4) and NHWC (4 x 3 x 3 x 4), then inference on 2.1. The moving variance is "
              "compared with 0.9^150 (four float32 roundings per step: relative bound 4 n u), the moving mean "
              "with its EMA, the output with the inference formula of the layer's statistics "
              "(reference.bn_bound); the power check is the output the layer would give had the variance not "
              "decayed. Believed (TRAPS.md): holds everywhere. Measured: holds everywhere (moving variance "
              "4.95e-7 = 0.9^150 x 3.6 at 0.11 of its float32 bound; a deviation of 0.1 comes out as 31.6 x gamma x "
              "0.1, i.e. 1/sqrt(epsilon))."),
        advice=("after training, look for BN features with a moving variance far below epsilon: at inference "
                "they turn tiny deviations (a different padding, numerical noise) into large activations; "
                "prune or freeze such units, or raise epsilon"),
    ),
    Claim(
        "C22",
        "renorm=True: moving variance is the EMA of variances",
        "With renorm=True, after N training steps the moving variance equals the momentum-weighted EMA of the "
        "batch variances, as it does without renorm.",
        "keras-team/keras PR #22047 (renorm re-added in v3.14.0; _update_renorm_statistics); tf_keras "
        "BatchNormalization (true_branch_renorm); Ioffe 2017, Batch Renormalization",
        expected=(
            Expect(REFUTED, mechanism="ema_of_stddev", why=RENORM_STDDEV),
        ),
        note=("50 batches of 64 x 8 whose standard deviation alternates 0.5 / 2.0 (variances 0.25 / 4), momentum "
              "0.9; the moving variance is compared with the EMA of the batch variances (the claim) and with "
              "(EMA of sqrt(var + eps))^2 - eps (the mechanism), each within a float32 bound accumulated over "
              "the steps. Believed (TRAPS.md): refuted on tf_keras and Keras >= 3.14. Measured: refuted on "
              "every flavour and backend (1.61 instead of 2.17 on average); K12 (inference with set weights) is "
              "unaffected."),
        advice=("don't read a renorm layer's moving_variance as a variance estimate: it is (EMA of the standard "
                "deviations)^2 - epsilon, smaller than the EMA of the variances when batch variances fluctuate; "
                "re-estimate the statistics (bnspec.subjects.popstats) if you need the population variance"),
    ),
    Claim(
        "C26",
        "a mask is honoured for 4-D inputs",
        "For a 4-D input with a (B, H, W) mask, or a (B, H, 1) mask broadcast over W, training-mode BN "
        "computes the batch statistics (outputs and moving statistics) over the unmasked positions only.",
        "tf_keras BatchNormalization._fused_batch_norm ('Masking is not supported with `fused=True` ... For the "
        "moment `mask` will be ignored'); keras-team/keras PR #18921 (v3.0.2, masking), PR #20815 (v3.9.0, "
        "masks broadcast over a non-feature axis)",
        expected=(
            Expect(REFUTED, flavour="tfkeras", mechanism="mask_ignored", why=FUSED_IGNORES_MASK),
            Expect(REFUTED, flavour="keras3", versions="<3.9", case="mask_shape=bh1", mechanism="mask_count_not_broadcast",
                   change="keras#20815",
                   why="before Keras 3.9 (PR #20815) the mask's weights are summed as given, not broadcast to the "
                       "input's shape: a (B, H, 1) mask counts each kept (b, h) once instead of W times, so the "
                       "mean comes out W times too large"),
            Expect(HOLDS, why="Keras 3 applies the mask for any input rank (broadcast to the input's shape)"),
        ),
        note=("x: 8 x 5 x 5 x 4 (NHWC), masked positions set to 50.0 so that an ignored mask moves the "
              "statistics; momentum 0. The unmasked outputs and the moving statistics are compared with the "
              "reference over the unmasked positions (reference.bn_bound, ema_bounds); the mechanism compares "
              "outputs and moving mean with the statistics of every position and records the warning. Believed "
              "(TRAPS.md): refuted on tf_keras, holds on Keras 3. Measured as believed, for both mask shapes."),
        advice=("with tf_keras, pass fused=False to a BN layer that must honour a mask on 4-D inputs (or mask by "
                "hand); Keras 3 honours it"),
    ),
    Claim(
        "C27",
        "a fractional mask weights steps in the statistics",
        "With a float mask containing 0.5, the batch mean and variance are the weighted statistics "
        "sum(w x) / sum(w) and sum(w (x - mean)^2) / sum(w).",
        "keras-team/keras PR #22392 (v3.15.0: the mask is cast to bool); Keras 3.0-3.14 multiplied by the "
        "cast mask; tf_keras tf.nn.weighted_moments(frequency_weights=mask)",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="tf_keras passes the mask as frequency weights to "
                                                 "tf.nn.weighted_moments"),
            Expect(REFUTED, flavour="keras3", versions="<3.15", mechanism="mask_weight_twice_in_variance",
                   change="keras#22392",
                   why="Keras 3.0-3.14 compute the variance as sum(w (w x - mean)^2) / sum(w): the weight multiplies "
                       "x a second time inside the square (the mean is the weighted one), which only 0/1 masks "
                       "survive"),
            Expect(REFUTED, flavour="keras3", mechanism="mask_binarised", why=KERAS315_BOOL_MASK),
        ),
        note=("x: 4 x 6 x 2, mask 0.5 on half the steps, 1 on most others and 0 on one; momentum 0, so the "
              "moving statistics are the batch statistics. They and the outputs are compared with the weighted "
              "statistics (the claim) and with the unweighted statistics of the steps whose mask is non-zero "
              "(the mechanism). Believed (TRAPS.md): holds on tf_keras and Keras 3.0-3.14, refuted on >= 3.15. "
              "Measured: holds on tf_keras; refuted on 3.15.1 and 3.16.0.dev on all backends (earlier Keras 3 "
              "releases not measured here)."),
        advice=("in Keras >= 3.15 a BN mask is boolean: to weight steps, weight the inputs or the loss instead "
                "of passing fractional masks"),
    ),
    Claim(
        "C28",
        "tf_keras: Bessel correction exactly when fused",
        "In tf_keras the moving variance is m/(m-1)-corrected exactly when the layer uses the fused kernel "
        "(4-D/5-D input, single axis 1/-1, float16/bfloat16/float32 compute dtype, no renorm, no "
        "virtual_batch_size, no adjustment, fused not False), and the biased batch variance otherwise.",
        "tf_keras BatchNormalization._raise_if_fused_cannot_be_used and build (fused eligibility); "
        "tensorflow/tensorflow#55545",
        expected=(
            Expect(HOLDS, flavour="tfkeras",
                   why="only the fused kernel returns the unbiased variance; every other path uses tf.nn.moments "
                       "(biased)"),
            Expect(HOLDS, flavour="keras3",
                   why="not measured: a claim about tf_keras (the test skips on Keras 3, which has no fused kernel "
                       "and always tracks the biased variance: K16)"),
        ),
        note=("Momentum 0, input 8 x 3 x 3 x 4 (m = 72 per channel): the moving variance is compared with the "
              "biased batch variance (virtual_batch_size=2: the mean of the ghost batches' biased variances, "
              "m = 18) and with m/(m-1) times it (verdict.power tells them apart). The eligibility is derived "
              "from the rules the claim lists, evaluated on each case's arguments and input (never read from "
              "the layer): the verdict is whether the variance is unbiased exactly where the rules say fused, "
              "and whether the layer's own `fused` flag agrees with the rules. "
              "tf_keras only (Keras 3 has neither a fused kernel nor these arguments; K16 covers its biased "
              "variance). Believed (TRAPS.md): holds. Measured: holds in every configuration."),
        advice=("when porting tf_keras weights, know which BN layers were fused (4-D float32/16 inputs, default "
                "arguments): their moving variance is unbiased, the others' biased"),
    ),
)
