"""The coverage table (data only): every assertion of the anchors' BatchNormalization tests -- Keras 3.15.1's
batch_normalization_test.py, PyTorch's BN tests, ONNX's BN node tests -- and the bnspec claim(s) that measure
the same behaviour on Keras, or why none applies. Rendered by bnspec.report.coverage (reports/COVERAGE.md);
kept honest by tests/unit/test_coverage.py (every claim id exists, no row is blank, the page states the counts).

A row is one assertion of one anchor test (the same assertion over a test's parametrisations is one row; the
cases are listed per test in CASES). `claims`: the claim ids that measure it (the first is the closest);
`na`: why no claim applies (then `claims` is empty); `note`: how the claim relates when it measures a
neighbouring statement (e.g. Keras outputs beta where PyTorch raises). No import of Keras or bnspec here.

Underscore module: bnspec.claims' topic discovery skips it (it holds no claims).

Size: data, one row per anchor assertion (133 rows); splitting the table would only scatter it.
"""

from __future__ import annotations

from typing import NamedTuple


class Anchor(NamedTuple):
    key: str
    name: str
    source: str  # what was read, at which version
    selection: str  # how the rows were chosen


class Row(NamedTuple):
    anchor: str  # Anchor.key
    test: str
    assertion: str
    claims: tuple[str, ...] = ()
    na: str = ""  # not applicable: why (claims empty)
    note: str = ""


ANCHORS = (
    Anchor(
        "keras", "Keras 3.15.1: batch_normalization_test.py",
        "keras-team/keras tag v3.15.1, keras/src/layers/normalization/batch_normalization_test.py (13 tests, 33 "
        "generated cases); the layer it tests is byte-identical to the installed keras 3.15.1's",
        "every assertion of every test, including the checks run_layer_test makes from the arguments each call "
        "passes it; a parametrised test's assertions are one row each, its cases listed once",
    ),
    Anchor(
        "torch", "PyTorch: test_nn.py, test/nn/, common_modules.py, common_methods_invocations.py",
        "test/test_nn.py at the search index's only stored revision, commit 74f2fa66 (640,159 characters; no version "
        "file is stored at that commit; the file cites pytorch/pytorch#156513 and ROCm 7.0, so it is a main-branch "
        "revision of mid-2025 or later; the torch wheel ships no tests); test/nn/test_lazy_modules.py (commit "
        "020ccced), test_load_state_dict.py (14bf97ae), test_module_hooks.py (01003456), test_parametrization.py "
        "(017943b7), test_pruning.py (058aaae3) and the small test_fast_normalization.py, test_stride_check.py, "
        "test_optimizer_hooks.py and test_linear_module_validation.py, each the version the index stores; "
        "torch/testing/_internal/common_modules.py, common_methods_invocations.py and common_nn.py of the installed "
        "torch 2.13.0 (git cf30153c)",
        "test_nn.py was read end to end (all 640k characters): every test whose name contains batchnorm, BatchNorm or "
        "batch_norm, and every other test that asserts something of a BatchNorm module or function (TestNN."
        "test_state_dict, TestFusionEval's conv+BN fusion, TestFusionUtils' fuse_*_bn_weights, TestUtils' state_dict "
        "prefix test); the legacy module_tests/get_new_module_tests harness test_nn.py registers holds no BatchNorm "
        "entry (common_nn.py names none). test/nn/: the files named above were read in full; every "
        "test that builds a BatchNorm or LazyBatchNorm has its rows (test_lazy_modules, test_load_state_dict, "
        "test_module_hooks); test_parametrization, test_pruning and the four small files hold none. Not read: "
        "test/nn/test_convolution.py, test_pooling.py, test_embedding.py, test_dropout.py, test_init.py, "
        "test_multihead_attention.py, test_packed_sequence.py, test_pack_linear.py, test_rope.py and attention/ "
        "(their subjects are other modules; a BN assertion there would be missing), nor BN tests elsewhere in test/ "
        "(test_mkldnn.py, the distributed SyncBatchNorm tests, quantization and fx/inductor conv-BN fusion), which are "
        "outside this anchor. common_modules: each ModuleInput of the BatchNorm1d/2d/3d ModuleInfos and their shared "
        "ErrorModuleInput (there is no LazyBatchNorm or SyncBatchNorm ModuleInfo); common_methods_invocations: each "
        "sample of sample_inputs_batch_norm (the nn.functional.batch_norm OpInfo and its CUDA-only without_cudnn "
        "variant; native_batch_norm, _native_batch_norm_legit and _batch_norm_with_update reuse the same samples, "
        "less the empty ones and, for the last, those missing running statistics, weight or bias); plus one row each "
        "for the generic "
        "ModuleInfo/OpInfo suites' checks that touch BN semantics (gradcheck, gradgradcheck, train/eval difference, "
        "dtypes) and one for the rest",
    ),
    Anchor(
        "onnx", "ONNX 1.23.2: BatchNormalization node tests",
        "the installed onnx 1.23.2: onnx/backend/test/case/node/batch_normalization.py (its own case definitions; "
        "1.23 ships no .pb files for them) and backend/test/data/pytorch-converted/test_BatchNorm*_eval",
        "every BatchNormalization case the installed onnx defines (collect_testcases('BatchNormalization')) and "
        "every pytorch-converted model named test_BatchNorm*; pytorch-operator holds none",
    ),
)

