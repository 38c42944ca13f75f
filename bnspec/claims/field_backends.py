"""Field traps: Keras 3 across backends. What users of KERAS_BACKEND=jax and torch (and of the TensorFlow
backend's less-used paths) report about BN's mode, its numerics and its gradients (issue #13).

Tests: tests/claims/test_field_backends.py, run once per backend (KERAS_BACKEND=tensorflow|jax|torch) and
on tf_keras where the claim means something there."""

from bnspec.claims._model import KD, KERAS316, PAPER, TORCH, Claim, Expect, HOLDS, REFUTED

ORDER = 230
TITLE = "Field traps: Keras 3 across backends"

JAX_STATELESS_CALL = (
    "Keras <= 3.15's JAX trainer calls model.stateless_call(..., training=True), and Layer.stateless_call ran "
    "self.call() directly without entering a call context, so a sublayer called without training= opens a "
    "fresh context with training=None: the BN runs in inference mode during fit() and its moving statistics "
    "stay at their initial 0/1"
)
ONE_PASS = (
    "the batch variance is computed in one pass, E[x^2] - E[x]^2, whose cancellation loses about "
    "(mean/std)^2 * 2^-24 of relative accuracy"
)
SHIFT_UNSAFE = (
    "the inference transform is evaluated as x*inv + (beta - mean*inv) (tf.nn.batch_normalization; "
    "jax/nn.py), so two products of size |mean|*inv are rounded and then cancel: the error grows like "
    "|mean|*inv*2^-24 instead of |x - mean|*inv*2^-24"
)

