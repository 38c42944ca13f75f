"""BN after export: a Keras model exported with `Model.export` in each deployment format (tf_saved_model, onnx,
openvino, litert, torch) and served by that format's own runtime (TensorFlow, onnxruntime, OpenVINO, the
ai-edge-litert interpreter, torch.export), against the model in Keras: the output within a float32 bound
derived for the exported evaluation (BN kept or folded into the layer before it), how each BN layer's numbers
reach the graph, hard-coded training=True, batch sizes, serving state, fine-tuned statistics, mixed precision,
and the runtimes' own reduced precisions.

A pair Keras refuses (LiteRT on JAX, torch on TensorFlow/JAX, every format but SavedModel on tf_keras) is *not
applicable*, with Keras' own message. A runtime that is not installed leaves the case unmeasured (the main
environment has none: `pip install -e '.[deploy]'`). Versions: the measured points are Keras 3.15.1 on
TensorFlow 2.21, JAX 0.10.2 and PyTorch 2.13 with onnxruntime 1.31.1, openvino 2026.4.1, ai-edge-litert 2.3.0,
tf2onnx 1.17.0, jax2onnx 0.17.1, litert-torch 0.10.0; each case records its runtime's version.

Tests: tests/claims/test_deploy.py; the exporting, the runtimes, the census and the bound:
bnspec/subjects/export.py."""

from bnspec.claims._model import HARDCODED_KERAS316, KERAS316, Claim, Expect, HOLDS, REFUTED

ORDER = 260
TITLE = "BN after export: deployment formats and their runtimes"

EXPORT_DOCS = ("Keras 3.15.1 Model.export docstring and keras/src/export/{saved_model,onnx,openvino,litert,torch}.py "
               "(keras.io/api/models/model_saving_apis/export)")
TORCH_SAVED_MODEL = (
    "Keras 3.15.1's torch SavedModel path (keras/src/backend/torch/export.py) passes dynamic_shapes as a tuple of "
    "dicts for a tuple of sample inputs; torch 2.13's torch.export.export rejects it (UserError: mismatch between "
    "the structure of `inputs` and `dynamic_shapes`), before torch_xla (which it also needs) is imported"
)
JAX_OPENVINO = (
    "on JAX, Keras converts a jax2tf tf.function to OpenVINO; jax2tf serialises the model natively as one "
    "XlaCallModule op, for which OpenVINO 2026.4's TensorFlow frontend has no conversion rule (OpConversionFailure)"
)

LITERT_TORCH_MERGE = (
    "Keras' LiteRT export on PyTorch (litert-torch 0.10.0) writes the notebook model with the kernel of dense_1 "
    "feeding dense_2's FULLY_CONNECTED too: the two Dense layers were created by Orthogonal(seed=100) with equal "
    "initial kernels and trained apart, and the converter merges them into one weight tensor; dense_2's kernel "
    "is in no constant of the .tflite and the logits are off by ~10. Not on every export: 12 of 12 exports in one "
    "process lost a kernel (dense_1's or the head's), 3 of 16 fresh processes' first export kept them all, so the "
    "case exports 5 times and the worst artefact decides (google-ai-edge/litert-torch#1061)"
)
FUNCTIONAL_TRACE = (
    "the exporter traces model.__call__ with training=None, so a Functional model's baked training=True stays in "
    "the graph (batch statistics), while Keras 3.15's predict() passes training=False, which overrides it"
)
TORCH_TRACE_FAILS = (
    "on PyTorch the hard-coded training-mode BN cannot be exported: SavedModel fails in torch.export (as for every "
    "model), OpenVINO's torch.jit.trace frontend cannot convert the subclass's in-place updates, litert-torch "
    "fails ('expected compiled_fn to be GraphModule'), and torch.export.load refuses the .pt2 it wrote "
    "(SpecViolationError: wrap_with_set_grad_enabled is missing val field)"
)

