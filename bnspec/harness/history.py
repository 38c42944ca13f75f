"""`bnspec history`: the claim suite on every Keras release, one isolated environment per release.

The release catalogue below is the history bnspec measures: the latest patch of every Keras 3 minor
release from 3.0 to 3.15 and one pinned keras-nightly (the `keras3` family, over TensorFlow 2.21), and
tf_keras 2.15 to 2.21, each over the TensorFlow of the same minor version (the `tfkeras` family).

Environments live in the cache (BNSPEC_HOME/history/), built once and reused:
  venvs/tf-X.Y       a virtualenv with `tensorflow` X.Y, tf-keras X.Y, torch (the claims X01-X04
                     compare with torch.nn) and bnspec's dependencies; bnspec itself comes from the
                     checkout on PYTHONPATH, so one venv serves every checkout
  overlays/keras-V   a Keras 3 release (pip --no-deps --target), plus those of its requirements the
                     base venv lacks (e.g. dm-tree for 3.0), put before the venv's own keras on PYTHONPATH
Each job (release x backend) runs `pytest tests/claims` in its environment and writes
reports/history/<job>.json, a results document (bnspec.results) whose runs record the Keras,
TensorFlow and code fingerprint that produced it. A job whose file holds a complete run of the
current measuring code is not run again (resumable); --force reruns it. A release that cannot be
installed gets one line and a small document with `install_error`, so the timeline shows it.

The history is measured on the TensorFlow backend. A job names its backend so that JAX or PyTorch
jobs can join, but they are not in the catalogue's sweep: old Keras 3 releases do not run with the
jax of these machines (Keras 3.0.5 calls jax.spmd_mode, gone from jax 0.10), so each would need the
jax of its day.

Nothing here imports TensorFlow; `--list` needs nothing but this file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bnspec import BnspecError, paths, provenance, results
from bnspec.harness import runner
from bnspec.releases import FAMILIES, TFKERAS, TORCH, Job, select  # noqa: F401
from bnspec.run import TFKERAS_PYTHON_VAR

# --------------------------------------------------------------------------- environments

def root() -> Path:
    return paths.home() / "history"


def _pip(python: Path, *args: str, log: Path) -> None:
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        text = log.read_text().splitlines()
        cause = next((ln for ln in reversed(text) if ln.startswith("ERROR")), text[-1] if text else "")
        wanted = " ".join(a for a in args if not a.startswith(("-", "/")))  # the requirements, not options or paths
        raise InstallError(f"pip install {wanted} failed: {cause.strip()}")


class InstallError(BnspecError):
    pass


def _dependencies() -> list[str]:
    """bnspec's own dependencies, read from pyproject.toml (the checkout's)."""
    import tomllib

    project = tomllib.loads((provenance.ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def _lock(name: str):
    """One builder per environment, across threads and processes (parallel jobs share a venv)."""
    from filelock import FileLock

    locks = root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{name}.lock"))


def venv(job: Job, log: Path, say=print) -> Path:
    """The base virtualenv of a job's TensorFlow (built once; a half-built one is rebuilt)."""
    with _lock(f"venv-{job.venv_name}"):
        return _venv(job, log, say)


def _venv(job: Job, log: Path, say) -> Path:
    target = root() / "venvs" / job.venv_name
    python = target / "bin" / "python"
    done = target / ".bnspec-complete"
    if done.is_file():
        return python
    if target.exists():
        shutil.rmtree(target)  # our own half-built cache entry, never a user's file
    say(f"  building {target} (tensorflow {job.tensorflow}, tf-keras, torch, bnspec's dependencies)")
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    tf_keras = next(k for k, tf in TFKERAS.items() if tf == job.tensorflow)
    _pip(python, f"tensorflow=={job.tensorflow}", f"tf-keras=={tf_keras}", TORCH, *_dependencies(), log=log)
    done.write_text(json.dumps({"tensorflow": job.tensorflow, "tf_keras": tf_keras, "built": time.time()}))
    return python


def overlay(job: Job, python: Path, log: Path, say=print) -> Path | None:
    """The directory holding a Keras 3 release (and the requirements the base venv lacks), or None for
    tf_keras, which lives in the base venv."""
    if job.family == "tfkeras":
        return None
    with _lock(f"overlay-{job.flavour}-{job.release}"):
        return _overlay(job, python, log, say)


