"""`bnspec seeds`: the claims measured on a trained model, on several trainings, so that no verdict rests on
one training's luck.

The claims whose tests use the trained notebook model (the `trained` / `trained_explicit` fixtures, found in
tests/claims by reading the source) are run once per training seed (model initialisation and batch order;
100 is the notebook's, the one every main run uses), each in a child pytest with `--bnspec-train-seed`, into
its own results file. The verdict of every case must be the same on every seed; the per-seed numbers are kept
in reports/seeds/results.json and the report shows one line per claim.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import time
from pathlib import Path

from bnspec import BnspecError, paths, provenance, results
from bnspec.harness import runner
from bnspec.run import Environment, Run

SCHEMA = 1
DEFAULT_SEEDS = (100, 101, 102)  # 100: the notebook's seed (every main run's model)
DEFAULT_OUT = Path("reports/seeds")
FIXTURES = ("trained", "trained_explicit")


def trained_claims(root: Path = provenance.ROOT) -> list[str]:
    """The claims with a test that uses a trained model fixture (read from tests/claims, nothing imported)."""
    found = set()
    for f in sorted((root / "tests" / "claims").glob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef) and any(a.arg in FIXTURES for a in node.args.args):
                for dec in node.decorator_list:
                    if (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "claim" and dec.args
                            and isinstance(dec.args[0], ast.Constant)):
                        found.add(dec.args[0].value)
    return sorted(found)


def measure(run: Run, seeds: list[int], claims: list[str], workers: str = "2", log=print) -> dict:
    """Run `claims` once per seed; returns the document written to reports/seeds/results.json."""
    per_seed, started = {}, time.time()
    with tempfile.TemporaryDirectory(prefix="bnspec-seeds-") as tmp:
        for seed in seeds:
            target = Path(tmp) / f"seed-{seed}.json"
            args = ["tests/claims", "-q", "-p", "no:cacheprovider", "-n", workers, f"--bnspec-claims={','.join(claims)}",
                    f"--bnspec-train-seed={seed}", f"--bnspec-results={target}"]
            t0 = time.time()
            log(f"bnspec seeds: seed {seed}: {', '.join(claims)} ...")
            code = runner.claim_suite(run, args, stdout=sys.stderr).returncode
            if code not in (0, 1) or not target.is_file():
                raise BnspecError(f"seed {seed}: pytest exited {code} and wrote no results")
            doc = results.load(target)
            per_seed[str(seed)] = {c.nodeid: {"claim": c.claim, "outcome": c.outcome, "observed": c.observed,
                                             "evidence": c.evidence, "message": c.message[:300]} for c in doc.claim_cases()}
            log(f"bnspec seeds: seed {seed}: {len(doc.cases)} cases in {time.time() - t0:.0f} s (pytest exit {code})")
    env = Environment.capture(run, gpu=False)
    return {"schema": SCHEMA, "run": run.key, "environment": env.as_dict(), "code": provenance.code(), "claims": claims,
            "seeds": [str(s) for s in seeds], "cases": per_seed, "seconds": round(time.time() - started)}


def unstable(doc: dict) -> list[str]:
    """The cases whose outcome or verdict differs between seeds, one line each."""
    out = []
    nodeids = sorted(set().union(*(set(c) for c in doc["cases"].values())))
    for n in nodeids:
        seen = {s: (doc["cases"][s].get(n) or {}) for s in doc["seeds"]}
        kinds = {(c.get("outcome"), c.get("observed")) for c in seen.values()}
        if len(kinds) > 1:
            out.append(f"{n}: " + ", ".join(f"seed {s} {c.get('outcome')}/{c.get('observed')}" for s, c in seen.items()))
    return out


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("seeds", help="the claims measured on a trained model, on several trainings (seeds)",
                              description="Run the claims whose tests use the trained notebook model once per training "
                              "seed (default 100, 101, 102) and check that every case's verdict is the same on every "
                              "seed. Writes reports/seeds/results.json (exit 1 when a verdict depends on the seed).")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma-separated training seeds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results.json goes")
    p.add_argument("--workers", default="2", help="pytest -n for each seed's run")
    return p


def main(args) -> int:
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise BnspecError(f"--seeds {args.seeds!r}: write comma-separated integers, e.g. 100,101,102") from None
    if len(seeds) < 2:
        raise BnspecError("--seeds needs at least two seeds to compare")
    run = Run.from_env()
    claims = trained_claims()
    doc = measure(run, seeds, claims, args.workers)
    paths.atomic_write_json(args.out / "results.json", doc)
    bad = unstable(doc)
    n = len(set().union(*(set(c) for c in doc["cases"].values())))
    if bad:
        print(f"bnspec seeds: {len(bad)} of {n} cases change verdict with the training seed:", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"bnspec seeds: the same verdict on seeds {', '.join(map(str, seeds))} for all {n} cases of "
          f"{', '.join(claims)}; wrote {args.out / 'results.json'}")
    return 0
