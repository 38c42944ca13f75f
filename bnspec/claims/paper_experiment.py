"""The paper's MNIST experiment: §4.1 and Figure 1, reproduced by bnspec.subjects.paper (slow).

Tests: tests/claims/test_paper_experiment.py."""

from bnspec.claims._model import Claim, PAPER

ORDER = 100
TITLE = "The paper's MNIST experiment"

CLAIMS = (
    Claim(
        "P07",
        "BN net at least as accurate (Figure 1a)",
        "On MNIST (3 x 100 sigmoid, batch 60) the BN network's test accuracy is at least the baseline's at "
        "every checkpoint from 5,000 steps on, and higher at 50,000.",
        f"{PAPER} §4.1, Figure 1(a)",
    ),
    Claim(
        "P08",
        "BN net trains in under half the steps",
        "The BN network reaches the baseline's final (50,000-step) test accuracy in fewer than half the steps.",
        f"{PAPER} §4.1, Figure 1(a) ('the network trains faster')",
    ),
    Claim(
        "P09",
        "sigmoid inputs drift less with BN (Figure 1b,c)",
        "Over training, the median input of a last-layer sigmoid and its 15-85 percentile spread drift less "
        "with BN than without.",
        f"{PAPER} §4.1, Figure 1(b, c) ('the distributions ... are much more stable')",
    ),
    Claim(
        "P10",
        "BN tolerates 5x the learning rate",
        "At 5x the learning rate the BN network still trains (it ends at least as accurate as the baseline at "
        "the normal rate), while the baseline at 5x ends below the BN network at 5x.",
        f"{PAPER} §3.3 and §4.2.1 ('Increase learning rate')",
    ),
)
