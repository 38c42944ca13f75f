"""BENCHMARKS.md's GPU section (bnspec.report.bench reads the runs: `current()` attaches them as doc["gpu"]):
per GPU run, the absolute time per call, GB/s, the fraction of the device's own copy bandwidth (the host copy
copy_numpy excluded), Keras' layer against the framework's native BN, and which rows are launch-bound
(`launch_floor`). No TensorFlow, JAX or PyTorch."""

from __future__ import annotations

from tabulate import tabulate

from bnspec.report.bench import KERAS_REFERENCE, MODES, RUN_FILE, backend_order, row_key, rows

GPU_MIN_BYTES = 2**30  # a GPU run "of the new shapes" measured BN on a tensor of at least 1 GiB
HOST_COPIES = ("copy_numpy",)  # host memory: never a GPU's copy reference
LAUNCH_FACTOR = 10  # launch-bound: the bytes would move at copy speed in under this many fixed costs per call
SMALL_BYTES = 2**20  # the launch floor is measured on a device copy of a tensor this small or smaller
NATIVE_LABEL = {"tensorflow": "fused_batch_norm", "jax": "BN in jax.numpy under jax.jit",
                "torch": "torch.nn.functional.batch_norm (cuDNN or ATen's CUDA kernel)"}
NATIVE = {"tensorflow": "fused", "jax": "jax_jit", "torch": "torch_functional"}  # the framework's own BN


MAX_GPU_RUNS = 3  # the newest GPU runs shown


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.0f} KB"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def tensor_bytes(r: dict) -> int:
    """Bytes of the benchmark's float32 tensor (x alone)."""
    return 4 * int(r.get("elements") or 0)


def gpu_rows(run: dict) -> list[dict]:
    return [r for r in rows(run) if r["device"] == "gpu"]


def device_copy(table: list[dict]) -> dict[str, float]:
    """shape -> the best GB/s of the device's own copies (any backend; the host copy excluded)."""
    best: dict[str, float] = {}
    for r in table:
        if r.get("mode") == "copy" and r.get("impl") not in HOST_COPIES:
            best[r["shape"]] = max(best.get(r["shape"], 0.0), r["gbps"])
    return best


def launch_floor(table: list[dict]) -> float | None:
    """The fixed cost of one call on this device, in seconds: the fastest device copy (per call) of a tensor of
    at most SMALL_BYTES, of any backend; None when no such copy was measured."""
    small = [r["median_s"] for r in table
             if r.get("mode") == "copy" and r.get("impl") not in HOST_COPIES and tensor_bytes(r) <= SMALL_BYTES]
    return min(small) if small else None


def memory_bandwidth(table: list[dict]) -> tuple[str, float] | None:
    """(shape, GB/s): the device's copy bandwidth on the largest tensor it copied; None without device copies."""
    copies = [r for r in table if r.get("mode") == "copy" and r.get("impl") not in HOST_COPIES]
    if not copies:
        return None
    shape = max(copies, key=tensor_bytes)["shape"]
    return shape, device_copy(copies)[shape]


def launch_bound(moved_bytes: float, floor: float | None, bandwidth_gbps: float | None) -> bool | None:
    """Whether a call moving `moved_bytes` is bound by the fixed cost of a call rather than by memory: at the
    device's copy bandwidth the bytes would move in less than LAUNCH_FACTOR fixed costs (so that cost is about
    10% of the time or more). None when the floor or the bandwidth is unknown."""
    if floor is None or not bandwidth_gbps:
        return None
    return moved_bytes / (bandwidth_gbps * 1e9) < LAUNCH_FACTOR * floor


def new_shapes(run: dict) -> bool:
    """Whether a GPU run measured BN on a tensor of at least GPU_MIN_BYTES (the GPU shapes of
    tests/benchmarks/_device.py), rather than only the CPU's shapes."""
    return any(r.get("mode") in MODES and tensor_bytes(r) >= GPU_MIN_BYTES for r in gpu_rows(run))


