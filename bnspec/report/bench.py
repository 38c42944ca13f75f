"""pytest-benchmark JSON -> the report's benchmark section (no TensorFlow, JAX or PyTorch).

Each BN benchmark carries extra_info {shape, mode, impl, bytes, device, backend}; the copy benchmarks
of the same shape give the machine's copy bandwidth (the best copy of any backend: numpy, TensorFlow,
JAX, PyTorch). Throughput is bytes / median time, shown in GB/s and as a fraction of that copy
bandwidth; *vs Keras* compares with Keras' layer on the same backend (KERAS_REFERENCE).

One pytest process measures one Keras backend, so `tox -e bench` saves one file per backend into the
same history; `current(history)` merges the newest CPU save of each backend (and the one before it of
each, for the *previous run* column). Saves written before the backend dimension carry no `backend`
and are TensorFlow's.

GPU runs (scripts/gpu_run.sh on a lent GPU machine) are kept apart, one folder per run under
reports/benchmarks/gpu/ (GPU_DIR, beside the history): the run's pytest-benchmark files (one per backend,
`bench-<backend>.json`) and `bench-run.json` (RUN_FILE: the GPU, the libraries, the code, a note), as
gpu_run.sh writes them into its output folder. A save in the history whose benchmarks ran on a GPU is a GPU
run too, never merged with the CPU's. `current()` attaches them (`doc["gpu"]`) and bnspec.report.bench_gpu renders the GPU
section (`gpu_section`): per GPU run, the absolute time per call, GB/s, the fraction of the device's own copy
bandwidth (the host copy copy_numpy excluded), Keras' layer against the framework's native BN, and which
rows are launch-bound (`launch_floor`). A GPU benchmark's round may hold several calls (extra_info
"calls"): every time here is per call.

The GPU section is rendered by bnspec.report.bench_gpu from the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from bnspec import BnspecError

TARGETS = {  # the goals of issue #5: reported, not asserted
    "inference": 0.60,
    "training": 0.40,
}
BIG = "nhwc_88x56x56x64"  # the >= 64 MB tensor the targets refer to
GPU_DIR, RUN_FILE = "gpu", "bench-run.json"  # reports/benchmarks/gpu/<run>/{bench-<backend>.json, bench-run.json}
EXPLICIT_XLA_RATIO = 1.25
BACKENDS = ("tensorflow", "jax", "torch")
MODES = ("inference", "training", "training_backward")
# Keras' layer the way that backend runs it in a training loop: the "vs Keras" reference of each backend
KERAS_REFERENCE = {"tensorflow": "keras_function", "jax": "jax_keras_jit", "torch": "torch_keras_eager"}
KERAS_LABEL = {"tensorflow": "tf.function", "jax": "stateless_call under jax.jit", "torch": "eager"}


def saves(history: Path) -> list[Path]:
    """pytest-benchmark saves under `history`, oldest first (files are numbered 0001_, 0002_, ...)."""
    return sorted(Path(history).glob("*/[0-9][0-9][0-9][0-9]_*.json"), key=lambda f: f.name)


def latest(history: Path) -> Path | None:
    found = saves(history)
    return found[-1] if found else None


def load(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BnspecError(f"{path}: no benchmark results; run tox -e bench") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BnspecError(f"{path}: unreadable benchmark JSON ({exc}); run tox -e bench again") from exc
    if "benchmarks" not in doc:
        raise BnspecError(f"{path}: not a pytest-benchmark JSON file")
    return doc


def backend_of(benchmark: dict) -> str:
    return benchmark.get("extra_info", {}).get("backend") or "tensorflow"


def backends(doc: dict) -> list[str]:
    """The backends a save (or a merged document) measured, in BACKENDS order."""
    found = {backend_of(b) for b in doc["benchmarks"]}
    return [b for b in BACKENDS if b in found] + sorted(found - set(BACKENDS))


def merge(parts: list[tuple[str, dict, str]]) -> dict:
    """One document from (backend, save, file name) triples: each save contributes its benchmarks of
    that backend; `saves` records where each backend's numbers come from."""
    parts = sorted(parts, key=lambda p: p[1].get("datetime", ""))
    newest = parts[-1][1]
    doc = {"datetime": newest.get("datetime", ""), "machine_info": newest.get("machine_info", {}),
           "benchmarks": [], "saves": {}}
    for backend, save, name in parts:
        doc["benchmarks"] += [b for b in save["benchmarks"] if backend_of(b) == backend]
        doc["saves"][backend] = {"file": name, "datetime": save.get("datetime", ""),
                                 "commit": save.get("commit_info", {}).get("id", ""),
                                 "dirty": save.get("commit_info", {}).get("dirty", False)}
    return doc


