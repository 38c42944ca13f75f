"""pytest-benchmark JSON -> the report's benchmark section (no TensorFlow).

Each BN benchmark carries extra_info {shape, mode, impl, bytes, device}; the copy benchmarks of the
same shape give the machine's copy bandwidth (the best of numpy and TensorFlow). Throughput is
bytes / median time, shown in GB/s and as a fraction of that copy bandwidth.
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
EXPLICIT_XLA_RATIO = 1.25


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


def rows(doc: dict) -> list[dict]:
    out = []
    for b in doc["benchmarks"]:
        info = b.get("extra_info", {})
        median = b["stats"]["median"]
        out.append({**info, "median_s": median, "gbps": info.get("bytes", 0) / median / 1e9 if median else 0.0,
                    "rounds": b["stats"].get("rounds")})
    return out


def copy_bandwidth(table: list[dict]) -> dict[tuple, float]:
    best = {}
    for r in table:
        if r.get("mode") == "copy":
            key = (r["shape"], r.get("device", "cpu"))
            best[key] = max(best.get(key, 0.0), r["gbps"])
    return best


def render(doc: dict, previous: dict | None = None) -> list[str]:
    """Markdown for one run; with `previous` (an earlier run) a column shows its median, so run-to-run
    noise is visible next to every number."""
    table = rows(doc)
    before = {(r["shape"], r.get("mode"), r.get("impl"), r.get("device", "cpu")): r for r in rows(previous)} if previous else {}
    copy = copy_bandwidth(table)
    machine = doc.get("machine_info", {})
    cpu = machine.get("cpu", {})
    lines = ["## Benchmarks: BN throughput against this machine's copy bandwidth", "",
             f"Measured by `tox -e bench` ({doc.get('datetime', '')[:19]}) on {cpu.get('brand_raw', machine.get('processor', '?'))}, "
             f"{cpu.get('count', '?')} logical CPUs, Python {machine.get('python_version', '?')}. "
             "Bytes per element moved at the least: inference forward 2 x 4 (read x, write y), training forward "
             "3 x 4 (x read twice, y written), forward+backward 4 x 4 (read x and dy, write y and dx). "
             "GB/s = bytes / median time; *of copy* = that over the best copy bandwidth of the same tensor in the "
             "same session (numpy copyto, TensorFlow DeepCopy, or y = x + 1 on all threads: each reads and writes "
             "the tensor once); *vs Keras* = the Keras layer "
             "(tf.function)'s median over this one's; *previous run* = the same benchmark in the run before "
             "(reports/benchmarks/history): on a shared 2-core machine medians move by tens of percent between "
             "runs, so read ratios near a target with that in mind.", ""]
    by_key = {(r["shape"], r["mode"], r["impl"], r.get("device", "cpu")): r for r in table if r.get("mode") != "copy"}
    shapes = list(dict.fromkeys(r["shape"] for r in table if r.get("mode") not in ("copy", "mnist_step")))
    for shape in shapes:
        for device in sorted({r.get("device", "cpu") for r in table if r.get("shape") == shape}):
            bw = copy.get((shape, device))
            lines += [f"### {shape} on {device}" + (f" (copy bandwidth {bw:.1f} GB/s)" if bw else ""), ""]
            body = []
            for mode in ("inference", "training", "training_backward"):
                ref = by_key.get((shape, mode, "keras_function", device))
                for (s, m, impl, d), r in by_key.items():
                    if (s, m, d) != (shape, mode, device):
                        continue
                    prev = before.get((s, m, impl, d))
                    body.append([mode, impl, f"{r['median_s'] * 1e3:.3f}", f"{r['gbps']:.2f}",
                                 f"{r['gbps'] / bw:.0%}" if bw else "-",
                                 f"{ref['median_s'] / r['median_s']:.2f}x" if ref else "-",
                                 f"{prev['median_s'] * 1e3:.3f}" if prev else "-"])
            lines.append(tabulate(body, headers=["mode", "implementation", "median ms", "GB/s", "of copy", "vs Keras",
                                                 "previous run, ms"], tablefmt="github", disable_numparse=True))
            lines.append("")
    steps = [r for r in table if r.get("mode") == "mnist_step"]
    if steps:
        base = next((r for r in steps if r["impl"] == "no_bn"), None)
        lines += ["### The paper's MNIST model: one train_on_batch step (batch 60)", ""]
        lines.append(tabulate([[r["impl"], f"{r['median_s'] * 1e3:.3f}", f"{1 / r['median_s']:.0f}",
                                f"{r['median_s'] / base['median_s']:.2f}" if base else "-"] for r in steps],
                              headers=["model", "median ms", "steps/s", "time vs no BN"], tablefmt="github"))
        lines.append("")
    lines += targets(table, copy)
    return lines


def targets(table: list[dict], copy: dict) -> list[str]:
    out = ["### Targets", ""]
    for mode, goal in TARGETS.items():
        cands = [r for r in table if r.get("shape") == BIG and r.get("mode") == mode and r.get("device", "cpu") == "cpu"]
        bw = copy.get((BIG, "cpu"))
        if not cands or not bw:
            out.append(f"- {mode} forward on {BIG}: not measured")
            continue
        best = max(cands, key=lambda r: r["gbps"])
        frac = best["gbps"] / bw
        out.append(f"- best {mode} forward on {BIG}: {best['impl']} at {best['gbps']:.2f} GB/s = {frac:.0%} of copy "
                   f"(target {goal:.0%}): **{'met' if frac >= goal else 'missed'}**")
    for mode in ("inference", "training", "training_backward"):
        e = next((r for r in table if r.get("shape") == BIG and r.get("mode") == mode and r.get("impl") == "explicit_xla"), None)
        k = next((r for r in table if r.get("shape") == BIG and r.get("mode") == mode and r.get("impl") == "keras_function"), None)
        kx = next((r for r in table if r.get("shape") == BIG and r.get("mode") == mode and r.get("impl") == "keras_xla"), None)
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