def gpu_section(runs: list[dict]) -> list[str]:
    """The GPU section: first whether a GPU run of the GPU shapes exists (saying so plainly when none does),
    then the newest GPU runs, each for what it is."""
    lines = ["## GPU: BN throughput against the device's own copy bandwidth", ""]
    fresh = [r for r in runs if new_shapes(r)]
    if not fresh:
        lines += ["**No GPU run of the new shapes exists yet**: no GPU has measured BN on a tensor of at least 1 GiB "
                  "(`nhwc_512x56x56x256`, 1.64 GB) with batched, synchronised timing. On a GPU machine, "
                  "`bash scripts/gpu_run.sh OUT gpu` writes `OUT/bench-<backend>.json` and `OUT/" + RUN_FILE + "`; "
                  "copied into `reports/benchmarks/gpu/<date>-<gpu>/`, they are shown here.", ""]
        lines += (["What exists is shown below for what it is: older code measuring the CPU's shapes on a GPU.", ""]
                  if runs else ["There are no GPU benchmark files under `reports/benchmarks/gpu/`.", ""])
    if not runs:
        return lines
    lines += ["Times are per call, on the device: the median of rounds that end with a synchronisation "
              "(`calls` back-to-back calls per round where recorded, else one). *Of copy* = GB/s over the best "
              "copy bandwidth of the device's own copies of the same tensor (JAX x + 0 under jit, PyTorch clone "
              "and copy_; never the host's copy_numpy). *Keras ÷ native* = Keras' layer's time over the framework's "
              "own BN on the same backend: " + ", ".join(f"{b}: {KERAS_REFERENCE[b]} vs {NATIVE[b]} ({NATIVE_LABEL[b]})"
                                                           for b in ("jax", "torch")) + ". "
              f"*launch*: the row's bytes would move at the device's copy bandwidth in less than {LAUNCH_FACTOR} times "
              "the fixed cost of a call (the fastest device copy of a tensor of at most 1 MiB), so launch, dispatch and "
              "synchronisation dominate and its GB/s say little about memory; *memory*: the bytes dominate.", ""]
    shown = (fresh[:1] + [r for r in runs if r is not fresh[0]]) if fresh else runs
    for run in shown[:MAX_GPU_RUNS]:
        lines += gpu_run_section(run)
    return lines


def _software(meta: dict, run: dict) -> str:
    parts = [f"{name} {meta[name]}" for name in ("keras", "jax", "torch") if meta.get(name)]
    if meta.get("cuda"):
        parts.append(f"CUDA {meta['cuda']}")
    if meta.get("driver"):
        parts.append(f"driver {meta['driver']}")
    py = meta.get("python") or run.get("machine_info", {}).get("python_version")
    if py:
        parts.append(f"Python {py}")
    return ", ".join(parts)


