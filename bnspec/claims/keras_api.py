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
)
