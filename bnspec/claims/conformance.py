"""The anchors' own tests: what ONNX's, PyTorch's and Keras' test suites assert about Batch Normalization,
measured on Keras' BatchNormalization (issue #25).

A01-A03 run ONNX's own BatchNormalization cases (their inputs and attributes, with ONNX's reference evaluator
as the expected output) through Keras; A04-A17 are the behaviours PyTorch's and Keras' test files assert
that no other claim measured: second derivatives, eval-mode gradients, argument validation, momentum=1,
center/scale, regularizer losses, masks in inference and under fit(), and renorm's bookkeeping. Which
assertion of which anchor test each claim covers is bnspec/claims/_coverage.py (reports/COVERAGE.md).

Tests: tests/claims/test_conformance.py (ONNX cases skip, unmeasured, without onnx; torch's own checks
are evidence only where torch is installed)."""

from bnspec.claims._model import KERAS316, Claim, Expect, FUSED_UNBIASED, HOLDS, KD, REFUTED, TORCH

ORDER = 115
TITLE = "The anchors' own tests (ONNX, PyTorch, Keras)"

ONNX_NODE = "onnx/backend/test/case/node/batch_normalization.py (the installed onnx)"
ONNX_CONVERTED = "onnx/backend/test/data/pytorch-converted/test_BatchNorm*_eval (the installed onnx)"
KERAS_TEST = "keras/src/layers/normalization/batch_normalization_test.py at v3.15.1"
TORCH_TESTS = "PyTorch test/test_nn.py, torch/testing/_internal/common_modules.py, common_methods_invocations.py"

STOP_GRADIENT_MEAN = (
    "Keras 3's TensorFlow backend computes the batch moments with tf.nn.moments, which takes the variance "
    "around tf.stop_gradient(mean): first derivatives are unaffected (d var / d mean = 0 at the batch mean), "
    "but double backprop misses the mean's dependence inside the variance, the term -gamma*a*mean(v)/s^2 "
    "(a = mean(dL/dy * x_hat)) of the Hessian-vector product"
)
ACCEPTS_EPSILON = (
    "Keras' BatchNormalization stores float(epsilon) without a check: epsilon = 0 gives 0/0 = NaN for a "
    "constant feature, and a negative epsilon the square root of a negative number for every feature whose "
    "batch variance is below |epsilon|"
)
ACCEPTS_MOMENTUM = (
    "Keras 3.15's BatchNormalization stores float(momentum) without a range check; the update "
    "moving*momentum + batch*(1-momentum) then extrapolates beyond the old value and the batch statistic"
)

TFKERAS_CLIPPING = (
    "tf_keras' BatchNormalization checks only renorm_clipping's keys; Keras 3 (3.14, Batch Renormalisation "
    "PR #22047) added the rmax >= rmin and dmax >= 0 checks"
)

