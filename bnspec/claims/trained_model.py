"""The trained notebook model: The study notebook's MNIST model, trained once (cached).

Tests: tests/claims/test_trained_model.py."""

from bnspec.claims._model import Claim, NB, PAPER

ORDER = 70
TITLE = 'The trained notebook model'

CLAIMS = (
    Claim(
        "M03",
        "predictions independent of batch size",
        "The correctly built, trained model gives the same predictions at batch size 1, 2 and 60 as at "
        "batch size 600 (inference does not depend on the batch).",
        f"{NB} cells 413-414 (the rebuilt model predicts 7 for a single example); {PAPER} §3.1",
    ),
    Claim(
        "M04",
        "notebook model reaches 96% test accuracy",
        "The notebook's network (3x Dense(100)+BN+tanh, Adam 1e-3, batch 60) reaches test accuracy >= 0.96 "
        "after 10 epochs.",
        f"{NB} cell 80 (test accuracy 0.9711)",
    ),
)
