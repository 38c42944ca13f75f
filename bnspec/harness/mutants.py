"""The mutation harness: the claim suite run against deliberately wrong BatchNormalization layers.

Does the suite have the power to see a wrong BN? Each *mutant* (catalogue: bnspec.subjects.mutants) is
Keras' BatchNormalization with one realistic deviation, and names the claim(s) whose mechanism it breaks.
`bnspec mutants` runs the claims each mutant needs, once per mutant, and compares every test case with one
baseline run of the real layer:

  killed    every named claim has a test case whose verdict/outcome flipped (and failed), on a case that
            passes on the baseline and by a verdict, not an exception
  gap       not killed, but something flipped (a bystander caught it: the named claim's test needs
            sharpening), or a named claim flipped only by an exception or only on a case that also fails
            without the mutant (shaky), or a named claim is not in the registry yet (no test can kill it)
  survived  nothing flipped, and every named claim exists: the suite cannot see this deviation at all

Each run is `runner.claim_suite(Run(..., mutant=name))` in its own BNSPEC_HOME; the child installs the mutant
through its run (bnspec.subjects.keras_for). Named or extra claims the registry does not have are left out
of the pytest selection with a note (the plugin refuses unknown ids).

Output: OUT/results.json (schema 2). Every row, and the control, carries what measured it (`measured`: the
environment, the measuring code's fingerprint, the mutant's own code), so that a row kept by `--only` from an
earlier run is never taken for this run's: bnspec.report.mutants renders the kill matrix and marks such rows.
Reading, judging and writing need no TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from bnspec import BnspecError, claims, paths, provenance
from bnspec import results as results_mod
from bnspec.harness import runner
from bnspec.run import Environment, Run
from bnspec.subjects import mutants as catalogue
from bnspec.subjects.mutants import BY_NAME, CATALOGUE, CONTROL, Mutant, get

SCHEMA = results_mod.MUTANTS_SCHEMA
ROOT = provenance.ROOT  # the repository: tests/claims lives here
DEFAULT_OUT = Path("reports/mutants")

# Cheap layer-level claims (about 2 s of test time together) run for every mutant besides its named
# claims: they make the kill matrix show who else notices, at almost no cost.
PANEL = ("K01", "K02", "K03", "K04", "K05", "K09", "K10", "K13", "K15", "K16", "N06",
         "P01", "P02", "P05", "E01", "E02", "E03", "X02", "X03", "C05", "C09", "C14", "C19")
SLOW, FAILED = {"P07", "P08", "P09", "P10"}, ("failed", "error")  # slow claims; outcomes that can kill


def run_claims(mutant: Mutant) -> tuple[str, ...]:
    """The claims a mutant's run measures: its named claims, its extra ones and the panel."""
    return tuple(sorted(set(mutant.claims) | set(mutant.extra) | set(PANEL)))


def plan(selected: list[Mutant], registry=None) -> tuple[list[str], list[str]]:
    """(the claims the runs select: every selected mutant's run_claims that the registry has; one note per
    claim it does not have yet). A named claim missing from the registry makes its mutant a gap, not a crash."""
    known = set(claims.BY_ID if registry is None else registry)
    wanted = sorted(set().union(*(run_claims(m) for m in selected)))
    notes = [f"{c} (named by {', '.join(m.name for m in selected if c in m.claims + m.extra)}) is not in the "
             "claim registry yet: it is not run, and cannot kill" for c in wanted if c not in known]
    return [c for c in wanted if c in known], notes


# --------------------------------------------------------------------------- the kill matrix (no TensorFlow)


