"""PyTorch's conventions: Keras' BN conventions against torch.nn.BatchNorm1d/2d themselves.

Tests: tests/claims/test_conventions.py (they need torch; without it the claims are unmeasured)."""

from bnspec.claims._model import Claim, KD, TORCH

ORDER = 110
TITLE = "PyTorch's conventions"

MEASURED = "measured against torch.nn itself (CPU, float32)"

CLAIMS = (
    Claim(
        "X01",
        "PyTorch momentum 0.1 = Keras momentum 0.9",
        "torch.nn.BatchNorm1d with momentum 1-k tracks the same running mean as Keras' BatchNormalization "
        "with momentum k (PyTorch's 0.1 is Keras' 0.9): fed the same 200 batches, the two frameworks' running "
        "means agree to float32 rounding.",
        f"{TORCH} (running = (1-momentum)*running + momentum*batch); {KD}; {MEASURED}",
        note="the power check runs torch with Keras' momentum copied over unchanged: that must be far off",
    ),
    Claim(
        "X02",
        "PyTorch tracks the unbiased variance",
        "torch.nn.BatchNorm1d tracks the unbiased batch variance, Keras the biased one: on the same stream "
        "(torch momentum 0.1, Keras 0.9) torch's running_var is m/(m-1) times Keras' moving_variance.",
        f"{TORCH} ('unbiased estimator' for running_var); {KD}; {MEASURED}",
    ),
    Claim(
        "X03",
        "converted state: same inference in torch.nn",
        "A Keras BN state converted with bnspec.convert.keras_to_torch (eps 1e-3 -> 1e-5, var + eps kept) and "
        "loaded into torch.nn.BatchNorm1d (dense inputs) or BatchNorm2d (NCHW and NHWC convolutional inputs) "
        "in eval() gives the Keras layer's inference output.",
        f"{TORCH}; {KD}; bnspec.convert; {MEASURED}",
        note="the power check loads Keras' moving_variance into torch unchanged (eps 1e-5): that must be off",
    ),
    Claim(
        "X04",
        "bnspec.convert round trip Keras -> torch -> Keras",
        "bnspec.convert works both ways: a Keras state moved into torch.nn.BatchNorm1d (converted momentum) "
        "and back into a Keras layer gives the same inference outputs in all three; after one training step "
        "of each on the same batch the round-tripped Keras layer still matches the original (outputs in both "
        "modes, moving statistics), and torch matches Keras as the conventions predict: the same running mean, "
        "training outputs apart only through eps, and running variances (converted back) apart by exactly "
        "(1-k)(var_B/(m-1) - (eps_keras - eps_torch)).",
        f"{TORCH}; {KD}; bnspec.convert; {MEASURED}",
        note="case phase=inference compares the three layers as converted; phase=training_step after one "
             "training-mode call of each. A conversion cannot make fine-tuning identical: torch feeds the "
             "unbiased batch variance into running_var and normalises training batches with its own eps",
        advice="moving a trained Keras model to PyTorch (or back) with bnspec.convert keeps its inference "
               "outputs; fine-tuning the converted model drifts from what Keras would do by the conventions above",
    ),
)