def on_gpu(doc: dict, backend: str | None = None) -> bool:
    """Whether a save (of `backend`, or of any) measured on a GPU."""
    return any(b.get("extra_info", {}).get("device") == "gpu" for b in doc["benchmarks"]
               if backend is None or backend_of(b) == backend)


def current(history: Path) -> tuple[dict | None, dict | None]:
    """(the newest CPU save of each backend merged into one document, the save before it of each backend
    merged likewise, or None where no backend has two), or (None, None) without CPU saves. The first carries
    the GPU runs (`gpu_runs`: reports/benchmarks/gpu/ beside the history, and GPU saves in the history) as
    doc["gpu"], which `render` shows in a section of their own."""
    per_backend: dict[str, list[tuple[dict, str]]] = {}
    gpu_saves = []
    for path in saves(history):
        doc = load(path)
        if on_gpu(doc):
            gpu_saves.append(path)
            continue
        for backend in backends(doc):
            per_backend.setdefault(backend, []).append((doc, path.name))
    if not per_backend:
        return None, None
    now = merge([(b, *found[-1]) for b, found in per_backend.items()])
    now["gpu"] = gpu_runs(Path(history).parent / GPU_DIR, gpu_saves)
    before = [(b, *found[-2]) for b, found in per_backend.items() if len(found) > 1]
    return now, (merge(before) if before else None)


def gpu_runs(folder: Path, extra_saves: list[Path] = ()) -> list[dict]:
    """The GPU runs, newest first: each sub-folder of `folder` (its pytest-benchmark files merged, and its
    RUN_FILE as `meta`), and each GPU save of the history on its own. {name, meta, saves, benchmarks, datetime}."""
    runs = []
    folder = Path(folder)
    dirs = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    for d in dirs:
        meta = {}
        docs = []
        for f in sorted(d.glob("*.json")):
            if f.name == RUN_FILE:
                try:
                    meta = json.loads(f.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise BnspecError(f"{f}: unreadable GPU run description ({exc})") from exc
            else:
                docs.append((f.name, load(f)))
        if docs:
            runs.append(_gpu_run(f"{folder.name}/{d.name}", meta, docs))
    for path in extra_saves:
        runs.append(_gpu_run(f"{Path(path).parent.parent.name}/{Path(path).parent.name}/{Path(path).name}", {},
                             [(Path(path).name, load(path))]))
    return sorted(runs, key=lambda r: r["datetime"], reverse=True)


def _gpu_run(name: str, meta: dict, docs: list[tuple[str, dict]]) -> dict:
    benchmarks = [b for _, doc in docs for b in doc["benchmarks"]]
    newest = max(docs, key=lambda nd: nd[1].get("datetime", ""))[1]
    return {"name": name, "meta": meta, "saves": [n for n, _ in docs], "benchmarks": benchmarks,
            "datetime": newest.get("datetime", ""), "machine_info": newest.get("machine_info", {}),
            "commit_info": newest.get("commit_info", {})}


def rows(doc: dict) -> list[dict]:
    """One row per benchmark: its extra_info, the median time per call (a round of `calls` calls divided by
    them) and GB/s."""
    out = []
    for b in doc["benchmarks"]:
        info = b.get("extra_info", {})
        median = b["stats"]["median"] / (info.get("calls") or 1)
        out.append({**info, "backend": backend_of(b), "device": info.get("device", "cpu"), "median_s": median,
                    "gbps": info.get("bytes", 0) / median / 1e9 if median else 0.0,
                    "rounds": b["stats"].get("rounds")})
    return out


def copy_bandwidth(table: list[dict]) -> dict[tuple, float]:
    """(shape, device) -> the best copy GB/s of any backend."""
    best = {}
    for r in table:
        if r.get("mode") == "copy":
            key = (r["shape"], r["device"])
            best[key] = max(best.get(key, 0.0), r["gbps"])
    return best


def row_key(r: dict) -> tuple:
    return r["shape"], r.get("mode"), r.get("impl"), r["device"], r["backend"]


def _saved(doc: dict) -> str:
    if "saves" not in doc:  # one save, not current()'s merge
        return f"one save, {doc.get('datetime', '')[:16].replace('T', ' ')}"
    out = []
    for backend, s in sorted(doc["saves"].items(), key=lambda kv: backend_order(kv[0])):
        commit = s["commit"][:8] + (", uncommitted changes" if s["dirty"] else "") if s["commit"] else "no commit"
        out.append(f"{backend} {s['datetime'][:16].replace('T', ' ')} ({commit})")
    return "the newest save of each Keras backend (one process each): " + "; ".join(out)


def backend_order(backend: str) -> int:
    return BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS)


