"""Writes OUT/bench-run.json: what measured a GPU run's benchmarks (scripts/gpu_run.sh calls it last).

    python scripts/gpu_bench_run.py OUT/bench-run.json DEVICE [SECONDS]

The GPU, driver and CUDA from nvidia-smi (no framework imported), the library versions, the code (git commit
where the tree is a checkout; always the measuring-code fingerprint and a hash of tests/benchmarks/*.py), the
benchmark files written beside it, and NOTE from the environment. bnspec.report.bench reads it as a GPU run's
description (RUN_FILE) once the folder is copied to reports/benchmarks/gpu/<date>-<gpu>/.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the environment that shapes how the frameworks use the GPU, recorded as the run saw it
ENV = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_CLIENT_MEM_FRACTION",
       "XLA_PYTHON_CLIENT_ALLOCATOR", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def describe(out: Path, device: str, seconds: float | None = None, environ=None) -> dict:
    environ = os.environ if environ is None else environ
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bnspec import provenance
    from bnspec.run import nvidia_smi

    smi = nvidia_smi() if device == "gpu" else {}
    commit, dirty = provenance.git_commit()
    bench_code = sorted((ROOT / "tests" / "benchmarks").glob("*.py"))
    doc = {"device": device, "gpu": smi.get("gpu"), "driver": smi.get("driver"), "cuda": smi.get("cuda"),
           "python": platform.python_version(), "keras": _version("keras"), "jax": _version("jax"),
           "torch": _version("torch"), "cpus": os.cpu_count(), "commit": commit, "dirty": dirty,
           "fingerprint": provenance.fingerprint(), "bench_code": provenance.file_hash(*bench_code),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "files": sorted(f.name for f in Path(out).parent.glob("bench-*.json") if f.name != Path(out).name),
           "seconds": seconds, "env": {k: environ[k] for k in ENV if k in environ}, "note": environ.get("NOTE", "")}
    return {k: v for k, v in doc.items() if v not in (None, "", {})}


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[1] not in ("cpu", "gpu"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out = Path(argv[0])
    doc = describe(out, argv[1], float(argv[2]) if len(argv) == 3 else None)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{out}: {doc.get('gpu') or doc['device']}, files {', '.join(doc['files']) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
