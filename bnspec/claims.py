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

HOLDS, REFUTED = "holds", "refuted"
VERDICTS = (HOLDS, REFUTED)


@dataclass(frozen=True)
class Expect:
    verdict: str
    flavour: str | None = None  # keras3 | tfkeras | None (any)
    versions: str = ""  # PEP 440 specifier on the flavour's Keras version, e.g. ">=3.16"
    case: str = ""  # "param=value[,param=value]" limiting the rule to some parametrisations
    why: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")
        SpecifierSet(self.versions)  # validate early

    def matches(self, flavour: str, version: str | None, params: dict) -> bool:
        if self.flavour and self.flavour != flavour:
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
    tags: tuple[str, ...] = field(default_factory=tuple)

    def expectation(self, flavour: str, version: str | None, params: dict) -> Expect:
        for rule in self.expected:
            if rule.matches(flavour, version, params):
                return rule
        raise LookupError(f"claim {self.id}: no expected verdict for {flavour} {version} {params}")


NB = "study notebook"
KD = "Keras docs, BatchNormalization"
PAPER = "Ioffe & Szegedy 2015"
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
    ),
    Claim(
        "N03",
        "With trainable=False a BN layer still uses the batch statistics at prediction time, so single-"
        "example predictions of the notebook's model collapse to one class.",
        f"{NB} conclusion after cell 340",
        "study notebook",
        expected=(Expect(REFUTED, why="trainable=False forces inference mode even over a hard-coded "
                         "training=True (TF >= 2.0 behaviour of BatchNormalization)"),),
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
            Expect(HOLDS, flavour="keras3", case="kind=subclassed", why="the flag is inside call(), out of reach"),
            Expect(HOLDS, flavour="keras3", case="entry=call", why="model(x) passes training=None"),
            Expect(REFUTED, flavour="keras3", why=HARDCODED_KERAS3_FUNCTIONAL),
        ),
    ),
    Claim(
        "N06",
        "A batch of ONE in training mode outputs beta for every input (the variance is 0, x - mean is 0).",
        f"{PAPER} §3.1 (needs m > 1); {NB} cells 352-398",
        "batch size",
        note="'equals' means within the float32 bound |x|*|gamma|/sqrt(eps)*2^-22",
    ),
)

BY_ID = {c.id: c for c in CLAIMS}


def get(claim_id: str) -> Claim:
    try:
        return BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim id {claim_id!r}; known: {', '.join(BY_ID)}") from None