def render(doc: dict, previous: dict | None = None) -> list[str]:
    """Markdown for one run (a save, or current()'s merge of the newest save of each backend); with
    `previous` (the run before) a column shows its median, so run-to-run noise is visible next to
    every number. First a summary (one row per tensor and mode: Keras' layer and the fastest
    implementation of each backend), then the targets, then every implementation, collapsed."""
    table = rows(doc)
    before = {row_key(r): r for r in rows(previous)} if previous else {}
    copy = copy_bandwidth(table)
    machine = doc.get("machine_info", {})
    cpu = machine.get("cpu", {})
    present = sorted({r["backend"] for r in table}, key=backend_order)
    bn = [r for r in table if r.get("mode") in MODES]
    by_key = {row_key(r): r for r in bn}
    places = list(dict.fromkeys((r["shape"], r["device"]) for r in bn))
    lines = ["## Benchmarks: BN throughput against this machine's copy bandwidth", "",
             f"Measured by `tox -e bench` on {cpu.get('brand_raw', machine.get('processor', '?'))}, "
             f"{cpu.get('count', '?')} logical CPUs, Python {machine.get('python_version', '?')}; {_saved(doc)}.", ""]
    if places:
        lines += summary(bn, by_key, copy, places, present)
        lines += ["GB/s = bytes / median time, with the bytes BN must move at the least per element: inference "
                  "forward 2 x 4 (read x, write y), training forward 3 x 4 (x read twice, y written), "
                  "forward+backward 4 x 4 (read x and dy, write y and dx). *Of copy* = that over the best copy "
                  "bandwidth of the same tensor in these runs (a copy reads and writes the tensor once: numpy "
                  "copyto, TensorFlow DeepCopy and x + 1, JAX x + 0 under jit, PyTorch clone and copy_; clone and x + 0 "
                  "write a new buffer each call, copyto and copy_ reuse one; with glibc, a new buffer over 32 MB is freshly "
                  "mapped memory whose page faults JAX's and PyTorch's outputs pay on every call, numpy's less as it "
                  "asks for huge pages). *vs Keras* "
                  "= Keras' layer's median over this one's, on the same backend: "
                  + ", ".join(f"{b}: {KERAS_REFERENCE[b]} ({KERAS_LABEL[b]})" for b in BACKENDS) + ". "
                  "On a shared 2-core machine medians move by tens of percent between runs (see *previous run* "
                  "below), so read ratios near a target with that in mind.", ""]
        if "torch" in present and not any(r["impl"] == "torch_compile" for r in bn if r["backend"] == "torch"):
            lines += ["torch_compile is not in the newest PyTorch save: torch.compile failed there (its tests skip with "
                      "the reason: `pytest -rs`) or they were deselected.", ""]
    lines += targets(table, copy)
    for shape, device in places:
        lines += details(shape, device, table, by_key, before, copy)
    steps = [r for r in table if r.get("mode") == "mnist_step"]
    if steps:
        base = {r["backend"]: r for r in steps if r["impl"] == "no_bn"}
        lines += ["### The paper's MNIST model: one train_on_batch step (batch 60)", ""]
        steps.sort(key=lambda r: backend_order(r["backend"]))
        lines.append(tabulate([[r["backend"], r["impl"], f"{r['median_s'] * 1e3:.3f}", f"{1 / r['median_s']:.0f}",
                                f"{r['median_s'] / base[r['backend']]['median_s']:.2f}" if r["backend"] in base else "-"]
                               for r in steps],
                              headers=["backend", "model", "median ms", "steps/s", "time vs no BN"], tablefmt="github",
                              disable_numparse=True))
        lines.append("")
    return lines