CLAIMS = (
    Claim(
        "D01",
        "the exported model computes Keras' inference output",
        "model.export(format=F) succeeds for every format Keras supports on the backend, and the artefact, served by "
        "F's runtime (OpenVINO at float32 precision: its default is D08's), computes model(x, training=False) within "
        "a float32 bound derived for the exported evaluation, whether BN is kept or folded into the layer before it.",
        f"{EXPORT_DOCS}; onnx/tensorflow-onnx#52 and #1494 (BN folded into Conv); onnx/optimizer#255 (fusing BN into "
        "Conv changes outputs by rounding); keras-team/keras#22443 (JAX ONNX export through jax2onnx); "
        "google-ai-edge/litert-torch#1061 (same-shape weight constants merged)",
        expected=(
            Expect(REFUTED, backend="torch", case="fmt=tf_saved_model", mechanism="export_fails", why=TORCH_SAVED_MODEL),
            Expect(REFUTED, backend="jax", case="fmt=openvino", mechanism="export_fails", why=JAX_OPENVINO),
            Expect(REFUTED, backend="torch", case="fmt=litert,subject=mlp_trained", mechanism="kernel_missing",
                   why=LITERT_TORCH_MERGE),
            Expect(HOLDS, why="every other artefact computes the inference function within the bound; the measured "
                   "error is 2-3 orders of magnitude below it (ratio 0 to 0.008)"),
        ),
        note="The bound (bnspec/subjects/export.py, network_bound) is LAMBDA=6 standard deviations of the float32 "
        "rounding of both evaluations (Keras' and the export's), with the folding's own roundings (a = gamma/sqrt(var"
        "+eps) carries 4, W*a one more) entered as worst cases. The power is the training-mode (batch statistics) "
        "output, which lies beyond it. Artefacts whose batch is fixed at export (torch .pt2) are served example "
        "by example, as a user must (D04).",
        advice="export, then compare the artefact's output with model(x, training=False) on real inputs before "
        "serving it; on PyTorch export ONNX or .pt2 rather than tf_saved_model, on JAX ONNX or SavedModel",
    ),
    Claim(
        "D02",
        "BN's numbers reach the exported graph exactly",
        "Each BN layer's moving mean, moving variance, gamma, beta and epsilon are carried into the exported graph: "
        "kept as they are (bitwise), or folded (a = gamma/sqrt(var+eps), c = beta - a*mean, W*a, b*a + c) within the "
        "fold's float32 rounding; read from the graph's constants and compared with the layer's own weights.",
        f"{EXPORT_DOCS}; tensorflow/tensorflow#27707 (TFLite folds BN); onnx/tensorflow-onnx#1075 (a converted BN's "
        "variance/epsilon handling); openvinotoolkit/openvino#31502 (Keras 3 export to OpenVINO IR)",
        note="The census (op types in the graph file; what the runtime runs after its own optimisation) tells where "
        "BN went: kept as separate arithmetic (SavedModel), as mean/scale/beta constants (torch.onnx), folded into "
        "the convolution or matmul (tf2onnx, TFLite, OpenVINO on TensorFlow). Where epsilon is implicit in a folded "
        "number, the same number without epsilon is shown to lie beyond the bound (the test's power).",
        advice="to check a converted model yourself, compare its folded weights with W*gamma/sqrt(moving_variance + "
        "epsilon): a missing epsilon or stale statistics show up far above float32 rounding",
    ),
    Claim(
        "D03",
        "a hard-coded training=True is exported as predict() runs it",
        "For a model whose BN layer is called as bn(x, training=True), the exported graph normalises with the same "
        "statistics as Keras' predict(): moving statistics where predict uses them, batch statistics where it does.",
        f"{EXPORT_DOCS}: the SavedModel, ONNX and OpenVINO paths trace model.__call__ (training=None), LiteRT traces "
        "partial(model.__call__, training=False), jax2onnx calls model(x, training=False); keras-team/keras#23364",
        expected=(
            Expect(HOLDS, flavour="keras3", versions=KERAS316, backend="tensorflow", case="fmt=tf_saved_model,kind=functional",
                   change="keras#23364", why=HARDCODED_KERAS316 + ": predict() keeps the baked training=True, as the "
                   "SavedModel's trace does (both normalise with the batch statistics)"),
            Expect(HOLDS, flavour="tfkeras", why="tf_keras (Keras 2): the baked training=True wins in predict() too, and "
                   "the SavedModel and TFLite traces keep it: all normalise with the batch statistics"),
            Expect(REFUTED, backend="torch", case="fmt=onnx,kind=functional", mechanism="export_uses_batch_statistics",
                   why=FUNCTIONAL_TRACE),
            Expect(REFUTED, backend="torch", case="fmt=openvino,kind=functional", mechanism="export_uses_batch_statistics",
                   why=FUNCTIONAL_TRACE),
            Expect(HOLDS, backend="torch", case="fmt=onnx,kind=subclassed",
                   why="torch.onnx traces the subclass's literal training=True, and predict() keeps it too"),
            Expect(REFUTED, backend="torch", mechanism="export_fails", why=TORCH_TRACE_FAILS),
            Expect(HOLDS, backend="tensorflow", case="fmt=litert",
                   why="the LiteRT exporter calls the model with training=False, as predict() does"),
            Expect(HOLDS, backend="tensorflow", case="kind=subclassed",
                   why="a literal training=True inside call() is kept by predict() and by every export"),
            Expect(REFUTED, backend="tensorflow", mechanism="export_uses_batch_statistics", why=FUNCTIONAL_TRACE),
            Expect(REFUTED, backend="jax", case="fmt=tf_saved_model,kind=functional", mechanism="export_uses_batch_statistics",
                   why=FUNCTIONAL_TRACE + " (jax2tf)"),
            Expect(REFUTED, backend="jax", case="fmt=openvino", mechanism="export_fails", why=JAX_OPENVINO),
            Expect(HOLDS, why="jax2onnx calls model(x, training=False) as predict() does; a subclass's literal "
                   "training=True is kept by both"),
        ),
        note="Keras 3.15's predict() passes training=False, which overrides the baked training=True in a Functional "
        "model but not inside a subclass's call(); see N05/C01 for the same mechanism in fit.",
        advice="never bake training=True into a model you export; if you must, export with an explicit endpoint "
        "(ExportArchive.add_endpoint with partial(model.__call__, training=False)) and compare with predict()",
    ),
    Claim(
        "D04",
        "the exported model serves a batch of one and a batch of N",
        "The artefact accepts a batch of one and a batch of five (the export traced neither) and returns, for each "
        "example, Keras' inference output within the float32 bound.",
        f"{EXPORT_DOCS} (torch: 'dynamic shape ... not yet supported ... None replaced with 1'; litert on torch: "
        "'dynamic input shapes are not supported')",
        expected=(
            Expect(REFUTED, backend="torch", case="fmt=torch,batch=5", mechanism="batch_fixed_at_export",
                   why="Keras' torch export traces torch.export.export with a batch of 1 and no dynamic_shapes: the "
                   ".pt2 guards args_0.size()[0] == 1 and refuses a batch of 5"),
            Expect(HOLDS, why="the other artefacts declare a dynamic batch, or (litert-torch, input shape [1, 8, 8, 3]) "
                   "accept resize_tensor_input"),
        ),
        note="One call per batch, no chunking: what the artefact's declared input shape allows is recorded.",
        advice="export PyTorch models with an explicit input_signature (or dynamic_shapes for format='torch') that "
        "matches the batch you will serve, or pad to the traced batch",
    ),
    Claim(
        "D05",
        "serving never updates BN statistics",
        "Serving the exported model leaves it unchanged: the same batch served before and after another batch gives "
        "bitwise the same outputs, and whatever state the runtime holds (a SavedModel's variables, a torch module's "
        "buffers) does not move, also for a model with a hard-coded training=True.",
        f"{EXPORT_DOCS}; C02 (the serve endpoint of a model whose BN runs in training mode moves its variables)",
        expected=(
            Expect(REFUTED, case="fmt=tf_saved_model,subject=hardcoded_functional",
                   mechanism="serve_writes_moving_statistics",
                   why="the serve endpoint traces model.__call__ (training=None): the baked training=True runs the BN in "
                   "training mode, which assigns new moving statistics to the SavedModel's variables on every call "
                   "(the outputs, batch statistics, do not depend on them)"),
            Expect(HOLDS),
        ),
        note="ONNX, OpenVINO and LiteRT artefacts hold constants only; a SavedModel and a torch .pt2 module hold "
        "variables/buffers that a training-mode BN could write.",
        advice="if a served SavedModel's outputs drift, check for a training-mode BN (a hard-coded training=True) "
        "whose moving statistics the serve endpoint updates",
    ),
    Claim(
        "D06",
        "a fine-tuned model exports its current statistics",
        "After fine-tuning (one epoch with BN trainable, which moves the moving statistics, then BN frozen while the "
        "Dense layers train), the exported graph carries the BN layers' current moving statistics (with the current "
        "gamma, beta and, where folded, the current kernels), not the ones from before fine-tuning.",
        f"keras.io guide 'Transfer learning & fine-tuning' (BN frozen with trainable=False); {EXPORT_DOCS}",
        note="The statistics before fine-tuning are the alternative: they must not match the graph (the test's "
        "power). The output against Keras' is recorded as evidence (D01 is the claim about it): on PyTorch the "
        "LiteRT artefact of the fine-tuned model was right in one run and had dense_2's kernel replaced by dense_1's "
        "in two (litert-torch merges weight constants depending on their values, google-ai-edge/litert-torch#1061).",
    ),
    Claim(
        "D07",
        "a mixed_float16 model exports within its float16 bound",
        "A Conv+BN model built with the mixed_float16 policy exports to every format Keras supports on the backend "
        "and the artefact computes Keras' inference output within a float16 bound (both evaluations with unit "
        "roundoff 2^-11 for inputs, weights and arithmetic).",
        f"{EXPORT_DOCS} (ONNX: 'The dtype policy must be \"float32\" for the model'); Keras mixed precision guide",
        expected=(
            Expect(REFUTED, flavour="tfkeras", case="fmt=litert", mechanism="export_fails",
                   why="TFLiteConverter.from_keras_model (builtin ops only) cannot convert the float16 tf.Conv2D: 'neither "
                   "a custom op nor a flex op'"),
            Expect(REFUTED, backend="tensorflow", case="fmt=litert", mechanism="export_fails",
                   why="Keras' LiteRT converter allows SELECT_TF_OPS, and float16 Conv2D/MatMul/BiasAdd/Relu become Flex "
                   "ops: the ai-edge-litert interpreter (no Flex delegate) refuses the model at allocate/invoke"),
            Expect(REFUTED, backend="torch", case="fmt=litert", mechanism="export_fails",
                   why="litert-torch fails to legalise a float16 tfl.conv_2d"),
            Expect(REFUTED, backend="torch", case="fmt=tf_saved_model", mechanism="export_fails", why=TORCH_SAVED_MODEL),
            Expect(REFUTED, flavour="keras3", versions="<3.5", case="fmt=tf_saved_model", mechanism="export_fails",
                   change="keras#19948",
                   why="Keras 3.0-3.4 wrote the SavedModel's serving signature with the layer's compute dtype: a "
                   "mixed_float16 model's endpoint takes float16 only, and the float32 input model(x) accepts is "
                   "refused ('Can not cast TensorSpec ... float32 ... to ... float16'); 3.5 uses the input dtype"),
            Expect(REFUTED, backend="jax", case="fmt=openvino", mechanism="export_fails", why=JAX_OPENVINO),
            Expect(REFUTED, backend="jax", case="fmt=onnx", mechanism="export_fails",
                   why="jax2onnx writes a float16 model that onnxruntime refuses to load (ReduceMean's output typed "
                   "float where float16 is expected)"),
            Expect(HOLDS, why="the other artefacts compute in float16 (or cast to float32) within the float16 bound"),
        ),
    ),
    Claim(
        "D08",
        "a runtime's reduced precision keeps the float32 bound",
        "Served at the runtime's own default precision (OpenVINO's CPU plugin on a CPU with native bfloat16), or "
        "after LiteRT's float16 or dynamic-range (int8 weight) post-training quantisation, the exported notebook "
        "model still computes Keras' inference output within D01's float32 bound.",
        "OpenVINO CPU plugin docs, inference precision hint (bf16 by default where the CPU has native bf16: "
        "openvinotoolkit/openvino.genai#164, WasmEdge/WasmEdge#5348); TensorFlow Lite post-training quantisation "
        "(float16, dynamic range) docs; Keras 3.15.1 export_litert (converter kwargs: optimizations, target_spec)",
        expected=(
            Expect(REFUTED, case="variant=openvino_default", mechanism="bf16_inference",
                   why="OpenVINO's CPU plugin runs the convolutions and matmuls in bfloat16 by default on a CPU with "
                   "native bf16 (INFERENCE_PRECISION_HINT=bf16): errors of 2^-8 relative, far above float32's"),
            Expect(REFUTED, case="variant=litert_float16", mechanism="float16_weights",
                   why="float16 quantisation stores the (folded) weights in float16 and dequantises them: each weight "
                   "is off by up to 2^-11 relative"),
            Expect(REFUTED, case="variant=litert_dynamic_range", mechanism="int8_weights",
                   why="dynamic-range quantisation stores the weights as int8 with one scale per output channel and "
                   "quantises the activations on the fly"),
            Expect(HOLDS),  # no case falls here (every variant has its rule)
        ),
        note="Each case also records top-1 agreement with Keras on 1,000 MNIST test images: the practical cost of "
        "the lost precision. The OpenVINO case is not applicable on a CPU without native bf16 (the default is then "
        "f32, measured by D01).",
        advice="pin OpenVINO's precision with compile_model(model, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'}) when "
        "you need Keras' numbers; validate a quantised LiteRT model's accuracy, not only its size",
    ),
    Claim(
        "D09",
        "model.export() leaves the Keras model unchanged",
        "Every variable of the Keras model (kernels, gamma/beta, moving statistics) is bitwise the same after "
        "model.export(format=F) as before it, also for a model with a hard-coded training=True.",
        f"{EXPORT_DOCS}: the SavedModel, ONNX and OpenVINO paths on TensorFlow trace a tf.function (graph mode), "
        "jax2tf/jax2onnx trace JAX functions, the PyTorch paths (torch.onnx, torch.jit.trace, torch.export, "
        "litert-torch) run the model's forward on a sample input; microsoft/onnxscript#1791 (torch.export changes "
        "running_mean/running_var of a training-mode BN)",
        expected=(
            *(Expect(REFUTED, backend="torch", case=f"fmt={f},subject=hardcoded_{k}", mechanism="trace_updates_moving_statistics",
                     why=f"{'torch.onnx' if f == 'onnx' else 'torch.jit.trace (OpenVINO)'} runs the model's forward on a "
                     "sample input: the hard-coded training-mode BN updates the Keras model's moving statistics")
              for f in ("onnx", "openvino") for k in ("functional", "subclassed")),
            *(Expect(REFUTED, backend="jax", case=f"fmt={f},subject=hardcoded_{k}", mechanism="variables_hold_tracers",
                     why=f"{'jax2onnx' if f == 'onnx' else 'jax2tf (for OpenVINO)'} traces the training-mode BN, whose "
                     "moving-statistics update assigns a JAX tracer to the Keras variables: after the export the model "
                     "cannot be read or called (TracerArrayConversionError)")
              for f, k in (("onnx", "subclassed"), ("openvino", "functional"), ("openvino", "subclassed"))),
            Expect(HOLDS),
        ),
        note="A training-mode BN run on the export's sample input (ones or zeros with the batch set to 1 or 2) "
        "updates its moving statistics by one EMA step towards that input's statistics: the mechanism checked.",
        advice="export a copy (keras.models.clone_model + set_weights) or save the model first when it has a "
        "hard-coded training=True; better, remove the hard-coded flag",
    ),
)