def kills(baseline: results_mod.Results, mutated: results_mod.Results) -> dict:
    """Compare a mutant run with the baseline run, test case by test case.

    A case kills when it failed (or errored) under the mutant and its (outcome, observed verdict)
    differs from the baseline's. Cases that fail identically on the baseline are broken, not kills;
    a case that fails differently on the baseline is marked (`shaky`): it never kills a named claim.
    Returns {"killers": {claim: [nodeid]}, "crashed": [nodeid], "shaky": [nodeid], "broken": [nodeid],
    "messages": {crashed nodeid: the failure's first line}}."""
    base = {c.nodeid: c for c in baseline.cases}
    killers: dict[str, list[str]] = {}
    crashed, shaky, broken, messages = [], [], [], {}
    for t in sorted(mutated.cases, key=lambda c: c.nodeid):
        nodeid = t.nodeid
        if t.outcome not in FAILED or not t.claim:
            continue
        b = base.get(nodeid)
        if b is not None and (b.outcome, b.observed) == (t.outcome, t.observed):
            broken.append(nodeid)
            continue
        killers.setdefault(t.claim, []).append(nodeid)
        if t.outcome == "error" or t.observed is None:
            crashed.append(nodeid)  # an exception, not a verdict: a kill, but a blunt one
            messages[nodeid] = " ".join(t.message.split())[:240]
        if b is not None and b.outcome in FAILED:
            shaky.append(nodeid)  # the case fails without the mutant too (differently)
    return {"killers": killers, "crashed": crashed, "shaky": shaky, "broken": broken, "messages": messages}


def judge(mutant: Mutant, result: dict | None, registry=None) -> dict:
    """The catalogue entry plus its kills -> one row of results.json. Per killing claim: the number of test
    cases that flipped, and how many of them only by an exception or on a case that also fails on the
    baseline. A named claim counts as killing only through a case that flipped by a verdict on a case that
    passes on the baseline; otherwise it stays `missing`, with the exception in `notes`, the shaky cases in
    `shaky`, or, for a claim the registry lacks, in `pending`."""
    known = set(claims.BY_ID if registry is None else registry)
    row = {"deviation": mutant.deviation, "origin": mutant.origin, "named": list(mutant.claims)}
    if mutant.extra:
        row["extra"] = list(mutant.extra)
    pending = [c for c in mutant.claims if c not in known]
    if pending:
        row["pending"] = pending
    if result is None or "killers" not in result:
        return row | {"verdict": "error", "killers": {}, "missing": list(mutant.claims),
                      "error": (result or {}).get("error", "no results")}
    killers = result["killers"]
    crashed, shaky = set(result.get("crashed", ())), set(result.get("shaky", ()))
    missing = [c for c in mutant.claims if not any(i not in crashed and i not in shaky for i in killers.get(c, ()))]
    verdict = "killed" if not missing else "gap" if killers or pending else "survived"
    messages = result.get("messages", {})
    notes = {c: next((messages[i] for i in killers[c] if i in messages), "an exception")
             for c in missing if any(i in crashed for i in killers.get(c, ()))}
    if notes:
        row["notes"] = notes
    shaky_named = {c: [i for i in killers[c] if i in shaky] for c in missing if any(i in shaky for i in killers.get(c, ()))}
    if shaky_named:
        row["shaky"] = shaky_named
    row |= {"verdict": verdict, "missing": missing, "killers": {
        c: {"cases": len(ids), "by_exception": sum(i in crashed for i in ids),
            "also_failing_on_baseline": sum(i in shaky for i in ids)} for c, ids in sorted(killers.items())}}
    if result.get("broken"):
        row["broken_on_baseline"] = len(result["broken"])
    return row


# --------------------------------------------------------------------------- the document (no TensorFlow)


def measuring(run: Run) -> dict:
    """What measures this run: the flavour, the environment (bnspec.run.Environment) and the measuring code
    (bnspec.provenance: fingerprint, commit, dirty). The header of the document, and each row's `measured`."""
    env = Environment.capture(run)
    return {"flavour": run.flavour, "environment": env.as_dict(), "code": provenance.code()}


