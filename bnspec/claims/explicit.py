"""BN from scratch: ExplicitBatchNorm (bnspec.subjects.layers), coded from the paper, against Keras and the numpy reference.

Tests: tests/claims/test_explicit.py."""

from bnspec.claims._model import Claim, Expect, FUSED_UNBIASED, HOLDS, KD, NB, PAPER, REFUTED

ORDER = 120
TITLE = 'BN from scratch'

CLAIMS = (
    Claim(
        "E01",
        "explicit BN forward = Keras = reference",
        "ExplicitBatchNorm (bnspec.subjects.layers, coded from Algorithm 1) gives the same forward output as Keras' "
        "BatchNormalization and the numpy reference, in training mode, inference mode and when frozen.",
        f"{PAPER} Algorithms 1-2; {KD}; bnspec.subjects.layers",
    ),
    Claim(
        "E02",
        "gradients = the paper's formulas",
        "The gradients w.r.t. the input, gamma and beta of ExplicitBatchNorm and of Keras' layer equal the "
        "paper's chain-rule formulas (numpy reference).",
        f"{PAPER} §3 (backpropagation formulas after Algorithm 1)",
    ),
    Claim(
        "E03",
        "moving statistics agree after N updates",
        "After N training-mode updates the moving statistics of ExplicitBatchNorm, of Keras' layer and of "
        "the numpy EMA reference agree.",
        f"{KD} (update rule); bnspec.subjects.layers",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="shape=nhwc_axis-1", why=FUSED_UNBIASED, mechanism="unbiased_moving_variance"),
            Expect(REFUTED, flavour="tfkeras", case="shape=nchw_axis1", why=FUSED_UNBIASED, mechanism="unbiased_moving_variance"),
            Expect(HOLDS),
        ),
    ),
    Claim(
        "E04",
        "paper backward = autodiff",
        "The paper's backward formulas, used as a custom gradient (paper_gradient=True), equal automatic "
        "differentiation of the explicit forward pass.",
        f"{PAPER} §3",
    ),
    Claim(
        "E05",
        "popstats.recompute = Algorithm 2",
        "bnspec.subjects.popstats.recompute sets the moving statistics of either layer to Algorithm 2's population "
        "statistics (mean of batch means, m/(m-1) x mean of batch variances).",
        f"{PAPER} Algorithm 2 steps 8-10",
    ),
    Claim(
        "E06",
        "Keras and explicit models train alike",
        "The notebook's model with Keras' BN and with ExplicitBatchNorm, from identical weights on identical "
        "batches, stay equal for 100 training steps (to the divergence that rounding alone causes).",
        f"{NB} closing plan ('v2 with batch normalization explicitly coded'); bnspec.subjects.layers",
        note="threshold: 10x the divergence of the Keras model trained from weights perturbed by one float32 ulp "
        "(the rounding baseline); a control layer that normalises with the unbiased variance, trained the same "
        "100 steps, must exceed it",
    ),
    Claim(
        "E07",
        "trained accuracies agree within sampling error",
        "After the full cached training (10 epochs) the two models' test accuracies differ by less than the paired "
        "sampling error 6*sqrt(n01+n10)/n (McNemar: n01, n10 = test images only one of the models gets right).",
        f"{NB} closing plan; bnspec.subjects.layers",
        note="The tolerance is kept only with its control: the Keras model with its moving statistics lost (reset "
        "to 0 and 1, as a checkpoint of the trainable variables only leaves them), measured against the Keras model "
        "with the same paired rule, must fall outside it (about 1.3 points below, 1.5 tolerances, on the TensorFlow "
        "backend), else the case has no power; and each model must beat chance.",
    ),
    Claim(
        "E08",
        "ExplicitBatchNorm serialises",
        "ExplicitBatchNorm survives get_config/from_config and a .keras save/load with its statistics and outputs.",
        "Keras serialization guide; bnspec.subjects.layers",
    ),
)
