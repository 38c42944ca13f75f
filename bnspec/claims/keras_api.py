"""Keras API arguments: What Keras' documentation promises about BatchNormalization's arguments.

Tests: tests/claims/test_keras_api.py."""

from bnspec.claims._model import Claim, Expect, FUSED_UNBIASED, HOLDS, KD, PAPER, REFUTED

ORDER = 40
TITLE = 'Keras API arguments'

CLAIMS = (
    Claim(
        "K08",
        "initial state and defaults",
        "A new BN layer starts with gamma = 1, beta = 0, moving mean = 0 and moving variance = 1, and "
        "defaults to momentum 0.99 and epsilon 1e-3.",
        f"{KD} (constructor defaults)",
    ),
    Claim(
        "K09",
        "mixed_float16 computes in float32",
        "Under the mixed_float16 policy BN keeps float32 variables and computes in float32, returning "
        "float16: the output is the float32 result rounded once to float16.",
        "Keras mixed-precision guide; BatchNormalization source (autocast of the computation)",
        note="inputs with mean 200 make sum(x^2) overflow float16 (> 65504): a float16 computation "
        "would give inf/NaN",
        expected=(
            Expect(REFUTED, flavour="keras3", versions="<3.2", case="dtype=mixed_float16,training=False",
                   mechanism="variables_read_as_float16", change="keras#19391",
                   why="before Keras 3.2 (PR #19391 made BN's weights autocast=False) gamma, beta and the moving "
                       "statistics are read through autocast, i.e. rounded to float16, before the float32 "
                       "computation: in inference a moving mean of 200 loses its fraction below 0.125"),
            Expect(HOLDS),
        ),
    ),
    Claim(
        "K10",
        "a mask excludes steps from the statistics",
        "A mask excludes the masked time steps from the batch mean and variance in training mode.",
        f"{KD} (call argument `mask`)",
    ),
    Claim(
        "K11",
        "synchronized=True on one replica = plain BN",
        "synchronized=True on a single replica gives the same outputs and moving statistics as plain BN.",
        f"{KD} (argument `synchronized`)",
    ),
    Claim(
        "K12",
        "renorm=True: plain inference",
        "With renorm=True, inference uses the moving statistics exactly like plain BN: same weights "
        "give the same inference output.",
        f"{KD} (argument `renorm`); Ioffe 2017, Batch Renormalization",
    ),
    Claim(
        "K15",
        "axis is the feature axis",
        "`axis` names the feature axis: BN normalises over every other axis (axis=-1 for NHWC and "
        "dense inputs, axis=1 for NCHW).",
        f"{KD} (argument `axis`)",
    ),
    Claim(
        "K16",
        "moving variance is biased for every rank",
        "The moving variance tracks the biased (1/m) batch variance for every input rank: dense (2-D) and "
        "convolutional (4-D, NHWC or NCHW) inputs alike.",
        f"{KD} (moving_var = moving_var * momentum + var(batch) * (1 - momentum)); {PAPER} Algorithm 1",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="layout=nhwc_axis-1", why=FUSED_UNBIASED, mechanism="unbiased_moving_variance"),
            Expect(REFUTED, flavour="tfkeras", case="layout=nchw_axis1", why=FUSED_UNBIASED, mechanism="unbiased_moving_variance"),
            Expect(HOLDS),
        ),
        advice="moving variances of Keras 2 conv layers are already m/(m-1)-corrected while Keras 3's are not; "
        "keep that in mind when porting weights between Keras 2, Keras 3 and PyTorch",
    ),
    Claim(
        "K17",
        "renorm=True: training output with r and d",
        "With renorm=True, a training-mode call outputs gamma * ((x - mu_B) / sigma_B * r + d) + beta, where "
        "sigma_B = sqrt(var_B + epsilon) (biased batch variance), sigma_R = max(renorm_stddev, sqrt(epsilon)), "
        "r = clip(sigma_B / sigma_R, rmin, rmax) and d = clip((mu_B - renorm_mean) / sigma_R, -dmax, dmax), from "
        "the renorm statistics as they were before this batch's update (r and d unclipped without "
        "renorm_clipping).",
        f"{KD} (arguments `renorm`, `renorm_clipping`); Ioffe 2017, Batch Renormalization, Algorithm 1; "
        "keras-team/keras PR #22047 (renorm re-added in 3.14: _renorm_correction_and_moments, _compose_transforms); "
        "tf_keras BatchNormalization._renorm_correction_and_moments",
        note="The renorm statistics are set away from the batch's (renorm_mean N(0, 2), renorm_stddev in [0.5, 3], "
        "two features with renorm_stddev 0.01 below sqrt(epsilon) = 0.0316, where the floor decides), so that plain "
        "BN's output, the unfloored sigma_R and (clipping=rmax_dmax: rmax 1.5, rmin 1/1.5, dmax 0.5, clipping most "
        "features) the unclipped r and d each lie beyond twice the bound (verdict.power). The bound is bn_bound for "
        "the composed scale r*gamma and offset d*gamma + beta, plus the float32 errors of r and d (from the batch "
        "statistics' reduction errors, the sqrt, the divisions and the clip limits' rounding) carried through "
        "x_hat * r*gamma + d*gamma. Keras 3 before 3.14 has no renorm argument: not applicable there. "
        "renorm_clipping's validation at construction is A16's.",
        advice="with renorm=True the training output depends on renorm_mean/renorm_stddev, not only on the batch: "
        "restore those variables with the checkpoint when resuming training, and expect r, d to stay at their "
        "clip limits early in training when renorm_clipping is tight",
    ),
    Claim(
        "K18",
        "float64 layers compute in float64",
        "A BatchNormalization layer with dtype='float64' computes in float64: its training- and inference-mode "
        "outputs are finite, float64, and equal the float64 reference within float64 rounding (float32's error "
        "bound scaled by 2^-29), and one training step moves its float64 moving statistics to the EMA within "
        "float64 rounding.",
        f"{KD} (BatchNormalization.call: compute_dtype = result_type(inputs.dtype, 'float32'), 'BN is prone to "
        "overflow with float16/bfloat16 inputs, so we upcast to float32'); Keras dtype policies",
        expected=(
            Expect(REFUTED, flavour="keras3", backend="torch", mechanism="computes_in_float32",
                   why="on the torch backend Keras' result_type(inputs.dtype, 'float32') of a torch.float64 tensor is "
                       "float32: the float64 layer casts its input down and normalises and averages in float32 (the "
                       "output is cast back to float64); at input mean 1e4 torch's one-pass float32 variance "
                       "E[x^2] - E[x]^2 even comes out negative and the training output is NaN"),
            Expect(REFUTED, flavour="tfkeras", case="mode=training", mechanism="momentum_rounded_to_float32",
                   why="tf_keras' moving-average update converts 1 - momentum to a float32 tensor before casting it "
                       "to the variable's float64 (_assign_moving_average: tf.convert_to_tensor(1.0 - momentum)): "
                       "the EMA weight is off by float32 rounding (0.1 becomes 0.100000001490116), a relative "
                       "error of ~5e-9 in the moving variance; the outputs are float64-exact"),
            Expect(HOLDS),
        ),
        note="Inputs of mean 1 and 1e4 (standard deviation ~1): at 1e4 a float32 computation is off by ~1e-3 "
        "(a float32 layer's own bound), float64 by ~1e-11. The bound is reference.bn_bound (and ema_bounds) times "
        "2^-29 (= 2^-53 / 2^-24: the bounds are first order in the unit roundoff), doubled because the numpy float64 "
        "reference rounds too. Inference uses moving statistics near the input (mean 1 or 1e4, variance in "
        "[0.5, 4]). The power check is the same formula evaluated in numpy float32. Keras on JAX holds float64 only "
        "with jax_enable_x64 (a float64 variable comes back float32): not applicable there, measured. Measured: "
        "holds on TensorFlow (at mean 1e4 the training output is 2.0e-12 from the reference, 0.001 of the float64 "
        "bound; moving variance relative error 3.6e-16; a layer computing in float32 is ~1e-3 off); refuted on "
        "torch (outputs 1.3e-7 off at mean 1, 3.0e-4 at 1e4 inference, within the float32 bound; 120 of 480 "
        "training outputs NaN at 1e4); tf_keras' outputs are float64-exact but its moving statistics are ~5e-9 "
        "relative off (the float32 decay), refuting the training cases.",
        advice="on Keras 3's torch backend do not rely on dtype='float64' for BatchNormalization: it computes in "
        "float32 (and at large input means its one-pass variance can turn negative: NaN); standardise inputs, or "
        "use the TensorFlow backend for float64 work",
    ),
)
