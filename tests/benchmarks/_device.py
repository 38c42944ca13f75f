"""The benchmarks' device side: which tensors each device gets, the order a GPU run measures them in, and
timing that includes the device's work. Importing this module imports no framework; tests/unit/
test_bench_gpu.py tests it on the CPU (fake clocks, fake CUDA events, tiny tensors).

Shapes. The CPU keeps the shapes its history was measured on (CPU_SHAPES). A GPU gets GPU_SHAPES: one
tensor far past any GPU's L2 cache (1.64 GB, where BN is bound by the device memory's bandwidth), the first
H200 run's largest (70.6 MB: about the H200's 60 MB L2, so partly cache-resident) and the paper's 60x100
(nothing but the fixed cost of a call: launch-bound). Every test is parametrised over both sets; a case of
the other device's set is skipped at collection with the reason (`skip_reason`).

Timing on a GPU. A call returns as soon as its kernels are queued, so each timed round is `calls` calls
followed by one synchronisation (torch.cuda.synchronize, jax.block_until_ready on the last output), with
`calls` chosen so that a round lasts at least MIN_ROUND_S: the synchronisation's fixed cost is then a few
percent of the round, and back-to-back calls overlap their launch with the previous call's kernels as a
training loop does. pytest-benchmark records rounds; extra_info["calls"] says how many calls a round holds
and bnspec.report.bench divides by it. On PyTorch, CUDA events recorded around each round give the device's
own time as well (extra_info["device_median_s"], per call).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numpy as np

CPU_SHAPES = {
    "paper_60x100": (60, 100),
    "dense_4096x1024": (4096, 1024),
    "nhwc_64x56x56x64": (64, 56, 56, 64),
    "nhwc_88x56x56x64": (88, 56, 56, 64),  # 70.6 MB of float32: the >= 64 MB case
}
GPU_SHAPES = {
    "nhwc_512x56x56x256": (512, 56, 56, 256),  # 1.64 GB (1.53 GiB): ResNet-50's stage-1 output at batch 512
    "nhwc_88x56x56x64": (88, 56, 56, 64),  # 70.6 MB: the first H200 run's largest, about that GPU's L2 (60 MB)
    "paper_60x100": (60, 100),  # 24 KB: launch-bound on any GPU
}
SHAPES = {**CPU_SHAPES, **GPU_SHAPES}  # the parametrisation; each device runs its own set
BIG_GPU = "nhwc_512x56x56x256"
HOST_ONLY = ("copy_numpy",)  # copies of host memory: not a GPU's copy bandwidth

MIN_ROUND_S = 2e-3  # a timed round on a GPU lasts at least this: the synchronisation is a few % of it
MAX_CALLS = 64  # calls per round at most (a tiny tensor's round is then launch cost x 64)
MAX_ROUNDS = 2000


def shapes_for(device: str) -> dict[str, tuple]:
    return GPU_SHAPES if device == "gpu" else CPU_SHAPES


def nbytes(dims) -> int:
    """Bytes of a float32 tensor of these dimensions."""
    return 4 * int(np.prod(dims))


def skip_reason(device: str | None, shape: str | None, impl: str | None = None) -> str | None:
    """Why the case (device, shape, impl) is not measured, or None when it is."""
    if device is None:
        return None
    if shape is not None and shape not in shapes_for(device):
        size = f"{nbytes(SHAPES[shape]) / 1e6:.1f} MB"
        if device == "gpu":
            return f"{shape} ({size}) is a CPU shape: a GPU measures {', '.join(GPU_SHAPES)}"
        return f"{shape} ({size}) is sized for a GPU's memory: the CPU measures {', '.join(CPU_SHAPES)}"
    if device == "gpu" and impl in HOST_ONLY:
        return f"{impl} copies host memory: not the GPU's copy bandwidth (the device's own copies are the reference)"
    return None


# --------------------------------------------------------------------------- the order of a GPU run

KERAS_AND_NATIVE = ("jax_keras_jit", "jax_jit", "torch_keras_eager", "torch_functional")


def priority(params: dict, name: str) -> tuple:
    """Sort key of a GPU run's cases, most wanted first, so that a time budget cuts the least useful: per shape
    (largest first), the device's copies (the reference), then Keras' layer and the framework's native BN, then
    the other implementations; the MNIST step last."""
    shape = params.get("shape")
    order = list(GPU_SHAPES)
    rank = order.index(shape) if shape in order else len(order)
    impl = params.get("impl", "")
    kind = 0 if name.startswith("test_copy") else 1 if impl in KERAS_AND_NATIVE else 2
    return rank, kind


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Plan:
    calls: int  # calls per timed round (one synchronisation at its end)
    rounds: int


def plan(call_s: float, max_time: float, min_rounds: int, min_round_s: float = MIN_ROUND_S,
         max_calls: int = MAX_CALLS, max_rounds: int = MAX_ROUNDS) -> Plan:
    """Calls per round and rounds for a call that takes `call_s` (synchronised): a round lasts at least
    `min_round_s` (at most `max_calls` calls), and the rounds fill `max_time` (at least `min_rounds`)."""
    call_s = max(call_s, 1e-9)
    calls = max(1, min(max_calls, math.ceil(min_round_s / call_s)))
    rounds = int(max_time / (calls * call_s))
    return Plan(calls, max(min_rounds, min(max_rounds, rounds)))


def timed(fn, clock=time.perf_counter) -> float:
    """Seconds one call of fn takes (fn must synchronise itself)."""
    t0 = clock()
    fn()
    return clock() - t0


def synced(fn, sync):
    """fn(), then sync(its output) unless sync is None (a synchronous call)."""
    out = fn()
    if sync is not None:
        sync(out)
    return out


class Batch:
    """One timed round: `calls` calls of fn, then sync(last output) once (None: the calls are synchronous).
    With `event` (a factory of CUDA events, torch.cuda.Event(enable_timing=True)), the device's time of each
    round is recorded too, per call, in `device_s`."""

    def __init__(self, fn, sync, calls: int, event=None):
        self.fn, self.sync, self.calls, self.event = fn, sync, calls, event
        self.device_s: list[float] = []

    def __call__(self):
        if self.event is not None:
            start, end = self.event(), self.event()
            start.record()
        out = None
        for _ in range(self.calls):
            out = self.fn()
        if self.event is not None:
            end.record()
        if self.sync is not None:
            self.sync(out)
        if self.event is not None:
            self.device_s.append(start.elapsed_time(end) / 1e3 / self.calls)  # elapsed_time is in ms
        return out

    def device_median(self, rounds: int) -> float | None:
        """The median device time per call over the last `rounds` rounds (the warm-up round excluded)."""
        kept = self.device_s[-rounds:]
        return statistics.median(kept) if kept else None


# --------------------------------------------------------------------------- the frameworks' side


def torch_sync(device: str):
    """What blocks until the device's queued work is done: torch.cuda.synchronize on a GPU, None on the CPU
    (where torch ops are synchronous)."""
    if device != "gpu":
        return None
    import torch

    return lambda out: torch.cuda.synchronize()


def torch_event(device: str):
    """The CUDA event factory for Batch on a GPU, None on the CPU."""
    if device != "gpu":
        return None
    import torch

    return lambda: torch.cuda.Event(enable_timing=True)


def torch_normal(dims, device, seed: int = 0):
    """x ~ N(1, 2^2), float32, made on the device itself (no host copy of a 1.6 GB tensor)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.empty(dims, dtype=torch.float32, device=device).normal_(1.0, 2.0, generator=gen)


def jax_normal(dims, device, seed: int = 0):
    """x ~ N(1, 2^2), float32, made on the jax device itself."""
    import jax
    import jax.numpy as jnp

    key = jax.device_put(jax.random.key(seed), device)
    return jax.jit(lambda k: 1.0 + 2.0 * jax.random.normal(k, tuple(dims), jnp.float32))(key)


def gpu_info(backend: str) -> dict:
    """The GPU as the framework names it (and its L2 cache size where torch tells it), for extra_info."""
    if backend == "torch":
        import torch

        props = torch.cuda.get_device_properties(0)
        info = {"gpu": props.name, "gpu_memory_bytes": int(props.total_memory)}
        l2 = getattr(props, "L2_cache_size", None)
        return {**info, "l2_bytes": int(l2)} if l2 else info
    if backend == "jax":
        import jax

        dev = jax.devices("gpu")[0]
        return {"gpu": getattr(dev, "device_kind", str(dev))}
    return {}
