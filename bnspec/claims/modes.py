"""Training vs inference mode: What one BN layer computes in each mode, and how its moving statistics move.

Tests: tests/claims/test_modes.py."""

from bnspec.claims._model import Claim, KD, NB, PAPER

ORDER = 10
TITLE = 'Training vs inference mode'

CLAIMS = (
    Claim(
        "K01",
        "training mode: batch mean and biased variance",
        "In training mode BN normalises each feature with the mini-batch mean and the biased (1/m) "
        "mini-batch variance, then scales by gamma and shifts by beta.",
        f"{PAPER} §3 Algorithm 1; {KD} ('During training'); {NB} cells 0 and 397",
    ),
    Claim(
        "K02",
        "inference mode: moving statistics, batch-independent",
        "In inference mode (training=False, or a plain call outside fit) BN normalises with the moving "
        "mean and moving variance, independently of the other examples in the batch.",
        f"{KD} ('During inference'); {PAPER} §3.1 Algorithm 2 step 11",
    ),
    Claim(
        "K03",
        "moving-average update rule",
        "Each training-mode call updates moving = moving*momentum + batch_statistic*(1-momentum), with the "
        "biased batch variance, and leaves the moving statistics untouched in inference mode.",
        f"{KD} (moving_mean/moving_variance update rule)",
    ),
    Claim(
        "N06",
        "a batch of one outputs beta",
        "A batch of ONE in training mode outputs beta for every input (the variance is 0, x - mean is 0).",
        f"{PAPER} §3.1 (needs m > 1); {NB} cells 352-398",
        note="'equals' means within the float32 bound |x|*|gamma|/sqrt(eps)*2^-22",
    ),
)