def measured(header: dict, name: str, code: dict | None = None) -> dict:
    """A row's (or the control's) `measured`: the environment, the measuring code (`code`: as it was when the
    row's run ended; default the header's), the mutant's own code, and when."""
    return {"environment": header["environment"], "code": code or header["code"], "mutant_code": catalogue.code(name),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def document(rows: dict[str, dict], header: dict, seconds: float, baseline: dict | None = None,
             control: dict | None = None, counted=None) -> dict:
    """results.json: the header (what measured this run), the rows in catalogue order, the control, and
    `mutant_code` (each mutant's layer code now). `counts`: the verdicts of the rows named in `counted`
    (default: all), the ones this run measured."""
    env = header.get("environment") or {}
    counted = set(rows if counted is None else counted)
    doc = {"schema": SCHEMA, "flavour": header.get("flavour"), "keras": env.get("keras"),
           "tensorflow": env.get("tensorflow"), "environment": env, "code": header.get("code") or {},
           "seconds": round(seconds), "panel": list(PANEL),
           "counts": {v: sum(r["verdict"] == v for n, r in rows.items() if n in counted)
                      for v in ("killed", "gap", "survived", "error")},
           "mutant_code": {n: catalogue.code(n) for n in [*rows, *([CONTROL] if control else [])]},
           "mutants": {m.name: rows[m.name] for m in CATALOGUE if m.name in rows}}
    if baseline is not None:
        doc["baseline"] = baseline
    if control is not None:
        doc["control"] = control
    return doc


def load(path: Path) -> dict:
    return results_mod.load_mutants(path)


def _as_measured(previous: dict, row: dict) -> dict:
    """A row of an earlier document, carrying what measured it (a schema-1 row: the document's Keras and
    TensorFlow, the code unknown)."""
    if "measured" in row:
        return row
    env = {"keras": previous.get("keras"), "backend": "tensorflow", "tensorflow": previous.get("tensorflow"),
           "flavour": previous.get("flavour")}
    return row | {"measured": {"environment": {k: v for k, v in env.items() if v}, "code": {}, "mutant_code": None}}


def merge(previous: dict | None, doc: dict) -> dict:
    """A partial (--only) run's document plus the rows of `previous` it did not measure, and the previous
    control when this run had none. A kept row keeps what measured it: the rendered matrix marks it, and the
    header (this run's environment) does not count it."""
    if previous is None:
        return doc
    rows = dict(doc["mutants"])
    for name, row in previous.get("mutants", {}).items():
        if name not in rows and name in BY_NAME and all(isinstance(k, dict) for k in row.get("killers", {}).values()):
            rows[name] = _as_measured(previous, row)
    control = doc.get("control") or (_as_measured(previous, previous["control"]) if previous.get("control") else None)
    header = {"flavour": doc.get("flavour"), "environment": doc.get("environment"), "code": doc.get("code")}
    return document(rows, header, doc.get("seconds", 0), baseline=doc.get("baseline"), control=control,
                    counted=doc["mutants"])


def write(doc: dict, out: Path) -> Path:
    paths.atomic_write_json(out / "results.json", doc)
    return out / "results.json"


# --------------------------------------------------------------------------- running the harness


def _pytest_args(claim_ids: list[str], results: Path, workers: int, slow: bool) -> list[str]:
    cmd = ["tests/claims", f"--bnspec-claims={','.join(claim_ids)}",
           f"--bnspec-results={results}", "-p", "no:cacheprovider", "-q", "--no-header", "-p", "no:randomly"]
    if workers:
        cmd += ["-n", str(workers)]
    if not slow:
        cmd += ["-m", "not slow"]
    return cmd


def _run_suite(run: Run, claim_ids: list[str], home: Path, env: dict, workers: int, timeout: float) -> dict:
    """One pytest run of `claim_ids` for `run` (a mutant's when run.mutant is set) in its own BNSPEC_HOME."""
    results = home / "results.json"
    results.unlink(missing_ok=True)
    run_env = dict(env, BNSPEC_HOME=str(home))
    started = time.time()
    with open(home / "pytest.log", "w") as log:
        try:
            code = runner.claim_suite(run, _pytest_args(claim_ids, results, workers, bool(SLOW & set(claim_ids))),
                                      env=run_env, stdout=log, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    seconds = time.time() - started
    if not results.is_file():
        return {"error": f"pytest exit {code} and no results after {seconds:.0f} s (log: {home / 'pytest.log'})",
                "seconds": seconds}
    doc = results_mod.load(results)
    if doc.mutant != run.mutant:
        return {"error": f"{results} was measured with mutant {doc.mutant!r}, not {run.mutant!r}", "seconds": seconds}
    return {"doc": doc, "seconds": seconds, "code": code}


def _copy_reusable(baseline_home: Path, home: Path) -> None:
    """Models that do not contain Keras' BN (ExplicitBatchNorm's) are the same for every mutant."""
    models = baseline_home / "models"
    for entry in models.glob("*-explicit-*") if models.is_dir() else []:
        if entry.is_dir() and not entry.name.startswith("."):
            shutil.copytree(entry, home / "models" / entry.name, dirs_exist_ok=True)


def _mnist(env: dict, home_root: Path) -> None:
    if env.get("BNSPEC_MNIST"):
        return
    for candidate in (paths.home() / "data" / "mnist.npz", home_root / "baseline" / "data" / "mnist.npz"):
        if candidate.is_file():
            env["BNSPEC_MNIST"] = str(candidate)
            return


def harness(run: Run, selected: list[Mutant], out: Path, home_root: Path, jobs: int = 2, workers: int = 1,
            timeout: float = 900, control: bool = True, log=print) -> dict:
    """Baseline run of `run` (Keras 3 on TensorFlow), then the control and every mutant (`jobs` at a time);
    writes OUT/results.json and returns the document (the selected rows only)."""
    if run.family != "keras3" or run.backend != "tensorflow" or run.mutant:
        raise BnspecError(f"mutants patch Keras 3's BatchNormalization on TensorFlow; this run is {run.describe()}")
    if not (ROOT / "tests" / "claims").is_dir():
        raise BnspecError(f"the claim tests are not at {ROOT / 'tests' / 'claims'}: run the harness from a "
                          "source checkout (pip install -e .)")
    started = time.time()
    header = measuring(run)
    env = dict(os.environ)
    _mnist(env, home_root)
    union, notes = plan(selected)
    for note in notes:
        log(f"bnspec mutants: note: {note}")
    base_home = home_root / "baseline"
    base_home.mkdir(parents=True, exist_ok=True)
    log(f"bnspec mutants: baseline (real BatchNormalization) on {len(union)} claims ...")
    # the baseline runs alone: it gets every worker the mutant runs will share
    base = _run_suite(run, union, base_home, env, max(workers, 1) * max(jobs, 1) if workers else 0, timeout)
    if "doc" not in base:
        raise BnspecError(f"the baseline run failed: {base['error']}")
    base_doc = base["doc"]
    broken = sorted(c.nodeid for c in base_doc.cases if c.outcome in FAILED)
    log(f"bnspec mutants: baseline: {len(base_doc.cases)} test cases in {base['seconds']:.0f} s"
        + (f"; {len(broken)} FAIL without any mutant (a kill there is shaky: marked '?', and never counts for "
           "a named claim): " + ", ".join(broken[:5]) + (" ..." if len(broken) > 5 else "") if broken else ""))
    _mnist(env, home_root)  # the baseline may have fetched it
    done, total = [0], len(selected) + bool(control)

    def fresh_home(name: str) -> Path:
        home = home_root / name
        shutil.rmtree(home, ignore_errors=True)  # a fresh cache: models trained with this mutant only
        (home / "models").mkdir(parents=True)
        _copy_reusable(base_home, home)
        return home

    def one(m: Mutant | None):
        name = CONTROL if m is None else m.name
        ids = union if m is None else [c for c in run_claims(m) if c in union]
        res = _run_suite(replace(run, mutant=name), ids, fresh_home(name), env, workers, timeout)
        result = kills(base_doc, res["doc"]) if "doc" in res else res
        done[0] += 1
        if m is None:  # the control: the harness' hooked layer with no deviation must flip nothing
            row = {"claims_run": union, "killers": {c: len(i) for c, i in sorted(result.get("killers", {}).items())}}
            row["verdict"] = "error" if "error" in result else "clean" if not row["killers"] else "dirty"
            log(f"bnspec mutants: [{done[0]}/{total}] control ({CONTROL}, no deviation): {row['verdict'].upper()}"
                + (f" -- the harness itself flips {', '.join(row['killers'])}" if row["killers"] else "")
                + (f"; {result['error']}" if "error" in result else "") + f" in {res['seconds']:.0f} s")
        else:
            row = judge(m, result)
            named = ", ".join(f"{c}{'✗' if c in row['missing'] else '✓'}" for c in m.claims)
            others = [c for c in row["killers"] if c not in m.claims]
            log(f"bnspec mutants: [{done[0]}/{total}] {m.name}: {row['verdict'].upper()} (named {named}"
                + (f"; also {', '.join(others)}" if others else "") + (f"; {row['error']}" if row.get("error") else "")
                + (f"; not in the registry: {', '.join(row['pending'])}" if row.get("pending") else "")
                + f") in {res['seconds']:.0f} s")
        return name, row | {"measured": measured(header, name, provenance.code())}  # code edited meanwhile: marked

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = dict(pool.map(one, ([None] if control else []) + list(selected)))
    control_row = rows.pop(CONTROL, None)
    doc = document(rows, header, time.time() - started,
                   baseline={"claims": union, "test_cases": len(base_doc.cases), "broken": broken}, control=control_row)
    write(doc, out)
    return doc


# --------------------------------------------------------------------------- command line


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "mutants", help="run the claim suite against deliberately wrong BN layers: does every claim catch its mutant?",
        description="Run the claims each mutant needs with Keras' BatchNormalization replaced by the mutant "
        "(in every process of the run), compare with one baseline run, and write the kill matrix to "
        "OUT/results.json (rendered by bnspec.report.mutants as OUT/MUTANTS.md). Exit 1 if a selected mutant "
        "is not killed by the claims that name it, or the control flips a test case.")
    p.add_argument("--only", default=None, metavar="NAME,...",
                   help="run only these mutants (comma-separated); the other rows of OUT/results.json are kept, "
                   "each with what measured it, and marked when that is not this run's environment and code")
    p.add_argument("--jobs", type=int, default=2, help="mutant runs at once (default 2)")
    p.add_argument("--workers", type=int, default=1,
                   help="pytest-xdist workers per run (-n; default 1: one TensorFlow import per run; 0 = no xdist)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results.json and MUTANTS.md go (default reports/mutants)")
    p.add_argument("--home", type=Path, default=None,
                   help="where each run's BNSPEC_HOME goes (default: $BNSPEC_HOME/mutants/<name>)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per pytest run before it counts as an error")
    p.add_argument("--no-control", action="store_true",
                   help="skip the control run (the harness' own layer with no deviation, which must flip nothing)")
    p.add_argument("--list", action="store_true", help="list the catalogue and exit")
    return p


def run(args, publish=None) -> int:
    """`bnspec mutants`. `publish(out)`, when given (the CLI passes bnspec.report.mutants.write_page), renders
    OUT/MUTANTS.md from OUT/results.json and returns its path."""
    if args.list:
        for m in CATALOGUE:
            pending = [c for c in m.claims if c not in claims.BY_ID]
            print(f"{m.name:28} {m.family:13} {', '.join(m.claims):14} {m.deviation}  [{m.origin}]"
                  + (f"  ({', '.join(pending)}: not in the claim registry yet)" if pending else ""))
        return 0
    names = [n.strip() for n in (args.only or "").split(",") if n.strip()]
    selected = [get(n) for n in names] if names else list(CATALOGUE)
    if args.jobs < 1 or args.workers < 0:
        raise BnspecError("--jobs must be >= 1 and --workers >= 0")
    home_root = paths.home() / "mutants" if args.home is None else args.home
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    previous = load(out / "results.json") if names and (out / "results.json").is_file() else None
    here = Run.from_env()
    doc = harness(Run(here.flavour, here.backend), selected, out, home_root, args.jobs, args.workers, args.timeout,
                  control=not args.no_control)
    if previous is not None:  # a partial run updates its mutants' rows and keeps the others, marked
        doc = merge(previous, doc)
        write(doc, out)
    c, kept = doc["counts"], len(doc["mutants"]) - len(selected)
    edited = [m.name for m in selected if doc["mutants"][m.name]["measured"]["code"] != doc["code"]]
    print(f"bnspec mutants: {c['killed']} of {len(selected)} mutants killed by their named claims "
          f"({c['gap']} gap(s), {c['survived']} survived, {c['error']} error(s))"
          + (f"; {kept} other row(s) kept from earlier runs, each with what measured it" if kept else "")
          + (f"; the measuring code changed during the runs of {', '.join(edited)} (marked)" if edited else ""))
    page = publish(out) if publish is not None else None
    print(f"bnspec: wrote {out / 'results.json'}" + (f" and {page}" if page else
                                                      " (MUTANTS.md: rendered by bnspec.report.mutants)"))
    bad = [m.name for m in selected if doc["mutants"][m.name]["verdict"] != "killed"]
    dirty = not args.no_control and (doc.get("control") or {}).get("verdict") != "clean"
    return 1 if bad or dirty else 0