def _overlay(job: Job, python: Path, log: Path, say) -> Path:
    dist = "keras-nightly" if job.flavour == "keras-nightly" else "keras"
    target = root() / "overlays" / f"{dist}-{job.release}"
    done = target / ".bnspec-complete"
    if done.is_file():
        return target
    if target.exists():
        shutil.rmtree(target)
    say(f"  installing {dist}=={job.release} into {target}")
    _pip(python, "--no-deps", "--target", str(target), f"{dist}=={job.release}", log=log)
    missing = _missing_requirements(python, target)
    if missing:
        say(f"  and its requirements the base lacks: {', '.join(missing)}")
        _pip(python, "--no-deps", "--target", str(target), *missing, log=log)
    done.write_text(json.dumps({"release": job.release, "added": missing}))
    return target


_CHECK = r"""
import importlib.metadata as md, json, sys
from packaging.requirements import Requirement
sys.path.insert(0, sys.argv[1])
dist = next(d for d in md.distributions(path=[sys.argv[1]]) if d.metadata["Name"].lower().startswith("keras"))
missing = []
for text in dist.requires or []:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        have = md.version(req.name)
    except md.PackageNotFoundError:
        missing.append(str(req).split(";")[0].strip())
        continue
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        missing.append(str(req).split(";")[0].strip())
print(json.dumps(missing))
"""