CLAIMS = (
    Claim(
        "A01",
        "ONNX's BatchNormalization node cases",
        "Each of ONNX's own BatchNormalization node test cases (test_batchnorm_example, test_batchnorm_epsilon and "
        "their training_mode variants: their inputs, scale, bias, mean, var and attributes) run through Keras' "
        "BatchNormalization (axis=1, ONNX's epsilon and momentum 0.9) gives ONNX's expected output, and in "
        "training mode ONNX's running mean and running variance, within float32 rounding.",
        f"{ONNX_NODE}; expected outputs from onnx.reference.ReferenceEvaluator",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="case=test_batchnorm_example_training_mode", why=FUSED_UNBIASED,
                   mechanism="unbiased_moving_variance"),
            Expect(REFUTED, flavour="tfkeras", case="case=test_batchnorm_epsilon_training_mode", why=FUSED_UNBIASED,
                   mechanism="unbiased_moving_variance"),
            Expect(HOLDS),
        ),
        note="a case's bound is Keras' float32 error bound plus that of ONNX's float32 reference evaluator, both "
             "against the exact (float64) result of the same inputs; the evidence records the onnx version, "
             "ONNX's and Keras' defaults, and ONNX's own test tolerance (rtol 1e-3, atol 1e-7)",
    ),
    Claim(
        "A02",
        "ONNX's pytorch-converted BatchNorm eval models",
        "Each of ONNX's pytorch-converted BatchNorm eval models (test_BatchNorm1d_3d_input_eval, "
        "test_BatchNorm2d_eval, test_BatchNorm2d_momentum_eval, test_BatchNorm3d_eval, "
        "test_BatchNorm3d_momentum_eval: PyTorch 0.3 exports with their stored input and output) loaded into "
        "Keras' BatchNormalization (axis=1, the model's epsilon, weights from its initializers) gives the stored "
        "output in inference mode within float32 rounding.",
        f"{ONNX_CONVERTED}; model.onnx + test_data_set_0",
        note="the stored output was computed by PyTorch 0.3 in float32; ONNX's reference evaluator is recorded "
             "beside it",
    ),
    Claim(
        "A03",
        "ONNX's conventions are Keras' (only defaults differ)",
        "ONNX's BatchNormalization (opset 15, training_mode=1) and Keras' share their conventions: the momentum "
        "weighs the old running value (running = running*momentum + batch*(1-momentum)) and the running "
        "variance is the biased (1/m) batch variance, so a Keras layer with ONNX's momentum and epsilon tracks "
        "ONNX's running statistics; only the defaults differ (ONNX: momentum 0.9, epsilon 1e-5; Keras: 0.99, 1e-3).",
        f"ONNX operator spec, BatchNormalization-15; {KD}",
        note="the power checks run ONNX with PyTorch's reading of the momentum (1 - momentum) and with the "
             "unbiased variance: each must be far from ONNX's output",
    ),
    Claim(
        "A04",
        "second derivatives are exact",
        "Second derivatives through BN are exact: the Hessian-vector product of a loss through BN by double "
        "backprop (training and inference mode) equals the exact formula's (checked by central differences), as "
        "PyTorch's gradgradcheck asserts for F.batch_norm.",
        f"{TORCH_TESTS} (test_batchnorm_grad: _assertGradAndGradgradChecks; OpInfo nn.functional.batch_norm "
        "supports_fwgrad_bwgrad)",
        expected=(
            Expect(REFUTED, backend="tensorflow", case="impl=keras_layer,mode=training", why=STOP_GRADIENT_MEAN,
                   mechanism="stop_gradient_mean"),
            Expect(HOLDS),
        ),
        note="loss 0.5*sum(c*y^2) over 60 x 8 inputs in float64 where the backend computes in float64 "
             "(TensorFlow, PyTorch; JAX without jax_enable_x64 computes in float32 and is compared with a float32 "
             "bound); impl=torch_F_batch_norm is PyTorch's own op, the anchor itself",
        advice="on the TensorFlow backend do not trust Hessians, Hessian-vector products or gradient penalties "
               "through a training-mode BN layer: the mean's second-order term is missing",
    ),
    Claim(
        "A05",
        "eval-mode gradients: the fixed affine map's",
        "In inference mode BN's gradients are those of its fixed affine map: d/dx = gamma*dy/sqrt(var+eps), "
        "d/dgamma = sum(dy*(x-mean)/sqrt(var+eps)), d/dbeta = sum(dy) with the moving statistics, the same on a "
        "second pass (bitwise) and with the moving statistics unchanged, as PyTorch's test_batchnorm_eval asserts.",
        f"{TORCH_TESTS} (TestNNDeviceType.test_batchnorm_eval, test_batchnorm_grad with training=False)",
    ),
    Claim(
        "A06",
        "epsilon <= 0 is refused",
        "A BatchNormalization layer refuses epsilon <= 0, as PyTorch's does in training ('batch_norm eps must be "
        "positive', common_modules' ErrorModuleInput eps=-1.0).",
        f"{TORCH_TESTS} (module_error_inputs_torch_nn_BatchNorm1d_2d_3d)",
        expected=(Expect(REFUTED, why=ACCEPTS_EPSILON, mechanism="accepts_nonpositive_epsilon"),),
        note="the evidence records what torch.nn.BatchNorm1d itself says for the same epsilon (when torch is installed)",
        advice="Keras does not check epsilon: a zero or negative epsilon turns constant or low-variance features "
               "into NaN without an error",
    ),
    Claim(
        "A07",
        "momentum outside [0, 1] is refused",
        "A BatchNormalization layer refuses a momentum outside [0, 1] (-0.1 and 1.5) and accepts the boundary "
        "values 0 and 1.",
        "Keras' batch_normalization_test.py in a revision after v3.15.1 (test_invalid_momentum, \"`momentum` must "
        "be\"; seen in the search index's copy of keras-team/keras, not on the mirrored master); PyTorch's OpInfo "
        "samples pass momentum -1.2 and -1.0 to F.batch_norm, which accepts them",
        expected=(
            Expect(HOLDS, flavour="keras3", versions=KERAS316, change="keras: momentum range check (test_invalid_momentum)",
                   why="keras-nightly 3.16.0.dev refuses it: \"Argument `momentum` must be a float in the range [0, 1]\""),
            Expect(REFUTED, case="momentum=-0.1", why=ACCEPTS_MOMENTUM, mechanism="moving_mean_extrapolates"),
            Expect(REFUTED, case="momentum=1.5", why=ACCEPTS_MOMENTUM, mechanism="moving_mean_extrapolates"),
            Expect(HOLDS),
        ),
        note="cases momentum=0.0 and 1.0 check the boundary values the anchor accepts",
    ),
    Claim(
        "A08",
        "statistics of the wrong shape are refused",
        "Assigning a moving mean, moving variance, gamma or beta with one feature too few or too many (9 or 11 "
        "for 10 features), by variable.assign or set_weights, raises an error and leaves the variable unchanged, "
        "as F.batch_norm raises for running statistics, weight or bias of the wrong size.",
        f"{TORCH_TESTS} (test_batchnorm_raises_error_if_{{running_mean,running_var,weight,bias}}_is_not_same_size_as_input)",
    ),
    Claim(
        "A09",
        "momentum=1.0 keeps the statistics bitwise",
        "With momentum=1.0 training-mode calls leave the moving mean and variance bitwise unchanged (PyTorch's "
        "test_batchnorm_buffer_update_when_stats_are_not_tracked asserts the same, torch.equal, for "
        "track_running_stats=False), while the output still uses the batch statistics.",
        f"{TORCH_TESTS} (TestNN.test_batchnorm_buffer_update_when_stats_are_not_tracked); {KD} (momentum)",
    ),
    Claim(
        "A10",
        "center/scale=False = beta 0 / gamma 1",
        "center=False behaves as beta = 0 and scale=False as gamma = 1 (outputs and input gradients in both modes), "
        "and they drop beta and gamma from the weights: 2, 1, 1 and 0 trainable weights for "
        "center/scale = both, one, the other and neither, always 2 non-trainable.",
        f"{TORCH_TESTS} (TestNNDeviceType.test_batchnorm_affine); {KERAS_TEST} (test_bn_basics)",
    ),
    Claim(
        "A11",
        "regularizer losses appear in layer.losses",
        "beta_regularizer and gamma_regularizer each add one loss to layer.losses, equal to the regularizer of "
        "the weight (L2 default 0.01*sum(w^2)).",
        f"{KERAS_TEST} (test_bn_basics, image case: expected_num_losses=2); {KD}",
    ),
    Claim(
        "A12",
        "a mask is ignored in inference (bitwise)",
        "In inference mode a mask changes nothing: layer(x, training=False, mask=m), and x through a Masking "
        "layer, give bitwise the output of layer(x, training=False).",
        f"{KERAS_TEST} (test_correctness: \"Masked result with no training should not differ\")",
    ),
    Claim(
        "A13",
        "fit() with a Masking layer: statistics of unmasked steps",
        "Training a Masking -> BatchNormalization(momentum=0) model with fit() stores the mean and the biased "
        "variance of the unmasked steps only as moving statistics, eagerly and compiled, whatever the mask value.",
        f"{KERAS_TEST} (test_bachnorm_ignore_masked_values)",
    ),
    Claim(
        "A14",
        "moving variance beyond float16 range survives AutocastScope",
        "Inside a float16 AutocastScope a float32 moving variance can be assigned a value beyond float16's range "
        "(70000) and keeps it exactly.",
        f"{KERAS_TEST} (test_large_value_within_autocast_scope)",
    ),
    Claim(
        "A15",
        "renorm's extra weights and their initial values",
        "With renorm=True the layer has 2 trainable and 5 non-trainable weights (moving_stddev, renorm_mean and "
        "renorm_stddev added), with or without renorm_clipping, and moving_stddev and renorm_stddev start at the "
        "square root of the moving variance's initial value.",
        f"{KERAS_TEST} (test_renorm_basics, test_renorm_stddev_initializer)",
    ),
    Claim(
        "A16",
        "invalid renorm_clipping is refused",
        "renorm_clipping with an unknown key, rmax < rmin, or dmax < 0 is refused with a ValueError ('Received "
        "invalid keys', 'rmax should be', 'dmax should be non-negative').",
        f"{KERAS_TEST} (test_renorm_invalid_clipping_keys)",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="problem=rmax_below_rmin", why=TFKERAS_CLIPPING,
                   mechanism="clipping_accepted"),
            Expect(REFUTED, flavour="tfkeras", case="problem=negative_dmax", why=TFKERAS_CLIPPING,
                   mechanism="clipping_accepted"),
            Expect(HOLDS),
        ),
        note="the evidence records whether the message shows the received values: in Keras 3.15.1 the rmax/rmin "
             "and dmax messages are not f-strings and print a literal '{rmax}', '{rmin}', '{dmax}'",
    ),
    Claim(
        "A17",
        "renorm arguments survive get_config/from_config",
        "get_config()/from_config() keeps renorm, renorm_clipping and renorm_momentum: the rebuilt layer's config "
        "equals the original's.",
        f"{KERAS_TEST} (test_serialization)",
    ),
    Claim(
        "A18",
        "renorm=True: statistics after one training step",
        "With renorm=True one training step moves renorm_mean and renorm_stddev by their EMA with renorm_momentum "
        "(toward the batch mean and sqrt(batch variance + epsilon)), moving_mean and moving_stddev by their EMA "
        "with momentum, and sets moving_variance = moving_stddev^2 - epsilon.",
        f"{KERAS_TEST} (test_renorm_correctness, the statistics part; its output part is K17)",
        note="the power checks swap the two momenta, and compare with the plain EMA of the batch variances",
    ),
    Claim(
        "A19",
        "a fully masked zero batch outputs zeros",
        "In training mode a batch whose every step is masked (mask all 0) and whose inputs are 0 gives an output of "
        "exactly 0 (center=scale=False), not 0/0.",
        f"{KERAS_TEST} (test_input_fully_masked; its synchronized=True case is never generated: see the coverage table)",
        note="the evidence also records what a fully masked non-zero batch outputs: x/sqrt(epsilon) (the masked "
             "statistics are 0), which C15 is about for the moving statistics",
    ),
)
