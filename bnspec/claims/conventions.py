"""PyTorch's conventions: Keras' BN conventions against PyTorch's.

Tests: tests/claims/test_conventions.py."""

from bnspec.claims._model import Claim, KD, TORCH

ORDER = 110
TITLE = "PyTorch's conventions"

CLAIMS = (
    Claim(
        "X01",
        "PyTorch momentum 0.1 = Keras momentum 0.9",
        "PyTorch's momentum 0.1 is Keras' momentum 0.9: fed the same batches, both give the same "
        "running mean.",
        f"{TORCH} (running = (1-momentum)*running + momentum*batch); {KD}",
    ),
    Claim(
        "X02",
        "PyTorch tracks the unbiased variance",
        "PyTorch tracks the unbiased batch variance, Keras the biased one: on the same stream the "
        "running variances differ by the factor m/(m-1).",
        f"{TORCH} ('unbiased estimator' for running_var); {KD}",
    ),
    Claim(
        "X03",
        "converted state gives the same inference",
        "A Keras BN state converted with bnspec.convert.keras_to_torch (eps 1e-3 -> 1e-5) gives the same "
        "inference output under PyTorch's formula as the Keras layer.",
        f"{TORCH}; {KD}; bnspec.convert",
    ),
    Claim(
        "X04",
        "torch.nn.BatchNorm1d reproduces Keras",
        "torch.nn.BatchNorm1d loaded with the converted state reproduces the Keras layer's inference "
        "output (runs only where torch is installed).",
        f"{TORCH}",
    ),
)