def _missing_requirements(python: Path, target: Path) -> list[str]:
    out = subprocess.run([str(python), "-c", _CHECK, str(target)], capture_output=True, text=True)
    if out.returncode:
        raise InstallError(f"could not read the requirements of {target.name}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- running a job

def out_path(out_dir: Path, job: Job) -> Path:
    return Path(out_dir) / f"{job.id}.json"


def fresh(out_dir: Path, job: Job, fingerprint: str) -> bool:
    """Whether the job's results are a complete run of this measuring code (then it is not rerun)."""
    try:
        doc = results.load(out_path(out_dir, job))
    except results.ResultsError:
        return False
    if doc.install_error:
        return doc.release == job.release  # not retried unless --force
    runs = list(doc.runs.values())
    return len(runs) == 1 and runs[0].fingerprint == fingerprint and not runs[0].partial


def environment(job: Job, extra_path: Path | None, python: Path | None = None) -> dict:
    """The job's pytest environment. A Keras 3 job gets its own venv's python (which holds the tf_keras of
    its TensorFlow) as BNSPEC_TFKERAS_PYTHON, the interpreter that makes the tf_keras artefacts C12 and C25
    load: the job never depends on whether the checkout happens to have a .tox/tfkeras."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", TFKERAS_PYTHON_VAR)}
    if python is not None and job.flavour != "tfkeras":
        env[TFKERAS_PYTHON_VAR] = str(python)
    env["PYTHONPATH"] = os.pathsep.join(([str(extra_path)] if extra_path else []) + [str(provenance.ROOT)])
    env["BNSPEC_HOME"] = str(paths.home())
    return job.run.child_env(env)


def run_job(job: Job, out_dir: Path, workers: str, say=print) -> dict:
    """Install (cached) and measure one job; returns {job, status, seconds, ...} for the progress line."""
    logs = root() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{job.id}.log"
    log.write_text("")
    t0 = time.time()
    try:
        python = venv(job, log, say)
        extra = overlay(job, python, log, say)
    except InstallError as exc:
        doc = results.Results(job.flavour, job.backend, release=job.release, install_error=str(exc))
        paths.atomic_write_json(out_path(out_dir, job), doc.to_dict())
        return {"job": job.id, "status": "not installable", "detail": str(exc), "seconds": time.time() - t0}
    installed = time.time() - t0
    tmp = root() / "runs" / f"{job.id}.json"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    args = ["-n", str(workers), "tests/claims", "-q", "-p", "no:cacheprovider", f"--bnspec-results={tmp}"]
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(runner.command(job.run, args, str(python))) + "\n")
        fh.flush()
        code = runner.claim_suite(job.run, args, python=str(python), env=environment(job, extra, python),
                                  stdout=fh).returncode
    seconds = time.time() - t0
    if code not in (0, 1) or not tmp.is_file():  # 1: some verdict unexpected or a case broke: still a result
        tail = [ln for ln in log.read_text().splitlines() if ln.strip()][-1:]
        raise BnspecError(f"{job.id}: pytest exited {code} ({tail[0][:200] if tail else 'no output'}); log: {log}")
    doc = results.load(tmp)
    doc.release, doc.tensorflow_release = job.release, job.tensorflow
    paths.atomic_write_json(out_path(out_dir, job), doc.to_dict())
    tmp.unlink()
    failed = sum(c.outcome in ("failed", "error") for c in doc.cases)
    return {"job": job.id, "status": "measured", "seconds": seconds, "install_seconds": installed,
            "cases": len(doc.cases), "failed": failed, "log": str(log)}


def sweep(jobs: list[Job], out_dir: Path, workers: str = "2", force: bool = False, say=print,
          parallel: int = 1) -> list[dict]:
    """Run every job that is not fresh, `parallel` at a time; one progress line per job as it starts and
    as it ends; returns the per-job outcomes in catalogue order."""
    from concurrent.futures import ThreadPoolExecutor

    fp = provenance.fingerprint()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    heads = {job.id: f"[{i}/{len(jobs)}] {job.id}" for i, job in enumerate(jobs, 1)}

    def one(job: Job) -> dict:
        head = heads[job.id]
        if not force and fresh(out_dir, job, fp):
            say(f"{head}: up to date ({out_path(out_dir, job)})")
            return {"job": job.id, "status": "up to date"}
        say(f"{head}: {job.label} over tensorflow {job.tensorflow} ({job.backend})")
        try:
            r = run_job(job, out_dir, workers, say)
        except BnspecError as exc:  # this job broke (not a verdict): say so, go on with the others
            say(f"{head}: FAILED: {exc}")
            return {"job": job.id, "status": "failed", "detail": str(exc)}
        if r["status"] == "measured":
            say(f"{head}: measured {r['cases']} cases in {r['seconds']:.0f} s (install {r['install_seconds']:.0f} s); "
                f"{r['failed']} cases differ from the claims' expectations or broke; log {r['log']}")
        else:
            say(f"{head}: NOT INSTALLABLE: {r['detail']}")
        return r

    if parallel <= 1:
        done = [one(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=parallel) as pool:  # each job is a subprocess: threads only wait
            done = list(pool.map(one, jobs))
    say(f"history: {len(jobs)} jobs in {time.time() - t_all:.0f} s ({parallel} at a time); results in {out_dir}")
    return done


# --------------------------------------------------------------------------- command line

def register(sub) -> None:
    p = sub.add_parser(
        "history", help="the claim suite on every Keras 3 and tf_keras release (isolated, cached environments)",
        description="Measure the claims on each release of the catalogue (Keras 3.0-3.15 and keras-nightly over "
        "TensorFlow 2.21; tf_keras 2.15-2.21 over their TensorFlow), one cached environment per release, results in "
        "reports/history/<job>.json. Resumable: a job already measured by this code is skipped. Then `bnspec report` "
        "draws the timeline.")
    p.add_argument("--list", action="store_true", help="print the jobs and exit (nothing is installed)")
    p.add_argument("--json", action="store_true", help="with --list: a JSON array (a CI matrix)")
    p.add_argument("--release", action="append", default=[], metavar="JOB",
                   help="only these jobs, e.g. keras3-3.8.0 or tfkeras-2.16.0 (repeat or comma-separate)")
    p.add_argument("--family", choices=FAMILIES, default=None, help="only this family's releases")
    p.add_argument("--ends", action="store_true", help="only the oldest and newest release of each family (CI)")
    p.add_argument("--force", action="store_true", help="rerun jobs whose results are up to date")
    p.add_argument("--workers", default="2", help="pytest-xdist workers per job (default 2)")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="run N jobs at a time (default 1); e.g. --parallel 2 --workers 1 keeps 2 cores busy "
                   "through each job's long single tests")
    p.add_argument("--out", type=Path, default=Path("reports/history"), help="where <job>.json go")


def main(args) -> int:
    names = [n for part in args.release for n in part.split(",") if n]
    jobs = select(names, "tensorflow", args.ends, args.family)
    if args.list:
        if args.json:
            print(json.dumps([j.as_dict() for j in jobs]))
        else:
            for j in jobs:
                print(f"{j.id:36s} {j.label} over tensorflow {j.tensorflow}")
        return 0
    if not re.fullmatch(r"\d+|auto", args.workers):
        raise BnspecError(f"--workers {args.workers!r}: a number or auto")
    if args.parallel < 1:
        raise BnspecError(f"--parallel {args.parallel}: at least 1")
    outcomes = sweep(jobs, args.out, args.workers, args.force, parallel=args.parallel)
    bad = [o["job"] for o in outcomes if o["status"] in ("failed", "not installable")]
    if bad:
        print(f"bnspec: {len(bad)} of {len(jobs)} jobs not measured: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0