_CORRECTNESS = tuple(
    f"axis={axis}, input_shape={shape}, moving_mean_initializer='{mm}', moving_variance_initializer='{mv}'"
    for axis in (-1, 1) for shape in ("(5, 2, 3)", "(5, 3, 3, 2)") for mm in ("zeros", "ones") for mv in ("zeros", "ones")
)

# Keras' tests and the cases absl's parameterized.product generates for them at v3.15.1 (13 tests, 33 cases)
CASES = {
    "test_bn_basics": ("(not parametrised)",),
    "test_correctness": _CORRECTNESS,
    "test_input_fully_masked": ("synchronized=False",),
    "test_bachnorm_ignore_masked_values": tuple(
        f"run_eagerly={e}, mask_value={v}" for e in (True, False) for v in ("0.0", "0.1", "1")),
    "test_trainable_behavior": ("(not parametrised)",),
    "test_large_value_within_autocast_scope": ("(not parametrised)",),
    "test_masked_broadcast_normalization": ("(not parametrised)",),
    "test_renorm_basics": ("(not parametrised)",),
    "test_renorm_invalid_clipping_keys": ("(not parametrised)",),
    "test_renorm_stddev_initializer": ("(not parametrised)",),
    "test_renorm_inference": ("(not parametrised)",),
    "test_renorm_correctness": ("(not parametrised)",),
    "test_serialization": ("(not parametrised)",),
}

# defects in Keras' test file and layer, verified in the v3.15.1 source and by the measurements named
DEFECTS = (
    ("test_input_fully_masked",
     "`synchronized=((False, True) if backend.backend == \"tensorflow\" else (False,))` compares the function "
     "keras.src.backend.backend (imported as `from keras.src.backend.config import backend`) with a string, which is "
     "never equal: parameterized.product gets (False,) on every backend, so the synchronized=True case is never "
     "generated (33 cases run instead of 34). Verified in the v3.15.1 source; A19 measures the intended case "
     "(synchronized=True on TensorFlow) and K11 synchronized=True on one replica."),
    ("test_renorm_invalid_clipping_keys",
     "the layer's messages for rmax < rmin and dmax < 0 are plain strings, not f-strings: they print a literal "
     "'Received: rmax={rmax}, rmin={rmin}.' and 'Received: dmax={dmax}.'; the test's regexes match only the "
     "message prefix, so it passes. Verified in the v3.15.1 source (batch_normalization.py) and measured by A16 "
     "(evidence message_shows_literal_placeholders)."),
)

_T = "torch"
_K = "keras"
_O = "onnx"
CUDA = "CUDA-only parity between torch's own kernels (cuDNN/MIOpen, native, CPU, memory formats): no Keras counterpart"
SIMPLE_AVERAGE = ("momentum=None (a cumulative moving average) has no Keras counterpart; the population statistics "
                  "of Algorithm 2 are P03 and E05")