def _cell(r: dict | None, bw: float | None, ref: dict | None = None) -> str:
    if r is None:
        return "-"
    out = f"{r['gbps']:.2f}" + (f" ({r['gbps'] / bw:.0%})" if bw else "")
    if ref is not None and ref is not r:
        out += f", {ref['median_s'] / r['median_s']:.2f}x"
    return out


def summary(bn: list[dict], by_key: dict, copy: dict, places: list[tuple], present: list[str]) -> list[str]:
    """One row per tensor and mode: per backend, Keras' layer and the fastest implementation."""
    body = []
    for shape, device in places:
        bw = copy.get((shape, device))
        for mode in MODES:
            row = [shape + ("" if device == "cpu" else f" ({device})"), mode, f"{bw:.2f}" if bw else "-"]
            found = False
            for backend in present:
                cands = [r for r in bn if (r["shape"], r["mode"], r["device"], r["backend"]) == (shape, mode, device, backend)]
                ref = by_key.get((shape, mode, KERAS_REFERENCE.get(backend), device, backend))
                best = max(cands, key=lambda r: r["gbps"]) if cands else None
                found |= bool(cands)
                row.append(_cell(ref, bw))
                row.append("-" if best is None else
                           "= Keras" if best is ref else f"{best['impl']} {_cell(best, bw, ref)}")
            if found:
                body.append(row)
    headers = ["tensor", "mode", "copy GB/s"]
    for backend in present:
        headers += [f"{backend}: Keras", f"{backend}: fastest"]
    return ["GB/s (fraction of copy) of Keras' layer and of the fastest implementation on each backend, with its "
            "speed relative to Keras' layer there:", "",
            tabulate(body, headers=headers, tablefmt="github", disable_numparse=True), ""]


