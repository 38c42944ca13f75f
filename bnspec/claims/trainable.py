"""trainable vs training: What freezing a BN layer does, and when it takes effect.

Tests: tests/claims/test_trainable.py."""

from bnspec.claims._model import Claim, Expect, HOLDS, KD, NB, REFUTED

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
        expected=(
            Expect(REFUTED, flavour="keras3", backend="jax", case="recompile=no", mechanism="stale_training_step_raises",
                   why="Keras 3 on JAX (measured on 3.15.1): fit() raises ValueError from the optimizer's 1:1 check "
                   "('Received len(trainable_variables) == 12 whereas the optimizer was built with 14'): the "
                   "optimizer built for the old trainable list refuses the new one; the change has an effect, an "
                   "error, and the failed fit() leaves all the model's variables detached (no values)"),
            Expect(REFUTED, flavour="keras3", backend="torch", case="recompile=no",
                   mechanism="freeze_applied_without_recompile",
                   why="Keras 3 on PyTorch (measured on 3.15.1) runs every training step eagerly (no traced "
                   "function by default), reading the trainable flag and trainable_variables at each step: the "
                   "freeze applies at the next fit() without compile() (frozen gamma and moving mean bitwise "
                   "unchanged while a trainable layer's gamma moved)"),
            Expect(HOLDS, why="TensorFlow (Keras 3 and tf_keras): fit() reuses the training function traced "
                   "before the change, which updates the frozen layer until compile() drops it"),
        ),
        note="case recompile=no holds if fit() still changes gamma of the frozen layer; "
        "recompile=yes holds if it no longer does. Without recompiling the three Keras 3 backends differ: "
        "TensorFlow goes on training the frozen layer, PyTorch freezes it at once, JAX raises",
        advice="after changing `trainable`, compile again before fit(): without it the result depends on the "
        "backend (TensorFlow ignores the change, PyTorch applies it, JAX raises and leaves the model without "
        "weight values)",
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