ROWS = (
    # ------------------------------------------------------------------ Keras 3.15.1
    Row(_K, "test_bn_basics", "center=scale=True (input (2, 3), training=True): 2 trainable and 2 non-trainable weights",
        ("A10", "K05")),
    Row(_K, "test_bn_basics", "center=scale=False: 0 trainable and 2 non-trainable weights", ("A10",)),
    Row(_K, "test_bn_basics", "image case (2, 4, 4, 3) with beta_regularizer='l2' and gamma_regularizer='l2': 2 losses",
        ("A11",)),
    Row(_K, "test_bn_basics", "output shape equals the input shape ((2, 3) and (2, 4, 4, 3))", ("K01", "K15"),
        note="every output comparison of K01/K15 is elementwise against a reference of the input's shape"),
    Row(_K, "test_bn_basics", "expected_num_seed_generators=0", (),
        na="BN draws no random numbers: a count of Keras' seed-generator objects is framework bookkeeping"),
    Row(_K, "test_bn_basics", "supports_masking=True (run_layer_test calls the layer with a mask)", ("K10", "A12")),
    Row(_K, "test_bn_basics", "run_layer_test's generic checks on each configuration: get_config/from_config round trip, "
        "a model saved and reloaded", ("K13", "K14")),
    Row(_K, "test_correctness", "after 3 training calls with momentum 0, the output with beta and gamma undone has "
        "per-feature mean 0 and std 1 (atol 1e-3)", ("K01", "P01")),
    Row(_K, "test_correctness", "after them moving_mean ~ 0 and moving_variance ~ 1 (momentum 0: the last batch's "
        "statistics, itself a normalised batch)", ("C19", "K03")),
    Row(_K, "test_correctness", "inference before training (initial moving statistics) differs from the training output",
        ("K02", "L01")),
    Row(_K, "test_correctness", "momentum 0: inference right after a training call equals the training output",
        ("C19", "K03"), note="momentum 0 stores the batch's mean and biased variance; inference uses them"),
    Row(_K, "test_correctness", "a Masking layer on the input does not change the inference output", ("A12",)),
    Row(_K, "test_correctness", "a masked input in training differs from the unmasked inference output", ("K10",)),
    Row(_K, "test_input_fully_masked", "a fully masked zero batch (center=scale=False, training=True) outputs zeros",
        ("A19",), note="C15: what a fully masked batch does to the moving statistics"),
    Row(_K, "test_input_fully_masked", "the synchronized=True case (never generated: see the defect above)", (),
        na="never runs in Keras' suite (`backend.backend == \"tensorflow\"` is always False); its intended check is "
           "A19's synchronized=True case, and K11 covers synchronized=True on one replica"),
    Row(_K, "test_bachnorm_ignore_masked_values", "fit() through Masking(mask_value) -> BN(momentum=0) for 5 epochs "
        "(rmsprop, eager and compiled): moving_mean [1.5, 5.0], moving_variance [0.25, 0.0]", ("A13",)),
    Row(_K, "test_trainable_behavior", "trainable=False: 4 weights, 0 trainable, 4 non-trainable", ("K05",)),
    Row(_K, "test_trainable_behavior", "trainable=False: layer(x, training=True) ~ x (inference with the initial "
        "statistics, epsilon 1e-7)", ("K04",)),
    Row(_K, "test_trainable_behavior", "trainable=True again: 4 weights, 2 trainable, 2 non-trainable", ("K05",)),
    Row(_K, "test_trainable_behavior", "after 10 training calls the output with beta and gamma undone has mean 0 and "
        "std 1 per feature", ("K01",)),
    Row(_K, "test_large_value_within_autocast_scope", "inside AutocastScope('float16') the moving variance keeps an "
        "assigned 70000 (beyond float16's range)", ("A14", "K09")),
    Row(_K, "test_masked_broadcast_normalization", "ones (1, 2, 3, 4) with a (1, 2, 1) mask broadcast over W: "
        "output 0 and its mean 0 (training)", ("C26",)),
    Row(_K, "test_masked_broadcast_normalization", "momentum 0: moving_mean 1 and moving_variance 0", ("C26",)),
    Row(_K, "test_renorm_basics", "renorm=True (input (2, 3)): 2 trainable, 5 non-trainable weights, no losses",
        ("A15",)),
    Row(_K, "test_renorm_basics", "renorm=True with renorm_clipping {rmax 3, rmin 0.3, dmax 5} (input (2, 4, 4, 3)): "
        "2 trainable, 5 non-trainable weights", ("A15",)),
    Row(_K, "test_renorm_invalid_clipping_keys", "an unknown renorm_clipping key raises ValueError 'Received invalid "
        "keys'", ("A16",)),
    Row(_K, "test_renorm_invalid_clipping_keys", "rmax < rmin raises ValueError 'rmax should be'", ("A16",),
        note="the message prints a literal '{rmax}', '{rmin}' (defect above)"),
    Row(_K, "test_renorm_invalid_clipping_keys", "dmax < 0 raises ValueError 'dmax should be non-negative'", ("A16",),
        note="the message prints a literal '{dmax}' (defect above)"),
    Row(_K, "test_renorm_stddev_initializer", "moving_stddev and renorm_stddev start at sqrt(moving variance "
        "initializer) = sqrt(4) = 2", ("A15",)),
    Row(_K, "test_renorm_inference", "renorm and plain layers with the same weights give the same inference output",
        ("K12",)),
    Row(_K, "test_renorm_correctness", "training output ((x - mean)/std * r + d) * gamma + beta with r, d from "
        "renorm_mean and renorm_stddev", ("K17",)),
    Row(_K, "test_renorm_correctness", "renorm_mean and renorm_stddev follow their EMA with renorm_momentum",
        ("A18",)),
    Row(_K, "test_renorm_correctness", "moving_mean and moving_stddev follow their EMA with momentum", ("A18", "K03")),
    Row(_K, "test_renorm_correctness", "moving_variance = moving_stddev^2 - epsilon", ("A18",),
        note="C22 asks what this does to the moving variance as an EMA of the batch variances"),
    Row(_K, "test_serialization", "renorm, renorm_clipping and renorm_momentum survive get_config/from_config",
        ("A17", "K13")),

    # ------------------------------------------------------------------ PyTorch: test_nn.py
    Row(_T, "TestNN.test_batchnorm_nhwc_cpu", "channels-last BatchNorm2d/3d (float, bfloat16, float16, mixed) equals "
        "contiguous: output and weight, bias, input gradients", ("K15", "C14", "K09"),
        note="the memory format itself has no Keras counterpart; the layout axis does (K15)"),
    Row(_T, "TestNN.test_batchnorm_half_overflow", "float16 inputs (4x80x500x500): no inf/NaN, output and input "
        "gradient equal to a float32 module's", ("K09", "C06")),
    Row(_T, "TestNN.test_batchnorm_non_contig_cpu[BatchNorm2d]", "a permuted (non-contiguous) input in eval equals "
        "the contiguous one; bfloat16/float16 input close to float", (),
        na="strides of a torch tensor: Keras converts inputs through its backend, with no layout contract to test"),
    Row(_T, "TestNN.test_batchnorm_non_contig_cpu[SyncBatchNorm]", "the same for SyncBatchNorm in eval", (),
        na="strides of a torch tensor (as above); synchronized BN on one replica is K11"),
    Row(_T, "TestNN.test_batchnorm_cudnn_nhwc", "cuDNN channels-last train step equals contiguous (CUDA)", (), na=CUDA),
    Row(_T, "TestNN.test_batchnorm_cudnn_half", "THNN and cuDNN agree for float16 input (CUDA)", (), na=CUDA),
    Row(_T, "TestNN.test_batchnorm_nonaffine_cuda_half_input", "a float16 input with a float32 module returns "
        "float16, train and eval (CUDA)", ("K09",),
        note="K09 measures the mixed_float16 policy on every device the run has"),
    Row(_T, "TestNN.test_batchnorm_raises_error_if_less_than_one_value_per_channel", "one value per channel in "
        "training raises ValueError", ("N06", "C08"),
        note="Keras raises nothing: a batch of one outputs beta (N06), the moving variance stays finite (C08)"),
    Row(_T, "TestNN.test_batchnorm_raises_error_if_running_mean_is_not_same_size_as_input",
        "running_mean of 9 or 11 values for 10 features raises", ("A08",)),
    Row(_T, "TestNN.test_batchnorm_raises_error_if_running_var_is_not_same_size_as_input",
        "running_var of 9 or 11 values raises", ("A08",)),
    Row(_T, "TestNN.test_batchnorm_raises_error_if_weight_is_not_same_size_as_input",
        "weight of 9 or 11 values raises", ("A08",)),
    Row(_T, "TestNN.test_batchnorm_raises_error_if_bias_is_not_same_size_as_input",
        "bias of 9 or 11 values raises", ("A08",)),
    Row(_T, "TestNN.test_batchnorm_raises_error_if_running_var_or_running_mean_have_forward_grad",
        "forward-mode AD through running_mean/running_var raises", (),
        na="Keras exposes no forward-mode AD, and its moving statistics are non-trainable variables, not inputs"),
    Row(_T, "TestNN.test_batchnorm_buffer_update_when_stats_are_not_tracked", "with track_running_stats switched "
        "off, a training call leaves running_mean, running_var, num_batches_tracked bitwise unchanged", ("A09",),
        note="Keras' analogue is momentum=1.0; it has no num_batches_tracked"),
    Row(_T, "TestNN.test_batchnorm (24 CUDA parametrisations: 2D/3D x train/inference x NCHW vs cpu/native x "
        "float/half/bfloat16)", "cuDNN batchnorm equals the CPU or native kernel: outputs, gradients, running "
        "statistics", (), na=CUDA),
    Row(_T, "TestNN.test_batchnorm_nhwc_cuda", "eval output bitwise equal for contiguous and channels-last (CUDA)",
        (), na=CUDA),
    Row(_T, "TestNN.test_batchnorm_load_state_dict", "num_batches_tracked in state_dict survives load_state_dict "
        "(also from the meta device)", (), na="Keras keeps no count of batches (num_batches_tracked)"),
    Row(_T, "TestNN.test_batch_norm_update_stats", "batch_norm_update_stats on an empty input raises", ("C07",),
        note="Keras raises nothing: an empty batch leaves the moving statistics finite and unchanged (C07)"),
    Row(_T, "TestNN.test_convert_sync_batchnorm", "SyncBatchNorm.convert_sync_batchnorm keeps the state (CUDA)", (),
        na="a torch module-conversion API; Keras' synchronized=True is K11"),
    Row(_T, "TestNN.test_sync_batchnorm_backward_elemt", "batch_norm_backward_elemt agrees across memory formats "
        "(CUDA)", (), na=CUDA),
    Row(_T, "TestNN.test_sync_batchnorm_accuracy_cuda", "batch_norm_stats agrees with torch.mean (CUDA)", (), na=CUDA),
    Row(_T, "TestFusionEval.test_fuse_module_eval_numerics", "conv+BN fused for eval equals conv then BN (affine and "
        "non-affine)", ("P04", "C17")),
    Row(_T, "TestNNDeviceType.test_batchnorm_large_batch", "BatchNorm2d on 880801x1x1x1 runs forward and backward "
        "(CUDA)", ("C21",), note="C21: float32-accurate statistics over 3.2M elements per channel"),
    Row(_T, "TestNNDeviceType.test_BatchNorm_empty", "an empty batch: empty output, zero gradients, running "
        "statistics unchanged", ("C07",)),
    Row(_T, "TestNNDeviceType.test_batchnorm_grad", "gradcheck of F.batch_norm (double, training False and True)",
        ("C14", "E02", "A05")),
    Row(_T, "TestNNDeviceType.test_batchnorm_grad", "gradgradcheck of F.batch_norm (double, training False and True)",
        ("A04",)),
    Row(_T, "TestNNDeviceType.test_batchnorm_eval", "eval: two passes give the same output and input gradient",
        ("A05",)),
    Row(_T, "TestNNDeviceType.test_batchnorm_eval", "track_running_stats=False: eval equals train (batch statistics "
        "in both)", (), na="Keras has no track_running_stats=False mode: inference always uses the moving statistics "
        "(K02); the statistics-keeping half is A09"),
    Row(_T, "TestNNDeviceType.test_batchnorm_eval_mixed", "the same with bfloat16/float16 input and a float32 module "
        "(CUDA)", ("A05", "K09")),
    Row(_T, "TestNNDeviceType.test_batchnorm_affine", "affine=False equals weight 1, bias 0: output and input "
        "gradient", ("A10",)),
    Row(_T, "TestNNDeviceType.test_batchnorm_affine_mixed", "the same with bfloat16/float16 input (CUDA)",
        ("A10", "K09")),
    Row(_T, "TestNNDeviceType.test_batchnorm_simple_average", "momentum=None: running statistics are the plain "
        "average over batches; reset_running_stats restores 0 and 1", (), na=SIMPLE_AVERAGE),
    Row(_T, "TestNNDeviceType.test_batchnorm_simple_average_mixed", "the same with 16-bit input (CUDA)", (),
        na=SIMPLE_AVERAGE),
    Row(_T, "TestNNDeviceType.test_batchnorm_update_stats", "a training pass changes running_mean/var (and "
        "num_batches_tracked); an eval pass leaves them", ("K03", "M01")),
    Row(_T, "TestNN.test_state_dict", "a net's state_dict holds its BatchNorm2d's weight, bias, running_mean, "
        "running_var and num_batches_tracked, each sharing storage with the module's tensor", ("K05", "A10"),
        note="Keras' layer.weights are gamma, beta, moving_mean and moving_variance (trainable and not: K05; two "
             "non-trainable always: A10); there is no num_batches_tracked, and storage sharing is torch's"),
    Row(_T, "TestFusionUtils.test_fuse_conv_bn_requires_grad", "fuse_conv_bn_weights(conv, BatchNorm2d statistics) "
        "returns a weight and bias with the conv's requires_grad flags (all 4 combinations)", (),
        na="autograd flags of a torch fusion helper; Keras has no BN-folding API (the folding itself is P04 and C17)"),
    Row(_T, "TestFusionUtils.test_fuse_linear_bn_requires_grad", "fuse_linear_bn_weights(linear, BatchNorm1d "
        "statistics) keeps the linear layer's requires_grad flags", (),
        na="autograd flags of a torch fusion helper, as for conv; folding into a Dense layer is P04"),
    Row(_T, "TestUtils.test_consume_prefix_in_state_dict_if_present", "stripping a DDP 'module.' prefix keeps the "
        "state_dict's keys and metadata in order", (),
        na="state_dict key bookkeeping; and no BN key is checked: Net.__init__ sets `net.bn = nn.BatchNorm2d(2)` on "
           "the enclosing test's `net` (a defect of the test), so the Net whose state_dict is checked has no BN"),
    # ------------------------------------------------------------------ PyTorch: test/nn/
    Row(_T, "test/nn/test_lazy_modules.py TestLazyModules.test_lazy_batchnorm1d/2d/3d", "LazyBatchNorm1d/2d/3d "
        "takes num_features from axis 1 of its first input and becomes BatchNorm1d/2d/3d; its output, weight, bias, "
        "running_mean, running_var and num_batches_tracked equal those of a BatchNorm built with that num_features "
        "(affine and track_running_stats each False and True)", ("K08", "K15", "K01"),
        note="every Keras BN is lazy: the first call builds gamma, beta and the moving statistics from the input's "
             "`axis` dimension with K08's initial values; no claim compares a layer built by its first call with "
             "one built explicitly (a candidate claim)"),
    Row(_T, "test/nn/test_lazy_modules.py TestLazyModules.test_lazy_batchnorm1d/2d/3d_pickle", "a pickled "
        "LazyBatchNorm stays lazy with uninitialised weight, bias and running statistics; pickled after its first "
        "call it is a materialised BatchNorm", (),
        na="Python pickling of torch modules and their UninitializedParameter/Buffer; Keras serialises a layer's "
           "config and weights instead (K13, K14)"),
    Row(_T, "test/nn/test_lazy_modules.py TestLazyModules.test_lazy_batchnorm1d/2d/3d_state", "loading a "
        "BatchNorm(10) state_dict materialises a LazyBatchNorm with 10 features and (10,) weight, bias and running "
        "statistics; loading a lazy module's state_dict into a BatchNorm(10) raises 'shape of an uninitialized'", (),
        na="torch's uninitialised-parameter state_dict mechanics; Keras restores weights into a built layer (K13, "
           "K14) and refuses wrong shapes (A08)"),
    Row(_T, "test/nn/test_lazy_modules.py TestLazyModules.test_lazy_batchnorm2d_state_and_forward", "a "
        "LazyBatchNorm2d loaded from an eval BatchNorm2d(16)'s state_dict gives the same eval output", ("K14", "K13"),
        note="Keras restores a layer's moving statistics, and with them its inference output, through .keras "
             "save/load (K14) or from_config plus the copied weights (K13)"),
    Row(_T, "test/nn/test_lazy_modules.py TestLazyModules.test_lazy_batchnorm_with_dict_input", "LazyBatchNorm1d/"
        "2d/3d called with the input as a keyword argument equals BatchNorm1d/2d/3d", (),
        na="torch's keyword calling convention of a lazy module's first forward; the output equality is the "
           "test_lazy_batchnorm1d/2d/3d row"),
    Row(_T, "test/nn/test_load_state_dict.py TestLoadStateDict.test_load_state_dict", "a net's state_dict with a "
        "new bn.running_mean loads (also with a DDP 'module.' prefix consumed, and with strict=False beside an "
        "unknown key) and bn.running_mean equals the loaded tensor", ("K14",),
        note="Keras' counterpart: load_model/load_weights restore the moving statistics; the key bookkeeping "
             "(strict, prefixes, missing/unexpected keys) is torch's"),
    Row(_T, "test/nn/test_load_state_dict.py TestLoadStateDict.test_load_state_dict", "a bn.running_mean of the "
        "wrong shape (14, 4) raises RuntimeError, with strict=True and strict=False", ("A08",),
        note="A08: set_weights/assign of moving statistics of the wrong shape raise and leave the variable unchanged"),
    Row(_T, "test/nn/test_load_state_dict.py TestLoadStateDict.test_load_state_dict_BC", "a BatchNorm2d state_dict "
        "of version 1 or without a version and without num_batches_tracked loads; num_batches_tracked is then a "
        "long 0", (), na="Keras keeps no count of batches (num_batches_tracked) and no state_dict versions"),
    Row(_T, "test/nn/test_load_state_dict.py TestLoadStateDict.test_load_state_dict_assign_meta, "
        "_assign_with_optimizer, _assign_shape_stride (Linear -> BatchNorm1d nets)", "load_state_dict(assign=True) "
        "into a meta-device copy keeps parameters, buffers, their order and the outputs; training then continues "
        "as in the original with a reloaded optimizer; another stride loads, another shape raises", (),
        na="torch's meta-device and assign=True loading mechanics, with BN a passenger; Keras' reload-and-continue "
           "is K14 and its wrong-shape refusal A08"),
    Row(_T, "test/nn/test_module_hooks.py TestModuleHookNN.test_hook_cpp", "a full backward hook on BatchNorm1d(5) "
        "fires with one grad_input and one grad_output and the BN module itself", (),
        na="torch.nn.Module backward hooks; Keras layers have no hook API"),
    # ------------------------------------------------------------------ PyTorch: common_modules.py (ModuleInfo)
    Row(_T, "ModuleInfo BatchNorm1d: affine", "BatchNorm1d(10) on (4, 10)", ("K01", "K02")),
    Row(_T, "ModuleInfo BatchNorm1d: 3d_input", "BatchNorm1d(5) on (4, 5, 3): channels on axis 1", ("K15", "A02")),
    Row(_T, "ModuleInfo BatchNorm1d: affine_simple_average", "eps 1e-3, momentum=None", (), na=SIMPLE_AVERAGE),
    Row(_T, "ModuleInfo BatchNorm1d: not_affine", "eps 1e-3, momentum 0.3, affine=False", ("A10", "X01")),
    Row(_T, "ModuleInfo BatchNorm1d: not_tracking_stats", "track_running_stats=False", ("A09",),
        note="A09 is the statistics-keeping half; Keras has no batch-statistics inference"),
    Row(_T, "ModuleInfo BatchNorm1d: 3d_input_not_affine", "BatchNorm1d(5, affine=False) on (4, 5, 3)",
        ("A10", "K15")),
    Row(_T, "ModuleInfo BatchNorm1d: zero_batch", "an empty batch (0, 5, 9)", ("C07",)),
    Row(_T, "ModuleInfo BatchNorm1d: affine_not_bias", "bias=False (weight only)", ("A10",),
        note="Keras' center=False"),
    Row(_T, "ModuleInfo BatchNorm2d: (default)", "BatchNorm2d(3) on (2, 3, 6, 6)", ("K15", "K01")),
    Row(_T, "ModuleInfo BatchNorm2d: 2d_simple_average", "momentum=None", (), na=SIMPLE_AVERAGE),
    Row(_T, "ModuleInfo BatchNorm2d: momentum", "momentum 0.8", ("K03", "X01")),
    Row(_T, "ModuleInfo BatchNorm2d: not_affine", "affine=False", ("A10",)),
    Row(_T, "ModuleInfo BatchNorm2d: not_tracking_stats", "track_running_stats=False", ("A09",),
        note="as for BatchNorm1d"),
    Row(_T, "ModuleInfo BatchNorm2d: zero_batch", "an empty batch (0, 5, 2, 2)", ("C07",)),
    Row(_T, "ModuleInfo BatchNorm2d: affine_not_bias", "bias=False", ("A10",)),
    Row(_T, "ModuleInfo BatchNorm3d: (default)", "BatchNorm3d(3) on (2, 3, 4, 4, 4)", ("A02", "K01")),
    Row(_T, "ModuleInfo BatchNorm3d: 3d_simple_average", "momentum=None", (), na=SIMPLE_AVERAGE),
    Row(_T, "ModuleInfo BatchNorm3d: momentum", "momentum 0.7", ("K03", "X01")),
    Row(_T, "ModuleInfo BatchNorm3d: not_affine", "affine=False", ("A10",)),
    Row(_T, "ModuleInfo BatchNorm3d: not_tracking_stats", "track_running_stats=False", ("A09",),
        note="as for BatchNorm1d"),
    Row(_T, "ModuleInfo BatchNorm3d: zero_batch", "an empty batch (0, 5, 2, 2, 2)", ("C07",)),
    Row(_T, "ModuleInfo BatchNorm3d: affine_not_bias", "bias=False", ("A10",)),
    Row(_T, "ModuleInfo BatchNorm1d/2d/3d: ErrorModuleInput", "eps=-1.0 raises ValueError 'eps must be positive' "
        "in the forward pass", ("A06",)),
    Row(_T, "ModuleInfo/OpInfo generic suites", "gradcheck of every sample (first derivatives)", ("C14", "E02")),
    Row(_T, "ModuleInfo/OpInfo generic suites", "gradgradcheck / fwgrad_bwgrad of every sample (second "
        "derivatives; supports_fwgrad_bwgrad=True)", ("A04",)),
    Row(_T, "ModuleInfo generic suite", "train_and_eval_differ=True: train and eval outputs differ", ("K01", "K02")),
    Row(_T, "ModuleInfo/OpInfo generic suites", "dtypes: every floating dtype, float64, float16 and bfloat16",
        ("K18", "K09", "C06")),
    Row(_T, "ModuleInfo/OpInfo generic suites", "the rest: pickling, repr, factory kwargs, device moves, memory "
        "formats, non-contiguous inputs, CPU/GPU parity, jit/compile consistency", (),
        na="torch.nn.Module and operator mechanics with no Keras counterpart (Keras serialization is K13/K14)"),
    # ------------------------------------------------------------------ PyTorch: OpInfo samples
    Row(_T, "OpInfo nn.functional.batch_norm sample 1", "(5, 5, 5), training, momentum 0.5, eps 0.6",
        ("K01", "C09", "K03")),
    Row(_T, "OpInfo nn.functional.batch_norm sample 2", "(3, 2, 4), eval, momentum -1.2", ("K02", "A07"),
        note="torch accepts a negative momentum (unused in eval); Keras accepts it too (A07)"),
    Row(_T, "OpInfo nn.functional.batch_norm sample 3", "(3, 1), training, momentum 0.0", ("C19",)),
    Row(_T, "OpInfo nn.functional.batch_norm sample 4", "(0,), training (no channels, no weight)", (),
        na="a 1-D input without a feature axis: Keras' BatchNormalization needs rank >= 2"),
    Row(_T, "OpInfo nn.functional.batch_norm sample 5", "(0,), eval (no channels, no weight)", (),
        na="a 1-D input without a feature axis (as sample 4)"),
    Row(_T, "OpInfo nn.functional.batch_norm sample 6", "(3, 2, 3, 4), training, momentum -1.0, eps 0.5",
        ("A07", "K15")),
    Row(_T, "OpInfo nn.functional.batch_norm sample 7", "(3, 2, 3, 4), eval, momentum -1.0, eps 0.5", ("K02", "K15")),
    Row(_T, "OpInfo nn.functional.batch_norm sample 8", "(2, 1), defaults (training=False)", ("K02",)),
    Row(_T, "OpInfo nn.functional.batch_norm sample 9", "(2, 1), weight and bias, training=True", ("K01",)),
    Row(_T, "OpInfo nn.functional.batch_norm sample 10", "(2, 1), weight and bias, training=False", ("K02",)),
    Row(_T, "OpInfo nn.functional.batch_norm sample 11", "(2, 1), weight and bias, training=False (again)", ("K02",)),
    Row(_T, "OpInfo nn.functional.batch_norm sample 12", "(1, 2, 3), training, no running statistics, no weight or "
        "bias", ("K01", "A10")),
    Row(_T, "OpInfo nn.functional.batch_norm (variant without_cudnn)", "the same 12 samples on CUDA with cuDNN "
        "disabled (dtypes float32, float64, float16, bfloat16)", (), na=CUDA),
    # ------------------------------------------------------------------ ONNX 1.23.2
    Row(_O, "node: test_batchnorm_example", "inference, default epsilon: y", ("A01",)),
    Row(_O, "node: test_batchnorm_epsilon", "inference, epsilon 1e-2: y", ("A01",)),
    Row(_O, "node: test_batchnorm_example_training_mode", "training_mode=1: y, running mean, running var",
        ("A01", "A03")),
    Row(_O, "node: test_batchnorm_epsilon_training_mode", "training_mode=1, epsilon 1e-2: y, running mean, running "
        "var", ("A01", "A03")),
    Row(_O, "pytorch-converted: test_BatchNorm1d_3d_input_eval", "stored output of the eval model", ("A02",)),
    Row(_O, "pytorch-converted: test_BatchNorm2d_eval", "stored output of the eval model", ("A02",)),
    Row(_O, "pytorch-converted: test_BatchNorm2d_momentum_eval", "stored output of the eval model (epsilon 1e-3)",
        ("A02",)),
    Row(_O, "pytorch-converted: test_BatchNorm3d_eval", "stored output of the eval model", ("A02",)),
    Row(_O, "pytorch-converted: test_BatchNorm3d_momentum_eval", "stored output of the eval model (epsilon 1e-3)",
        ("A02",)),
)