def details(shape: str, device: str, table: list[dict], by_key: dict, before: dict, copy: dict) -> list[str]:
    """Every implementation of every backend on one tensor, in a collapsed block."""
    bw = copy.get((shape, device))
    copies = sorted((r for r in table if r.get("mode") == "copy" and (r["shape"], r["device"]) == (shape, device)),
                    key=lambda r: (backend_order(r["backend"]), r["impl"]))
    body = []
    for mode in MODES:
        for (s, m, impl, d, backend), r in sorted(by_key.items(), key=lambda kv: backend_order(kv[0][4])):
            if (s, m, d) != (shape, mode, device):
                continue
            ref = by_key.get((shape, mode, KERAS_REFERENCE.get(backend), device, backend))
            prev = before.get((s, m, impl, d, backend))
            first = r.get("first_call_s")
            body.append([mode, backend, impl, f"{r['median_s'] * 1e3:.3f}", f"{r['gbps']:.2f}",
                         f"{r['gbps'] / bw:.0%}" if bw else "-",
                         f"{ref['median_s'] / r['median_s']:.2f}x" if ref else "-",
                         f"{prev['median_s'] * 1e3:.3f}" if prev else "-",
                         f"{first:.2f}" if first is not None else "-"])
    where = shape + ("" if device == "cpu" else f" on {device}")
    out = [f"<details><summary>{where}: every implementation" + (f" (copy bandwidth {bw:.1f} GB/s)" if bw else "")
           + "</summary>", ""]
    if copies:
        out += ["Copies (GB/s): " + ", ".join(f"{r['impl']} ({r['backend']}) {r['gbps']:.2f}" for r in copies), ""]
    out.append(tabulate(body, headers=["mode", "backend", "implementation", "median ms", "GB/s", "of copy", "vs Keras",
                                       "previous run, ms", "first call, s"], tablefmt="github", disable_numparse=True))
    return out + ["", "</details>", ""]


def targets(table: list[dict], copy: dict) -> list[str]:
    out = ["### Targets", ""]
    for mode, goal in TARGETS.items():
        cands = [r for r in table if r.get("shape") == BIG and r.get("mode") == mode and r["device"] == "cpu"]
        bw = copy.get((BIG, "cpu"))
        if not cands or not bw:
            out.append(f"- {mode} forward on {BIG}: not measured")
            continue
        best = max(cands, key=lambda r: r["gbps"])
        frac = best["gbps"] / bw
        out.append(f"- best {mode} forward on {BIG}: {best['impl']} ({best['backend']}) at {best['gbps']:.2f} GB/s "
                   f"= {frac:.0%} of copy (target {goal:.0%}): **{'met' if frac >= goal else 'missed'}**")
    tf_big = {(r["mode"], r["impl"]): r for r in table
              if r.get("shape") == BIG and r["device"] == "cpu" and r["backend"] == "tensorflow"}
    for mode in MODES:
        e, k, kx = (tf_big.get((mode, impl)) for impl in ("explicit_xla", "keras_function", "keras_xla"))
        if e and k:
            ratio = e["median_s"] / k["median_s"]
            line = (f"- ExplicitBatchNorm under XLA vs the Keras layer (tf.function), {mode}, {BIG}: "
                    f"{ratio:.2f}x the time (target <= {EXPLICIT_XLA_RATIO}x): "
                    f"**{'met' if ratio <= EXPLICIT_XLA_RATIO else 'missed'}**")
            if ratio > EXPLICIT_XLA_RATIO and kx:
                xla, form = kx["median_s"] / k["median_s"], e["median_s"] / kx["median_s"]
                why = [f"Keras' own layer under XLA takes {xla:.2f}x its tf.function time, "
                       f"ExplicitBatchNorm under XLA {form:.2f}x Keras-under-XLA"]
                if xla > 1.1:
                    why.append("XLA on this CPU compiles the per-channel reductions over N*H*W into slower code "
                               "than TensorFlow's multi-threaded Eigen kernels")
                if form > 1.1:
                    why.append("the explicit layer's formulation costs extra passes over the tensor: a two-pass "
                               "variance (mean first, then mean of squared deviations; kept because it is exact "
                               "where E[x^2]-E[x]^2 cancels) and, differentiated automatically, (x - mean) "
                               "recomputed in the backward pass")
                line += ". Why: " + "; ".join(why)
            out.append(line)
    out.append("- The paper's 60x100 tensor fits in cache: its copy bandwidth is a cache bandwidth, and BN there is "
               "bound by per-call overhead (microseconds of dispatch), not by memory.")
    return out + [""]


# --------------------------------------------------------------------------- GPU runs