def gpu_run_section(run: dict) -> list[str]:
    table = gpu_rows(run)
    meta = run.get("meta", {})
    gpu = meta.get("gpu") or next((r["gpu"] for r in table if r.get("gpu")), None) or "a GPU not named in its files"
    commit = meta.get("commit") or run.get("commit_info", {}).get("id", "")[:10] or "unknown"
    fresh = new_shapes(run)
    cpu = run.get("machine_info", {}).get("cpu", {})
    lines = [f"### {run['name']}: {gpu}" + ("" if fresh else " (old shapes)"), "",
             f"Measured {run['datetime'][:16].replace('T', ' ')} on {gpu} ({_software(meta, run) or 'versions not recorded'}; "
             f"{cpu.get('count', '?')} CPUs), code {commit}; files: {', '.join(run['saves'])}."]
    if meta.get("note"):
        lines.append(meta["note"])
    lines.append("")
    largest = max((tensor_bytes(r) for r in table if r.get("mode") in MODES), default=0)
    l2 = meta.get("l2_bytes") or next((r["l2_bytes"] for r in table if r.get("l2_bytes")), None)
    caveats = []
    if not fresh:
        caveats.append(f"its largest BN tensor is {_mb(largest)}" + (f", {largest / l2:.1f}x the GPU's {_mb(l2)} L2 cache"
                                                                      if l2 else ""))
    if table and not any(r.get("calls") for r in table):
        caveats.append("each round was one call and one synchronisation timed on the host clock, so every number "
                       "includes the fixed cost of a call")
    floor = launch_floor(table)
    mem = memory_bandwidth(table)
    facts = []
    if floor is not None:
        facts.append(f"fixed cost of a call {_us(floor)} µs")
    if mem:
        facts.append(f"device copy bandwidth {mem[1]:,.0f} GB/s on {mem[0]}")
    if caveats or facts:
        lines += [("Caveats: " + "; ".join(caveats) + ". " if caveats else "") + (_sentence("; ".join(facts)) if facts else ""), ""]
    bn = [r for r in table if r.get("mode") in MODES]
    if not bn:
        return lines + ["No BN benchmark on the GPU in these files.", ""]
    copy = device_copy(table)
    by_key = {row_key(r): r for r in bn}
    present = sorted({r["backend"] for r in bn}, key=backend_order)
    shapes = sorted({r["shape"] for r in bn}, key=lambda s: -max(tensor_bytes(r) for r in bn if r["shape"] == s))
    body = []
    for shape in shapes:
        size = max(tensor_bytes(r) for r in bn if r["shape"] == shape)
        bw = copy.get(shape)
        for mode in MODES:
            here = [r for r in bn if (r["shape"], r["mode"]) == (shape, mode)]
            if not here:
                continue
            bound = launch_bound(max(r.get("bytes", 0) for r in here), floor, mem[1] if mem else None)
            row = [f"{shape} ({_mb(size)})", mode, {True: "launch", False: "memory", None: "-"}[bound],
                   f"{bw:,.0f}" if bw else "-"]
            for backend in present:
                ref = by_key.get((shape, mode, KERAS_REFERENCE.get(backend), "gpu", backend))
                nat = by_key.get((shape, mode, NATIVE.get(backend), "gpu", backend))
                row += [_gpu_cell(ref, bw), _gpu_cell(nat, bw),
                        f"{ref['median_s'] / nat['median_s']:.2f}x" if ref and nat else "-"]
            body.append(row)
    headers = ["tensor", "mode", "bound", "copy GB/s"]
    for backend in present:
        headers += [f"{backend}: Keras µs", f"{backend}: native µs", f"{backend}: Keras ÷ native"]
    lines += ["Per call, µs (GB/s, fraction of the device's copy):", "",
              tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), ""]
    for shape in shapes:
        lines += _gpu_details(shape, bn, by_key, copy)
    return lines


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _gpu_cell(r: dict | None, bw: float | None) -> str:
    if r is None:
        return "-"
    gbps = r["gbps"]
    rate = f"{gbps:,.0f}" if gbps >= 100 else f"{gbps:.1f}" if gbps >= 1 else f"{gbps:.2f}"
    return f"{_us(r['median_s'])} ({rate} GB/s" + (f", {gbps / bw:.0%})" if bw else ")")


def _gpu_details(shape: str, bn: list[dict], by_key: dict, copy: dict) -> list[str]:
    bw = copy.get(shape)
    body = []
    for r in sorted((r for r in bn if r["shape"] == shape),
                    key=lambda r: (MODES.index(r["mode"]), backend_order(r["backend"]), r["impl"])):
        ref = by_key.get((shape, r["mode"], KERAS_REFERENCE.get(r["backend"]), "gpu", r["backend"]))
        dev = r.get("device_median_s")
        first = r.get("first_call_s")
        body.append([r["mode"], r["backend"], r["impl"], str(r.get("calls") or 1), str(r.get("rounds") or "-"),
                     _us(r["median_s"]), f"{r['gbps']:,.1f}", f"{r['gbps'] / bw:.0%}" if bw else "-",
                     f"{ref['median_s'] / r['median_s']:.2f}x" if ref else "-", _us(dev) if dev else "-",
                     f"{first:.2f}" if first is not None else "-"])
    return [f"<details><summary>{shape} on the GPU: every implementation"
            + (f" (device copy {bw:,.0f} GB/s)" if bw else "") + "</summary>", "",
            tabulate(body, headers=["mode", "backend", "implementation", "calls/round", "rounds", "µs per call", "GB/s",
                                    "of copy", "vs Keras", "CUDA events, µs", "first call, s"],
                     tablefmt="github", disable_numparse=True), "", "</details>", ""]
