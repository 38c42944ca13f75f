"""The claim registry: one record per documented claim about Batch Normalization. Data only.

A claim is a statement that is either true or false on a given Keras. Its tests measure, case by
case (one case per parametrisation), whether it holds, and record the numbers. `expected` says
what each case should observe, as an ordered list of `Expect` rules (the first that matches wins),
keyed by flavour, by a version range of that flavour's Keras, and optionally by a test parameter
(`case="entry=predict"`). A claim false on some flavour is *expected refuted* there: the suite
passes when observation and expectation agree, and fails when a verdict changes.

To add a claim: add a `Claim` here, then a test marked `@pytest.mark.claim("ID")` that measures it
(see tests/claims/ and README "Adding a claim").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bnspec.flavours import FAMILY

HOLDS, REFUTED = "holds", "refuted"
VERDICTS = (HOLDS, REFUTED)


@dataclass(frozen=True)
class Expect:
    verdict: str
    flavour: str | None = None  # keras3 (also matches keras-nightly) | keras-nightly | tfkeras | None (any)
    versions: str = ""  # PEP 440 specifier on the flavour's Keras version, e.g. ">=3.16"
    case: str = ""  # "param=value[,param=value]" limiting the rule to some parametrisations
    why: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")
        SpecifierSet(self.versions)  # validate early

    def matches(self, flavour: str, version: str | None, params: dict) -> bool:
        if self.flavour and self.flavour not in (flavour, FAMILY.get(flavour)):
            return False
        if self.versions and (version is None or Version(version) not in SpecifierSet(self.versions, prereleases=True)):
            return False
        for cond in filter(None, self.case.split(",")):
            name, _, value = cond.partition("=")
            if str(params.get(name.strip())) != value.strip():
                return False
        return True


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    source: str
    topic: str
    expected: tuple[Expect, ...] = (Expect(HOLDS),)
    note: str = ""  # shown in the report: what the evidence means
    advice: str = ""  # for a practitioner: what to do about it (report, "What surprised us")
    tags: tuple[str, ...] = field(default_factory=tuple)

    def expectation(self, flavour: str, version: str | None, params: dict) -> Expect:
        for rule in self.expected:
            if rule.matches(flavour, version, params):
                return rule
        raise LookupError(f"claim {self.id}: no expected verdict for {flavour} {version} {params}")


NB = "study notebook"
KD = "Keras docs, BatchNormalization"
PAPER = "Ioffe & Szegedy 2015"
PRECISE = "Wu & Johnson 2021, 'Rethinking \"Batch\" in BatchNorm'"
TORCH = "PyTorch docs, torch.nn.BatchNorm1d"
KERAS316 = ">=3.16.0.dev0"
HARDCODED_KERAS316 = (
    "from Keras 3.16 (seen in keras-nightly 3.16.0.dev) a training argument passed explicitly to a layer "
    "while building a Functional model wins over the outer flag again, as in Keras 2"
)
FUSED_UNBIASED = (
    "tf_keras runs 4-D inputs through TensorFlow's fused batch-norm kernel, which normalises with the "
    "biased variance but feeds the Bessel-corrected (unbiased, m/(m-1)) batch variance into the moving "
    "variance"
)
HARDCODED_KERAS3_FUNCTIONAL = (
    "Keras 3's Functional model passes an explicit outer training flag (predict/evaluate pass False) "
    "to every layer, overriding the flag baked into the graph; only model(x) (training=None) keeps it"
)

CLAIMS: tuple[Claim, ...] = (
    # ------------------------------------------------------------------ training vs inference
    Claim(
        "K01",
        "In training mode BN normalises each feature with the mini-batch mean and the biased (1/m) "
        "mini-batch variance, then scales by gamma and shifts by beta.",
        f"{PAPER} §3 Algorithm 1; {KD} ('During training'); {NB} cells 0 and 397",
        "training vs inference",
    ),
    Claim(
        "K02",
        "In inference mode (training=False, or a plain call outside fit) BN normalises with the moving "
        "mean and moving variance, independently of the other examples in the batch.",
        f"{KD} ('During inference'); {PAPER} §3.1 Algorithm 2 step 11",
        "training vs inference",
    ),
    Claim(
        "K03",
        "Each training-mode call updates moving = moving*momentum + batch_statistic*(1-momentum), with the "
        "biased batch variance, and leaves the moving statistics untouched in inference mode.",
        f"{KD} (moving_mean/moving_variance update rule)",
        "moving statistics",
    ),
    Claim(
        "K04",
        "Setting trainable=False makes the BN layer run in inference mode whatever training flag it is "
        "called with, and stops the moving-statistic updates.",
        f"{KD} ('About setting layer.trainable = False on a BatchNormalization layer')",
        "trainable",
    ),
    Claim(
        "K05",
        "gamma and beta are trainable weights and the moving statistics are not; trainable=False removes "
        "gamma and beta from trainable_weights.",
        f"{KD}; {NB} cells 62 and 267",
        "trainable",
    ),
    Claim(
        "K06",
        "Changing `trainable` after compile() has no effect on fit() until the model is compiled again.",
        "Keras FAQ / transfer-learning guide ('call compile() again after changing trainable')",
        "trainable",
        note="case recompile=no holds if fit() still changes gamma of the frozen layer; "
        "recompile=yes holds if it no longer does",
        advice="after changing `trainable`, compile again before fit()",
    ),
    Claim(
        "K07",
        "A BN layer on 100 features has 400 parameters (gamma, beta, moving mean, moving variance), "
        "200 of them trainable.",
        f"{NB} cell 59 (summary: 400 params per BN layer)",
        "model structure",
    ),
    # ------------------------------------------------------------------ entry points and state
    Claim(
        "M01",
        "predict(), predict_on_batch(), evaluate(), test_on_batch(), model(x) and model(x, training=False) "
        "leave the moving statistics, gamma/beta and all kernels unchanged.",
        f"{KD}; {NB} cells 285-290",
        "entry points",
    ),
    Claim(
        "M02",
        "fit() and train_on_batch() change the moving statistics and the kernels; model(x, training=True) "
        "changes the moving statistics.",
        f"{KD}; {NB} cell 73",
        "entry points",
    ),
    Claim(
        "M03",
        "The correctly built, trained model gives the same predictions at batch size 1, 2 and 60 as at "
        "batch size 600 (inference does not depend on the batch).",
        f"{NB} cells 413-414 (the rebuilt model predicts 7 for a single example); {PAPER} §3.1",
        "batch size",
    ),
    Claim(
        "M04",
        "The notebook's network (3x Dense(100)+BN+tanh, Adam 1e-3, batch 60) reaches test accuracy >= 0.96 "
        "after 10 epochs.",
        f"{NB} cell 80 (test accuracy 0.9711)",
        "model quality",
    ),
    # ------------------------------------------------------------------ the study notebook's conclusions
    Claim(
        "N01",
        "A list copy of layer.weights (list.copy()) still aliases the variables, while [w.numpy() for w in "
        "layer.weights] is an independent snapshot.",
        f"{NB} note after cell 259",
        "study notebook",
    ),
    Claim(
        "N02",
        "Inference with trainable=True (predict or model(x)) updates the moving mean and variance of a "
        "correctly built BN layer.",
        f"{NB} cells 265 and 320, and the conclusion after cell 340",
        "study notebook",
        expected=(Expect(REFUTED, why="inference never updates moving statistics; the notebook saw the "
                         "updates of the layers it had hard-coded with training=True"),),
        advice="don't expect predict() or model(x) to adapt the moving statistics to new data; to re-estimate them, run training-mode passes (or bnspec.popstats.recompute) with frozen weights",
    ),
    Claim(
        "N03",
        "With trainable=False a BN layer still uses the batch statistics at prediction time, so single-"
        "example predictions of the notebook's model collapse to one class.",
        f"{NB} conclusion after cell 340",
        "study notebook",
        expected=(Expect(REFUTED, why="trainable=False forces inference mode even over a hard-coded "
                         "training=True (TF >= 2.0 behaviour of BatchNormalization)"),),
        advice="trainable=False on a BN layer freezes it completely, mode included; if single-example predictions collapse, look for a hard-coded training=True, not for trainable",
    ),
    Claim(
        "N04",
        "Keras sets the training flag automatically: inference entry points compute BN with the moving "
        "statistics, training entry points with the batch statistics.",
        f"{NB} final conclusion",
        "study notebook",
    ),
    Claim(
        "N05",
        "A BN layer hard-coded with bn(x, training=True) stays in training mode under every entry point, "
        "so each single example is mapped to the same output and the same class.",
        f"{NB} cells 55-56, 340 and 397",
        "study notebook",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="Keras 2: an explicit call argument beats the framework's flag"),
            Expect(HOLDS, flavour="keras3", versions=KERAS316, why=HARDCODED_KERAS316),
            Expect(HOLDS, flavour="keras3", case="kind=subclassed", why="the flag is inside call(), out of reach"),
            Expect(HOLDS, flavour="keras3", case="entry=call", why="model(x) passes training=None"),
            Expect(REFUTED, flavour="keras3", why=HARDCODED_KERAS3_FUNCTIONAL),
        ),
        advice="never pass training=True to a BN layer when you build a model; whether predict() obeys it depends on the Keras version and on the model kind",
    ),
    Claim(
        "N06",
        "A batch of ONE in training mode outputs beta for every input (the variance is 0, x - mean is 0).",
        f"{PAPER} §3.1 (needs m > 1); {NB} cells 352-398",
        "batch size",
        note="'equals' means within the float32 bound |x|*|gamma|/sqrt(eps)*2^-22",
    ),
    # ------------------------------------------------------------------ Keras documentation, more
    Claim(
        "K08",
        "A new BN layer starts with gamma = 1, beta = 0, moving mean = 0 and moving variance = 1, and "
        "defaults to momentum 0.99 and epsilon 1e-3.",
        f"{KD} (constructor defaults)",
        "Keras API",
    ),
    Claim(
        "K09",
        "Under the mixed_float16 policy BN keeps float32 variables and computes in float32, returning "
        "float16: the output is the float32 result rounded once to float16.",
        "Keras mixed-precision guide; BatchNormalization source (autocast of the computation)",
        "Keras API",
        note="inputs with mean 200 make sum(x^2) overflow float16 (> 65504): a float16 computation "
        "would give inf/NaN",
    ),
    Claim(
        "K10",
        "A mask excludes the masked time steps from the batch mean and variance in training mode.",
        f"{KD} (call argument `mask`)",
        "Keras API",
    ),
    Claim(
        "K11",
        "synchronized=True on a single replica gives the same outputs and moving statistics as plain BN.",
        f"{KD} (argument `synchronized`)",
        "Keras API",
    ),
    Claim(
        "K12",
        "With renorm=True, inference uses the moving statistics exactly like plain BN: same weights "
        "give the same inference output.",
        f"{KD} (argument `renorm`); Ioffe 2017, Batch Renormalization",
        "Keras API",
    ),
    Claim(
        "K13",
        "get_config()/from_config() rebuilds an equivalent layer: same configuration, and with the "
        "weights copied the same outputs in both modes.",
        "Keras docs, Layer.get_config / serialization guide",
        "serialization",
    ),
    Claim(
        "K14",
        "Saving a model to .keras and loading it back keeps the moving statistics and the behaviour, "
        "including a hard-coded training=True.",
        "Keras docs, Model.save / keras.saving.load_model",
        "serialization",
    ),
    Claim(
        "K15",
        "`axis` names the feature axis: BN normalises over every other axis (axis=-1 for NHWC and "
        "dense inputs, axis=1 for NCHW).",
        f"{KD} (argument `axis`)",
        "Keras API",
    ),
    Claim(
        "K16",
        "The moving variance tracks the biased (1/m) batch variance for every input rank: dense (2-D) and "
        "convolutional (4-D, NHWC or NCHW) inputs alike.",
        f"{KD} (moving_var = moving_var * momentum + var(batch) * (1 - momentum)); {PAPER} Algorithm 1",
        "moving statistics",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="layout=nhwc_axis-1", why=FUSED_UNBIASED),
            Expect(REFUTED, flavour="tfkeras", case="layout=nchw_axis1", why=FUSED_UNBIASED),
            Expect(HOLDS),
        ),
        advice="moving variances of Keras 2 conv layers are already m/(m-1)-corrected while Keras 3's are not; "
        "keep that in mind when porting weights between Keras 2, Keras 3 and PyTorch",
    ),
    # ------------------------------------------------------------------ the paper
    Claim(
        "P01",
        "Before gamma/beta, the normalised activations of a training batch have mean 0 and variance "
        "sigma^2/(sigma^2+eps) per feature (exactly 1 only when eps = 0).",
        f"{PAPER} §3 ('normalized to have zero mean and unit variance'), Algorithm 1",
        "the paper",
    ),
    Claim(
        "P02",
        "A training batch of two maps its examples to beta +/- gamma*s/sqrt(s^2+eps), s = |x1-x2|/2: the "
        "output carries only the sign of the difference.",
        f"{PAPER} §3.1 (normalization needs m > 1)",
        "batch size",
    ),
    Claim(
        "P03",
        "On a stationary stream of batches of m = 60, Algorithm 2's population variance is m/(m-1) = "
        "60/59 times Keras' moving variance, which converges to the biased estimate.",
        f"{PAPER} Algorithm 2 step 10; {KD} (update rule)",
        "the paper",
    ),
    Claim(
        "P04",
        "In inference BN is one affine map per feature, so it can be folded into the preceding Dense "
        "layer (W*a, b*a + c) with the same logits (Keras' layer and ExplicitBatchNorm).",
        f"{PAPER} §3.1 ('a simple linear transform'), Algorithm 2 step 11",
        "the paper",
    ),
    Claim(
        "P05",
        "BN((aW)u) = BN(Wu) for a scalar a > 0 (training mode), to the closed-form error "
        "eps*(1-1/a^2)/(2*sigma^2) that eps > 0 introduces.",
        f"{PAPER} §3.3",
        "the paper",
    ),
    Claim(
        "P06",
        "Scaling the weights by a leaves the gradient w.r.t. the layer input unchanged and scales the "
        "gradient w.r.t. the weights by 1/a.",
        f"{PAPER} §3.3 (d BN((aW)u)/du = d BN(Wu)/du, d/d(aW) = 1/a * d/dW)",
        "the paper",
    ),
    # ------------------------------------------------------------------ practice and later literature
    Claim(
        "L01",
        "In inference mode an example's output does not depend on the other examples in its batch; in "
        "training mode it does.",
        f"{PAPER} §3.1; {PRECISE} §2",
        "batch size",
    ),
    Claim(
        "L02",
        "Frozen-BN fine-tuning: with every BN layer set trainable=False, fit() changes the kernels but "
        "not the moving statistics, gamma or beta.",
        "Keras transfer-learning guide ('BatchNormalization layer ... trainable = False')",
        "trainable",
        note="freeze=after_fit_no_recompile sets trainable=False after a first fit() and does not compile again",
        expected=(
            Expect(REFUTED, case="freeze=after_fit_no_recompile",
                   why="the training step traced by the first fit() keeps updating gamma, beta and the moving "
                   "statistics until compile() is called again"),
            Expect(HOLDS),
        ),
        advice="after changing `trainable`, call compile() again before fit(); otherwise the frozen BN layers "
        "keep training and their moving statistics drift",
    ),
    Claim(
        "L03",
        "Population statistics recomputed over the training set with frozen weights (PreciseBN) give a "
        "test loss no worse than the EMA moving statistics.",
        f"{PRECISE} §3 (PreciseBN); {PAPER} Algorithm 2",
        "the paper",
        note="'no worse' = the loss difference is below 2 standard errors of the paired per-example "
        "difference over the 10,000 test images",
        advice="after training (especially with a large momentum or few steps), recomputing the BN statistics over a few hundred training batches with frozen weights is cheap and can lower the test loss",
    ),
    Claim(
        "L04",
        "The train-inference gap (test loss with batch statistics minus loss with moving statistics) "
        "grows as the batch used for the statistics shrinks (600, 60, 8, 2).",
        f"{PRECISE} §4 (small batches); {NB} cells 329-332 (batches of 5, 3, 2, 1)",
        "batch size",
        advice="batch statistics from small batches are noisy; keep training batches of BN models at dozens of examples or use moving statistics",
    ),
    # ------------------------------------------------------------------ cross-framework conventions
    Claim(
        "X01",
        "PyTorch's momentum 0.1 is Keras' momentum 0.9: fed the same batches, both give the same "
        "running mean.",
        f"{TORCH} (running = (1-momentum)*running + momentum*batch); {KD}",
        "conventions",
    ),
    Claim(
        "X02",
        "PyTorch tracks the unbiased batch variance, Keras the biased one: on the same stream the "
        "running variances differ by the factor m/(m-1).",
        f"{TORCH} ('unbiased estimator' for running_var); {KD}",
        "conventions",
    ),
    Claim(
        "X03",
        "A Keras BN state converted with bnspec.convert.keras_to_torch (eps 1e-3 -> 1e-5) gives the same "
        "inference output under PyTorch's formula as the Keras layer.",
        f"{TORCH}; {KD}; bnspec.convert",
        "conventions",
    ),
    Claim(
        "X04",
        "torch.nn.BatchNorm1d loaded with the converted state reproduces the Keras layer's inference "
        "output (runs only where torch is installed).",
        f"{TORCH}",
        "conventions",
    ),
    # ------------------------------------------------------------------ the notebook, more
    Claim(
        "N07",
        "For the notebook's model, a single example gives the same output with model(x, training=True) "
        "and model(x, training=False).",
        f"{NB} cells 120-122 ('No change in model output between training = True and False')",
        "study notebook",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="the hard-coded layers stay in training mode and output beta"),
            Expect(HOLDS, flavour="keras3", versions=KERAS316, why=HARDCODED_KERAS316),
            Expect(HOLDS, flavour="keras3", case="kind=subclassed", why="the flag is inside call(), out of reach"),
            Expect(REFUTED, flavour="keras3", why=HARDCODED_KERAS3_FUNCTIONAL),
        ),
        advice="if model(x, training=True) and model(x, training=False) agree on a single example, a BN layer downstream is stuck in training mode",
    ),
    Claim(
        "N08",
        "A BN layer object can be used only once: every position in the network needs a new layer.",
        f"{NB} cell 51 (comment above the bn_layer helper)",
        "study notebook",
        expected=(Expect(REFUTED, why="a layer object can be called on several tensors; the calls then "
                         "share one set of gamma/beta/moving statistics"),),
        advice="calling one BN layer twice is legal but shares its statistics between the two places; "
        "create one layer per position",
    ),
    # ------------------------------------------------------------------ BN coded from the paper
    Claim(
        "E01",
        "ExplicitBatchNorm (bnspec.layers, coded from Algorithm 1) gives the same forward output as Keras' "
        "BatchNormalization and the numpy reference, in training mode, inference mode and when frozen.",
        f"{PAPER} Algorithms 1-2; {KD}; bnspec.layers",
        "BN from scratch",
    ),
    Claim(
        "E02",
        "The gradients w.r.t. the input, gamma and beta of ExplicitBatchNorm and of Keras' layer equal the "
        "paper's chain-rule formulas (numpy reference).",
        f"{PAPER} §3 (backpropagation formulas after Algorithm 1)",
        "BN from scratch",
    ),
    Claim(
        "E03",
        "After N training-mode updates the moving statistics of ExplicitBatchNorm, of Keras' layer and of "
        "the numpy EMA reference agree.",
        f"{KD} (update rule); bnspec.layers",
        "BN from scratch",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="shape=nhwc_axis-1", why=FUSED_UNBIASED),
            Expect(REFUTED, flavour="tfkeras", case="shape=nchw_axis1", why=FUSED_UNBIASED),
            Expect(HOLDS),
        ),
    ),
    Claim(
        "E04",
        "The paper's backward formulas, used as a custom gradient (paper_gradient=True), equal automatic "
        "differentiation of the explicit forward pass.",
        f"{PAPER} §3",
        "BN from scratch",
    ),
    Claim(
        "E05",
        "bnspec.popstats.recompute sets the moving statistics of either layer to Algorithm 2's population "
        "statistics (mean of batch means, m/(m-1) x mean of batch variances).",
        f"{PAPER} Algorithm 2 steps 8-10",
        "BN from scratch",
    ),
    Claim(
        "E06",
        "The notebook's model with Keras' BN and with ExplicitBatchNorm, from identical weights on identical "
        "batches, stay equal for 100 training steps (to the divergence that rounding alone causes).",
        f"{NB} closing plan ('v2 with batch normalization explicitly coded'); bnspec.layers",
        "BN from scratch",
        note="rounding baseline: the Keras model trained from weights perturbed by one float32 ulp",
    ),
    Claim(
        "E07",
        "After the full cached training (10 epochs) the two models' test accuracies differ by at most 0.5 "
        "percentage points.",
        f"{NB} closing plan; bnspec.layers",
        "BN from scratch",
    ),
    Claim(
        "E08",
        "ExplicitBatchNorm survives get_config/from_config and a .keras save/load with its statistics and outputs.",
        "Keras serialization guide; bnspec.layers",
        "BN from scratch",
    ),
    # ------------------------------------------------------------------ the paper's experiment (slow)
    Claim(
        "P07",
        "On MNIST (3 x 100 sigmoid, batch 60) the BN network's test accuracy is at least the baseline's at "
        "every checkpoint from 5,000 steps on, and higher at 50,000.",
        f"{PAPER} §4.1, Figure 1(a)",
        "the paper's experiment",
        tags=("slow",),
    ),
    Claim(
        "P08",
        "The BN network reaches the baseline's final (50,000-step) test accuracy in fewer than half the steps.",
        f"{PAPER} §4.1, Figure 1(a) ('the network trains faster')",
        "the paper's experiment",
        tags=("slow",),
    ),
    Claim(
        "P09",
        "Over training, the median input of a last-layer sigmoid and its 15-85 percentile spread drift less "
        "with BN than without.",
        f"{PAPER} §4.1, Figure 1(b, c) ('the distributions ... are much more stable')",
        "the paper's experiment",
        tags=("slow",),
    ),
    Claim(
        "P10",
        "At 5x the learning rate the BN network still trains (it ends at least as accurate as the baseline at "
        "the normal rate), while the baseline at 5x ends below the BN network at 5x.",
        f"{PAPER} §3.3 and §4.2.1 ('Increase learning rate')",
        "the paper's experiment",
        tags=("slow",),
    ),
)

BY_ID = {c.id: c for c in CLAIMS}


def get(claim_id: str) -> Claim:
    try:
        return BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim id {claim_id!r}; known: {', '.join(BY_ID)}") from None
