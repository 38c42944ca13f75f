"""Practice and later literature: Batch composition, frozen-BN fine-tuning, PreciseBN, the train-inference gap.

Tests: tests/claims/test_practice.py."""

from bnspec.claims._model import Claim, Expect, HOLDS, NB, PAPER, PRECISE, REFUTED

ORDER = 80
TITLE = 'Practice and later literature'

CLAIMS = (
    Claim(
        "L01",
        "batch companions matter only in training",
        "In inference mode an example's output does not depend on the other examples in its batch; in "
        "training mode it does.",
        f"{PAPER} §3.1; {PRECISE} §2",
    ),
    Claim(
        "L02",
        "frozen-BN fine-tuning keeps the statistics",
        "Frozen-BN fine-tuning: with every BN layer set trainable=False, fit() changes the kernels but "
        "not the moving statistics, gamma or beta.",
        "Keras transfer-learning guide ('BatchNormalization layer ... trainable = False')",
        note="freeze=after_fit_no_recompile sets trainable=False after a first fit() and does not compile again; "
        "what happens then depends on the backend (TensorFlow: the frozen layers keep training; JAX: fit() raises "
        "and leaves the model's variables without values; PyTorch: frozen as asked)",
        expected=(
            Expect(REFUTED, backend="tensorflow", case="freeze=after_fit_no_recompile", mechanism="frozen_layers_still_train",
                   why="the training step traced by the first fit() keeps updating gamma, beta and the moving "
                   "statistics until compile() is called again"),
            Expect(REFUTED, backend="jax", case="freeze=after_fit_no_recompile",
                   mechanism="fit_refuses_changed_trainable_set",
                   why="on JAX fit() refuses to run: the stateless training step hands the optimizer the variables "
                   "trainable now (8 kernels and biases), and the optimizer built by the first fit() for 14 "
                   "(gamma and beta included) raises ValueError ('Argument optimizer_variables must be a list of "
                   "tensors corresponding 1:1 ...') until compile() is called again"),
            Expect(HOLDS, backend="torch", case="freeze=after_fit_no_recompile",
                   why="the PyTorch trainer runs eagerly (jit_compile='auto' is eager on torch): every step reads the "
                   "variables trainable now and runs the frozen BN layers in inference mode, with or without compile()"),
            Expect(HOLDS),
        ),
        advice="after changing `trainable`, call compile() again before fit(); otherwise on TensorFlow the frozen BN "
        "layers keep training and their moving statistics drift, and on JAX fit() raises and leaves the model without "
        "its weights (reload it)",
    ),
    Claim(
        "L03",
        "PreciseBN is no worse than the EMA",
        "Population statistics recomputed over the training set with frozen weights (PreciseBN) give a "
        "test loss no worse than the EMA moving statistics.",
        f"{PRECISE} §3 (PreciseBN); {PAPER} Algorithm 2",
        note="'no worse' = the loss difference is below 2 standard errors of the paired per-example "
        "difference over the 10,000 test images",
        advice="after training (especially with a large momentum or few steps), recomputing the BN statistics over a few hundred training batches with frozen weights is cheap and can lower the test loss",
    ),
    Claim(
        "L04",
        "train-inference gap grows as batches shrink",
        "The train-inference gap (test loss with batch statistics minus loss with moving statistics) "
        "grows as the batch used for the statistics shrinks (500, 50, 10, 2), on all 10,000 test images.",
        f"{PRECISE} §4 (small batches); {NB} cells 329-332 (batches of 5, 3, 2, 1)",
        note="Each step's growth is judged against the standard error of 20 independent blocks of 500 images (a block "
        "holds whole batches of every size); the evidence gives the gap per batch size and each step in block "
        "standard errors. The first GPU run's version (2,400 images, per-image standard errors) was underpowered: "
        "its 600 -> 60 step fell below 2 standard errors with the GPU-trained model.",
        advice="batch statistics from small batches are noisy; keep training batches of BN models at dozens of examples or use moving statistics",
    ),
)
