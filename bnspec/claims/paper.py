"""The paper: Ioffe & Szegedy (2015) §3-§3.3, Algorithms 1 and 2, measured on Keras' layer.

Tests: tests/claims/test_paper.py."""

from bnspec.claims._model import Claim, KD, PAPER

ORDER = 90
TITLE = 'The paper'

CLAIMS = (
    Claim(
        "P01",
        "normalised activations: mean 0, variance s²/(s²+eps)",
        "Before gamma/beta, the normalised activations of a training batch have mean 0 and variance "
        "sigma^2/(sigma^2+eps) per feature (exactly 1 only when eps = 0).",
        f"{PAPER} §3 ('normalized to have zero mean and unit variance'), Algorithm 1",
    ),
    Claim(
        "P02",
        "a batch of two keeps only the sign",
        "A training batch of two maps its examples to beta +/- gamma*s/sqrt(s^2+eps), s = |x1-x2|/2: the "
        "output carries only the sign of the difference.",
        f"{PAPER} §3.1 (normalization needs m > 1)",
    ),
    Claim(
        "P03",
        "Algorithm 2 variance = m/(m-1) x moving variance",
        "On a stationary stream of batches of m = 60, Algorithm 2's population variance is m/(m-1) = "
        "60/59 times Keras' moving variance, which converges to the biased estimate.",
        f"{PAPER} Algorithm 2 step 10; {KD} (update rule)",
    ),
    Claim(
        "P04",
        "inference BN folds into the Dense layer",
        "In inference BN is one affine map per feature, so it can be folded into the preceding Dense "
        "layer (W*a, b*a + c) with the same logits (Keras' layer and ExplicitBatchNorm).",
        f"{PAPER} §3.1 ('a simple linear transform'), Algorithm 2 step 11",
    ),
    Claim(
        "P05",
        "scale invariance of the forward pass",
        "BN((aW)u) = BN(Wu) for a scalar a > 0 (training mode), to the closed-form error "
        "eps*(1-1/a^2)/(2*sigma^2) that eps > 0 introduces (within its remainder 3/8*(eps/sigma^2)^2*max(1, a^-4)).",
        f"{PAPER} §3.3",
    ),
    Claim(
        "P06",
        "scale invariance of the gradients",
        "Scaling the weights by a leaves the gradient w.r.t. the layer input unchanged and scales the "
        "gradient w.r.t. the weights by 1/a, up to the exact effect of eps.",
        f"{PAPER} §3.3 (d BN((aW)u)/du = d BN(Wu)/du, d/d(aW) = 1/a * d/dW)",
    ),
)