CLAIMS = (
    Claim(
        "C03",
        "fit() trains a BN whose training flag is not forwarded",
        "For a subclassed model whose call() runs self.bn(self.dense(x)) without passing training= to the BN "
        "layer, one fit() step (SGD with learning rate 0, momentum-0 BN) stores the batch mean and biased "
        "batch variance of dense(x) in the moving statistics, i.e. fit() runs that BN in training mode, on "
        "every backend.",
        "keras-team/keras#20577 (different training behaviour of Sequential and subclassed models with the JAX "
        "backend); keras-team/keras PR #23364 (Layer.stateless_call now propagates the call-context "
        "arguments); keras-team/keras#20378 (JAX guides called stateless_call without training=True); "
        "Keras 3 jax/trainer.py compute_loss_and_updates",
        expected=(
            Expect(HOLDS, case="forwarding=explicit",
                   why="call() passes training=training to the BN, so the trainer's flag reaches it directly"),
            Expect(HOLDS, flavour="keras3", versions=KERAS316, change="keras#23364",
                   why="from Keras 3.16 (seen in keras-nightly 3.16.0.dev) stateless_call enters the call context "
                       "with the trainer's training=True, which the unforwarded sublayer inherits"),
            Expect(REFUTED, flavour="keras3", backend="jax", mechanism="moving_unchanged", why=JAX_STATELESS_CALL),
            Expect(HOLDS, why="the TensorFlow and PyTorch trainers (and tf_keras) call self(x, training=True), "
                              "which opens a call context the unforwarded BN inherits"),
        ),
        note=("Dense(3) (seeded weights) -> BatchNormalization(momentum=0) in a subclassed model; one fit() step on 16 examples "
              "of mean 3 with SGD(0.0), so the kernel is unchanged (checked bitwise) and dense(x) can be "
              "recomputed in float64. The moving mean and variance are compared with the batch statistics of "
              "dense(x) (reference.ema_bounds plus the Dense rounding); the alternative, moving statistics left "
              "at 0 and 1, must be further away than the bound. A refutation is confirmed by the moving "
              "statistics being finite and bitwise at their initial values AND fit()'s reported loss being the "
              "MSE of the inference-mode output (within its derived bound). Believed (TRAPS.md): refuted on JAX "
              "<= 3.15, holds on TensorFlow, torch and >= 3.16. Measured: as believed. On Keras 3.15.1 JAX the "
              "moving statistics stay bitwise 0/1 and fit() reports the inference-mode MSE (9.764, where the "
              "training-mode MSE is 1.406); TensorFlow, torch, tf_keras and keras-nightly 3.16.0.dev on JAX "
              "store the batch statistics (within 0.05 x the bound). keras-nightly's JAX and torch cases were "
              "measured with jax/torch imported into the keras-nightly interpreter from .venv (its tox env has "
              "neither)."),
        advice=("on Keras <= 3.15 with the JAX backend always forward training= to every sublayer in a "
                "subclassed model's call() (self.bn(h, training=training)); otherwise BN never trains under "
                "fit() and predictions use the initial statistics"),
    ),
    Claim(
        "C05",
        "batch variance accurate for large-mean inputs",
        "For float32 inputs x = c + N(0, 1) (64 examples, 32 features) with c in {1e1, 1e2, 1e3, 1e4}, the "
        "training-mode batch variance BN stores with momentum 0 is within the float32 error bound of the "
        "two-pass algorithm (mean first, then the mean of squared deviations), and the training-mode outputs "
        "are finite: on every backend and with synchronized=True.",
        "keras-team/keras#19072 and commit 9815ac1 (TensorFlow -> tf.nn.moments, JAX -> jnp.var); keras-team/"
        "keras PR #18795 (clamp of the one-pass variance); Keras 3 torch/nn.py moments ('faster but less "
        "numerically stable'); Keras 3 tensorflow/nn.py _compute_moments_sync; tf_keras "
        "_sync_calculate_mean_and_var; google/flax#1491",
        expected=(
            Expect(REFUTED, case="synchronized=True", mechanism="one_pass_cancellation",
                   why="synchronized=True always takes the all-reduce path (outside a strategy the default replica "
                       "context is used) where " + ONE_PASS + "; the result is clamped at 0, so at c = 1e4 the "
                       "variance is 0 and the outputs are scaled by 1/sqrt(epsilon)"),
            Expect(REFUTED, flavour="keras3", backend="torch", mechanism="one_pass_cancellation",
                   why="on the torch backend " + ONE_PASS + ", without a clamp: at c = 1e4 the variance is "
                       "negative and rsqrt(var + epsilon) makes outputs NaN"),
            Expect(HOLDS, why="TensorFlow's tf.nn.moments and JAX's jnp.var are two-pass"),
        ),
        note=("BatchNormalization(momentum=0) called once with training=True. Bounds (n = 64, u = 2^-24, "
              "recursive sums): two-pass |err| <= (n+2)u*var + (1+(n+2)u)*dm^2 with dm = n*u*mean|x| the float32 "
              "mean's error; one-pass (the mechanism) |err| <= (3n+3)u*E[x^2]. The test needs numpy's float32 "
              "one-pass formula on the same data to fall outside the two-pass bound (else NoPower), counts "
              "non-finite outputs (the claim is about them) and records the relative error. Believed (TRAPS.md): "
              "holds TF plain and JAX, refuted torch and synchronized=True. Measured: as believed, already at "
              "c = 10 (relative error 4.2e-5 on torch, 2.9e-5 synchronized: 11 and 7 x the two-pass bound; over "
              "20 seeds never below 4.6 x), 0.24-0.26 % at 1e2, 22-24 % at 1e3; at 1e4 torch stores variances "
              "down to -16 and 640 of 2048 outputs are NaN, synchronized=True variances of 0, 8 or 16 (true: 1). "
              "TF plain and JAX stay within 0.05 x the bound (1.3e-6 relative at 1e4). tf_keras: the same as "
              "Keras 3 on TensorFlow."),
        advice=("on the torch backend, and with synchronized=True, centre inputs (subtract a rough mean) before "
                "BN when |mean|/std can reach 10 or more, e.g. raw pixel or sensor values; prefer a "
                "Normalization layer in front of the first BN"),
    ),
    Claim(
        "C13",
        "torch: model.train()/eval() do not switch BN's mode",
        "On the torch backend, where a Keras model is a torch.nn.Module, model.train() followed by model(x) "
        "normalises with the moving statistics and leaves them unchanged, and model.eval() followed by "
        "model(x, training=True) normalises with the batch statistics and updates the moving statistics: "
        "only Keras' training argument selects BN's mode.",
        "Keras 3 backend/torch/layer.py (TorchLayer.forward = Operation.__call__) and torch/trainer.py "
        "(fit() calls self.train() only for wrapped torch layers); BatchNormalization.call reads only "
        f"`training`; {TORCH} (module.train()/eval() select the mode there)",
        expected=(Expect(HOLDS, why="Keras layers ignore torch's Module.training flag; BN reads only its "
                                    "training argument"),),
        note=("A Sequential or subclassed model around one BatchNormalization layer (momentum 0.5, randomised "
              "state), switched to the opposite torch mode first; the output is compared with the float64 "
              "reference of the mode the claim predicts (reference.bn_bound) and the other mode's reference must "
              "be further away; the moving statistics must be bitwise unchanged ('train') or equal the EMA update "
              "('eval'). The test checks that the switch set the model's torch flag and, in the subclassed model, "
              "the BN layer's own flag. Other backends: skipped (no torch.nn.Module). Believed (TRAPS.md): holds. "
              "Measured: holds on 3.15.1 and 3.16.0.dev. Also found: in Sequential and Functional models train()/"
              "eval() do not even reach the layers' torch flags (Keras' Functional registers no layer as a torch "
              "child module; only attributes of a subclassed model are)."),
        advice=("in a PyTorch-style custom loop over a Keras model, pass training=True/False explicitly; "
                "model.train() and model.eval() do not change what BatchNormalization does"),
    ),
    Claim(
        "C14",
        "gradients follow the paper on every backend",
        "The gradients of sum(dy * BN(x, training=True)) with respect to x, gamma and beta equal the paper's "
        "chain-rule formulas (through the batch mean and variance) within their float32 bound, on the "
        "TensorFlow, JAX and torch backends.",
        f"keras-team/keras PR #19102 (v3.0.5: 'Fix wrong gradients for torch batch_norm and moments', the "
        f"statistics were detached); {PAPER} section 3",
        expected=(Expect(HOLDS, why="every backend differentiates through moments(); torch stopped detaching the "
                                    "statistics in Keras 3.0.5"),),
        note=("Gradients through bnspec.measure.backend.gradients (tf.GradientTape, jax.grad, torch.autograd) against "
              "reference.bn_backward with reference.bn_backward_bound; the test needs the detached-statistics "
              "gradient (what torch gave before 3.0.5) to fall outside the bound. Shapes 7 x 3, 8 x 4 x 4 x 6 "
              "(axis -1) and 8 x 6 x 4 x 4 (axis 1). Believed (TRAPS.md): holds on current releases. Measured: "
              "holds on every backend, tf_keras and keras-nightly; worst error 0.1 x the bound (torch, 7 x 3)."),
        advice="none needed on Keras >= 3.0.5; on older Keras 3 with the torch backend, upgrade",
    ),
    Claim(
        "C19",
        "biased moving variance and Keras' EMA on every backend",
        "On every backend one training-mode call with momentum 0 stores the biased (1/m) batch variance in "
        "moving_variance, and with momentum 0.9 each call does moving <- 0.9*moving + 0.1*batch statistic "
        "(Keras' convention; torch.nn's momentum=0.1 weighs the same way but tracks the unbiased variance), "
        "for dense and convolutional (channels-last) inputs.",
        f"{KD} (moving_var = moving_var * momentum + var(batch) * (1 - momentum)); {TORCH} (running_var uses "
        "the unbiased variance, momentum is the weight of the new value); Keras 3 jax/nn.py (jnp.var, ddof 0), "
        "torch/nn.py (one-pass biased), batch_normalization.py update",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="rank=4", mechanism="unbiased_moving_variance",
                   why="tf_keras runs 4-D inputs through TensorFlow's fused kernel, which feeds the Bessel-corrected "
                       "m/(m-1) batch variance into the moving variance"),
            Expect(HOLDS, why="every Keras 3 backend computes the biased variance (tf.nn.moments, jnp.var, the "
                              "torch one-pass formula) and the layer applies the same EMA"),
        ),
        note=("Batches of m = 8 elements per feature (8 x 5 and 2 x 2 x 2 x 5), so the unbiased alternative "
              "(x 8/7) and the swapped convention (0.1*moving + 0.9*batch) are both further from the "
              "reference than its float32 bound (reference.ema_bounds, accumulated over the calls); momentum "
              "0.9 runs 3 calls from a randomised state. Believed (TRAPS.md): holds on Keras 3 jax and torch. "
              "Measured: holds on all three Keras 3 backends and on tf_keras for dense inputs; tf_keras 4-D is "
              "unbiased (the known K16/E03 behaviour)."),
        advice=("when porting between Keras and torch.nn, convert momentum as keras = 1 - torch and the moving "
                "variance by (m-1)/m; Keras' moving variance is biased on every Keras 3 backend"),
    ),
    Claim(
        "C20",
        "inference error independent of the moving-mean offset",
        "With moving mean c (c in {0, 1e2, 1e4, 1e5}), moving variance 1e-4 and x = c + 0.01*N(0, 1), the "
        "inference-mode output is within the float32 rounding bound of the shift-safe evaluation "
        "(x - mean) * (gamma*rsqrt(var + eps)) + beta, which does not grow with c.",
        "keras-team/keras#19649 (Keras 2 -> 3 numeric differences); keras-team/keras#20507; tf.nn."
        "batch_normalization (x * inv + (offset - mean * inv)); Keras 3 jax/nn.py batch_normalization "
        "(x * inv + (-mean * inv + offset)), torch/nn.py ((x - mean) * inv + offset)",
        expected=(
            Expect(HOLDS, case="offset=0", why="with c = 0 both evaluation orders round the same small products"),
            Expect(HOLDS, flavour="keras3", backend="torch", why="the torch backend subtracts the mean first"),
            Expect(HOLDS, flavour="tfkeras", case="rank=4",
                   why="tf_keras sends 4-D inputs to the fused kernel, which centres first ((x - mean) * scale)"),
            Expect(REFUTED, mechanism="product_cancellation", why=SHIFT_UNSAFE),
        ),
        note=("BatchNormalization (epsilon 1e-3, the default, so tf_keras' fused kernel does not clamp it; "
              "inv = 30.2) with gamma 1, beta 0, built for 256 x 4 (rank 2) or 16 x 4 x 4 x 4 (rank 4) inputs. "
              "Shift-safe bound (derived in the test): u*(6|x - mean|*inv + 2|y|); the mechanism of a refutation "
              "is that the error is within reference.bn_bound, the bound of x*inv + (beta - mean*inv), "
              "u*(4(|x| + |mean|)*inv + 2|beta| + |y|), and beyond the shift-safe one. Believed (TRAPS.md): "
              "refuted on TF/JAX, holds on torch. Measured: as believed; on TF and JAX (bitwise the same errors) "
              "the error is 2.0e-4 at c = 1e2, 1.6e-2 at 1e4 and 7.2e-2 at 1e5 for outputs of standard deviation "
              "0.3 (a quarter of it), within 0.14 x the product-order bound; torch stays at 6e-8 (0.12 x the "
              "shift-safe bound); tf_keras is refuted for dense inputs and holds for 4-D (fused kernel)."),
        advice=("don't let BN's moving mean carry a large offset relative to the feature's spread: centre the "
                "inputs (or fold the offset into the preceding layer's bias) when |mean|/std exceeds about 1e3; "
                "a model exported from TF/JAX and compared with a torch run will show these differences"),
    ),
    Claim(
        "C21",
        "very large batches give float32-accurate statistics",
        "For one training-mode call on a (64, 224, 224, 3) float32 batch uniform in [0, 255] (3.2M elements "
        "per channel), the batch mean and variance BN stores (momentum 0) agree with float64 within the "
        "error bound of pairwise summation, (L + 1)*u*mean|x| for the mean and (3L + 6)*u*E[x^2] for the "
        "variance (L = ceil(log2 m) = 22), on every backend.",
        "numpy/numpy#11331 (float32 mean of a large image batch far off), numpy/numpy#29772, jax-ml/jax#585 "
        "and #4199 (float32 reduction accuracy on CPU); Keras 3 tensorflow/nn.py moments (tf.nn.moments)",
        expected=(
            Expect(HOLDS, case="device=gpu",
                   why="unmeasured (no GPU lent): GPU reductions are tree-shaped (CUB, XLA), believed pairwise-"
                       "accurate"),
            Expect(REFUTED, flavour="tfkeras", mechanism="non_pairwise_summation",
                   why="tf_keras' fused CPU kernel reduces 4-D batches in long sequential blocks: its error "
                       "exceeds the pairwise bound, within the bound of recursive summation"),
            Expect(REFUTED, flavour="keras3", backend="tensorflow", mechanism="sequential_summation",
                   why="TensorFlow's CPU reduction over the outer axes of a channels-last tensor adds the rows one "
                       "after another: tf.nn.moments' mean and variance are bitwise the sequential float32 sums "
                       "divided by m, whose error grows like m*u"),
            Expect(HOLDS, why="JAX (XLA CPU) and torch reduce in a tree-like order"),
        ),
        note=("Bounds: pairwise summation of m terms errs by <= ceil(log2 m)*u*sum|x_i| (Higham, Accuracy and "
              "Stability, 4.2), plus one rounding for the division; the variance bound covers both the two-pass "
              "and the one-pass formula. Recursive (sequential) summation's bound, (m-1)*u*sum|x_i|, is 1.6e5 "
              "times wider here (19 % relative): useless as a claim of accuracy, which is why the pairwise bound "
              "is the one stated. The test needs numpy's row-by-row float32 sum of the same data to fall outside "
              "the pairwise bound (else NoPower). Believed (TRAPS.md): TF and torch hold, JAX uncertain. "
              "Measured: the opposite for TF: Keras 3 on TensorFlow is off by 4.7e-5 (mean) and 1.7e-3 (variance) "
              "relative, 34 and 100 x the pairwise bounds, and bitwise equal to the sequential float32 sums; "
              "tf_keras' fused kernel 2.5e-5 and 6.5e-4 (19 and 37 x); JAX (6.8e-8, 4.1e-8) and torch (6.8e-8, "
              "3.8e-7) hold within 0.05 x. The GPU case is unmeasured (no GPU lent)."),
        advice=("on the TensorFlow backend (and tf_keras) expect BN's batch statistics of very large batches "
                "(millions of elements per channel, e.g. high-resolution images) to be off by 1e-3 relative in "
                "the variance; centring inputs near zero reduces the error, float64 or a GPU removes it"),
    ),
)
