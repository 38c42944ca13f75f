"""trainable vs training: What freezing a BN layer does, and when it takes effect.

Tests: tests/claims/test_trainable.py."""

from bnspec.claims._model import Claim, Expect, KD, NB, REFUTED

ORDER = 30
TITLE = 'trainable vs training'

CLAIMS = (
    Claim(
        "K04",
        "trainable=False forces inference mode",
        "Setting trainable=False makes the BN layer run in inference mode whatever training flag it is "
        "called with, and stops the moving-statistic updates.",
        f"{KD} ('About setting layer.trainable = False on a BatchNormalization layer')",
    ),
    Claim(
        "K05",
        "which weights are trainable",
        "gamma and beta are trainable weights and the moving statistics are not; trainable=False removes "
        "gamma and beta from trainable_weights.",
        f"{KD}; {NB} cells 62 and 267",
    ),
    Claim(
        "K06",
        "a trainable change needs compile()",
        "Changing `trainable` after compile() has no effect on fit() until the model is compiled again.",
        "Keras FAQ / transfer-learning guide ('call compile() again after changing trainable')",
        note="case recompile=no holds if fit() still changes gamma of the frozen layer; "
        "recompile=yes holds if it no longer does",
        advice="after changing `trainable`, compile again before fit()",
    ),
    Claim(
        "K07",
        "400 parameters, 200 trainable",
        "A BN layer on 100 features has 400 parameters (gamma, beta, moving mean, moving variance), "
        "200 of them trainable.",
        f"{NB} cell 59 (summary: 400 params per BN layer)",
    ),
    Claim(
        "N03",
        "trainable=False still uses batch statistics (notebook)",
        "With trainable=False a BN layer still uses the batch statistics at prediction time, so single-"
        "example predictions of the notebook's model collapse to one class.",
        f"{NB} conclusion after cell 340",
        expected=(Expect(REFUTED, mechanism="inference_mode", why="trainable=False forces inference mode even over a hard-coded "
                         "training=True (TF >= 2.0 behaviour of BatchNormalization)"),),
        advice="trainable=False on a BN layer freezes it completely, mode included; if single-example predictions collapse, look for a hard-coded training=True, not for trainable",
    ),
)
