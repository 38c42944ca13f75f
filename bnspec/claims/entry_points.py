"""Entry points and state: Which Keras entry points run BN in training mode, and which change the model's state.

Tests: tests/claims/test_entry_points.py."""

from bnspec.claims._model import Claim, Expect, HARDCODED_KERAS316, HARDCODED_KERAS3_FUNCTIONAL, HOLDS, KD, KERAS316, NB, REFUTED

ORDER = 20
TITLE = 'Entry points and state'

CLAIMS = (
    Claim(
        "M01",
        "inference entry points change nothing",
        "predict(), predict_on_batch(), evaluate(), test_on_batch(), model(x) and model(x, training=False) "
        "leave the moving statistics, gamma/beta and all kernels unchanged.",
        f"{KD}; {NB} cells 285-290",
    ),
    Claim(
        "M02",
        "training entry points change the state",
        "fit() and train_on_batch() change the moving statistics and the kernels; model(x, training=True) "
        "changes the moving statistics.",
        f"{KD}; {NB} cell 73",
    ),
    Claim(
        "N02",
        "inference updates the moving statistics (notebook)",
        "Inference with trainable=True (predict or model(x)) updates the moving mean and variance of a "
        "correctly built BN layer.",
        f"{NB} cells 265 and 320, and the conclusion after cell 340",
        expected=(Expect(REFUTED, mechanism="moving_unchanged", why="inference never updates moving statistics; the notebook saw the "
                         "updates of the layers it had hard-coded with training=True"),),
        advice="don't expect predict() or model(x) to adapt the moving statistics to new data; to re-estimate them, run training-mode passes (or bnspec.subjects.popstats.recompute) with frozen weights",
    ),
    Claim(
        "N04",
        "Keras sets the training flag itself",
        "Keras sets the training flag automatically: inference entry points compute BN with the moving "
        "statistics, training entry points with the batch statistics.",
        f"{NB} final conclusion",
    ),
    Claim(
        "N05",
        "a hard-coded training=True wins everywhere",
        "A BN layer hard-coded with bn(x, training=True) stays in training mode under every entry point, "
        "so each single example is mapped to the same output and the same class.",
        f"{NB} cells 55-56, 340 and 397",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="Keras 2: an explicit call argument beats the framework's flag"),
            Expect(HOLDS, flavour="keras3", versions=KERAS316, why=HARDCODED_KERAS316, change="keras#23364"),
            Expect(HOLDS, flavour="keras3", case="kind=subclassed", why="the flag is inside call(), out of reach"),
            Expect(HOLDS, flavour="keras3", case="entry=call", why="model(x) passes training=None"),
            Expect(REFUTED, flavour="keras3", why=HARDCODED_KERAS3_FUNCTIONAL, mechanism="hardcoded_layer_in_inference"),
        ),
        advice="never pass training=True to a BN layer when you build a model; whether predict() obeys it depends on the Keras version and on the model kind",
    ),
    Claim(
        "N07",
        "training=True and False agree on one example",
        "For the notebook's model, a single example gives the same output with model(x, training=True) "
        "and model(x, training=False).",
        f"{NB} cells 120-122 ('No change in model output between training = True and False')",
        expected=(
            Expect(HOLDS, flavour="tfkeras", why="the hard-coded layers stay in training mode and output beta"),
            Expect(HOLDS, flavour="keras3", versions=KERAS316, why=HARDCODED_KERAS316, change="keras#23364"),
            Expect(HOLDS, flavour="keras3", case="kind=subclassed", why="the flag is inside call(), out of reach"),
            Expect(REFUTED, flavour="keras3", why=HARDCODED_KERAS3_FUNCTIONAL, mechanism="hardcoded_layer_in_inference"),
        ),
        advice="if model(x, training=True) and model(x, training=False) agree on a single example, a BN layer downstream is stuck in training mode",
    ),
)
