"""The few things a claim test needs that differ between Keras backends (TensorFlow, JAX, PyTorch) and
between Keras 3 and tf_keras: numpy conversion, gradients, compiled functions, devices, determinism.

Everything else a test does goes through `keras.ops` and numpy. A `Backend` is made from the run's
backend name (the claim tests get it as the `B` fixture); each method imports its framework lazily, so
importing this module imports none. `to_numpy` needs no backend name and is also a module function.

    B = Backend(run.backend)
    y = B.to_numpy(layer(x, training=True))
    grads = B.gradients(lambda x: ops.sum(layer(x, training=True) * dy), x, [layer.gamma, layer.beta])
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from bnspec.flavours import BACKENDS


def to_numpy(x, dtype=None) -> np.ndarray:
    """A numpy copy of a backend tensor or a Keras variable (torch tensors that require grad too)."""
    if hasattr(x, "path") and hasattr(x, "value") and not callable(x.value):  # a Keras 3 variable
        x = x.value
    if hasattr(x, "detach"):  # torch (numpy has no bfloat16: widened to float32, exact for every bfloat16 value)
        t = x.detach()
        arr = (t.float() if str(t.dtype) == "torch.bfloat16" else t).cpu().numpy()
    elif hasattr(x, "numpy"):  # tf tensors and variables
        arr = np.asarray(x.numpy())
    else:  # jax arrays, numpy
        arr = np.asarray(x)
    return arr.astype(dtype) if dtype is not None else np.array(arr)


@dataclass(frozen=True)
class Backend:
    """The backend-dependent primitives for one Keras backend (tensorflow, jax, torch)."""

    name: str

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise ValueError(f"unknown backend {self.name!r}; choose one of {', '.join(BACKENDS)}")

    to_numpy = staticmethod(to_numpy)

    def gradients(self, loss_fn, x, variables=()) -> tuple[np.ndarray, list[np.ndarray]]:
        """d loss_fn(x) / dx and d loss_fn(x) / d each variable (Keras variables), as numpy arrays,
        through the backend's own autodiff: tf.GradientTape, jax.grad, torch.autograd. `x` is a numpy
        array (given to loss_fn as a backend tensor on the device Keras places on). State updates inside
        loss_fn (a training-mode BN moving its statistics) happen on TensorFlow and PyTorch and are
        discarded on JAX (stateless). A variable the loss does not depend on has gradient 0."""
        variables = list(variables)
        grads = self.gradient_tensors(loss_fn, x, variables)
        targets = [np.asarray(x)] + [to_numpy(v) for v in variables]
        out = [np.zeros(t.shape, np.float32) if g is None else to_numpy(g) for t, g in zip(targets, grads)]
        return out[0], out[1:]

    def tensor(self, x):
        """`x` (numpy) as a backend tensor where Keras places tensors now: its device scope (`device_scope`),
        else its default device. Every tensor the harness hands to a layer is made here or by keras.ops: one
        made anywhere else meets the layer's variables on another device (the first GPU run:
        `torch.tensor(x)` on the CPU against variables on cuda:0)."""
        if self.name == "tensorflow":
            import tensorflow as tf

            return tf.constant(x)  # placed by the enclosing tf.device scope
        import keras

        return keras.ops.convert_to_tensor(np.asarray(x))

    def gradient_tensors(self, loss_fn, x, variables=()) -> list:
        """The gradients as the backend's own tensors, [d/dx, d/d each variable] (None: the loss does not
        depend on it). `x` becomes a tensor where Keras places tensors now (its device scope, else its
        default device): a tensor made anywhere else meets the layer's variables on another device (the
        first GPU run: torch.tensor(x) on the CPU against variables on cuda:0)."""
        b = self.name
        variables = list(variables)
        if b == "tensorflow":
            import tensorflow as tf

            xt = self.tensor(x)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                loss = loss_fn(xt)
            targets = [xt] + [getattr(v, "value", v) if hasattr(v, "path") else v for v in variables]
            return list(tape.gradient(loss, targets))
        if b == "jax":
            import jax

            import keras

            values = [v.value for v in variables]

            def pure(xv, vals):  # the variables' values as inputs: Keras' StatelessScope maps them in
                with keras.StatelessScope(state_mapping=list(zip(variables, vals))):
                    return loss_fn(xv)

            gx, gv = jax.grad(pure, argnums=(0, 1))(self.tensor(x), values)
            return [gx] + list(gv)
        if b == "torch":
            import torch

            xt = self.tensor(x).detach().clone().requires_grad_(True)
            for v in variables:
                if v.value.grad is not None:
                    v.value.grad = None
            loss = loss_fn(xt)
            return list(torch.autograd.grad(loss, [xt] + [v.value for v in variables], allow_unused=True))
        raise ValueError(f"unknown backend {b!r}")

    def function(self, fn):
        """fn compiled the backend's usual way for a loop of many calls: tf.function on TensorFlow (state
        updates work inside), plain eager elsewhere (jax.jit needs stateless calls; eager is exact)."""
        if self.name == "tensorflow":
            import tensorflow as tf

            return tf.function(fn, reduce_retracing=True)
        return fn

    def gpus(self) -> list[str]:
        """Names of the GPUs the backend sees."""
        b = self.name
        try:
            if b == "tensorflow":
                import tensorflow as tf

                return [d.name for d in tf.config.list_physical_devices("GPU")]
            if b == "jax":
                import jax

                return [str(d) for d in jax.devices() if d.platform == "gpu"]
            if b == "torch":
                import torch

                return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        except (ImportError, RuntimeError):
            return []
        return []

    @contextlib.contextmanager
    def device_scope(self, keras, device: str):
        """Run the body on 'cpu' or 'gpu' (the first one): tf.device for TensorFlow (both flavours),
        keras.device for Keras 3 on JAX and PyTorch."""
        if self.name == "tensorflow":
            import tensorflow as tf

            with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
                yield
            return
        if device == "cpu" and not self.gpus():  # the default device already; and Keras 3.15's torch backend makes
            yield                            # variables created under keras.device("cpu:0") non-leaf tensors
            return
        with keras.device("gpu:0" if device == "gpu" else "cpu:0"):
            yield

    def configure(self) -> None:
        """Process-wide settings every measurement assumes: float32 matmuls in float32, and one intra-op
        thread for PyTorch (its default, one per core, oversubscribes the cores when pytest-xdist runs a
        worker per core: a Keras training step on torch took 630 ms instead of 23 ms here). Set
        BNSPEC_TORCH_THREADS to change the latter (`auto`: torch's default, as the benchmarks do)."""
        self.float32_matmul_highest()
        if self.name == "torch":
            import os

            import torch

            threads = os.environ.get("BNSPEC_TORCH_THREADS", "1")
            if threads != "auto":  # auto: torch's own default (the benchmarks measure with it)
                torch.set_num_threads(int(threads))

    def float32_matmul_highest(self) -> None:
        """float32 matmuls in float32, not TF32 / bf16 passes (Ampere/Hopper GPUs default to less): every
        float32 bound in bnspec.reference assumes float32 arithmetic."""
        b = self.name
        if b == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_tensor_float_32_execution(False)
        elif b == "jax":
            import jax

            jax.config.update("jax_default_matmul_precision", "highest")
        elif b == "torch":
            import torch

            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")

    def deterministic(self, keras, seed: int) -> None:
        """Seeds everything Keras uses and asks the backend for deterministic kernels."""
        keras.utils.set_random_seed(seed)
        b = self.name
        if b == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        elif b == "torch":
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)
