"""`bnspec` command line. TensorFlow is imported only by the commands that need it (data, train,
and run's preparation step), never for --help, `claims` or `report`.

Exit codes: 0 success, 1 runtime error (one line on stderr), 2 bad usage; `run` returns pytest's code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bnspec import BnspecError, __version__, provenance



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bnspec",
        description="Executable specification of Batch Normalization in TensorFlow/Keras: "
        "measure every claim, write reports/REPORT.md.",
    )
    p.add_argument("--version", action="version", version=f"bnspec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="measure every claim (pytest tests/claims -n auto), then write the report",
                         description="Run the claim suite with pytest -n auto (the tests that need it fetch MNIST "
                         "and train the model once, both cached), then write reports/REPORT.md. Exit status: "
                         "pytest's (1 when a verdict is unexpected or a measurement broke); unmeasured claims are "
                         "listed but do not fail the run unless --strict. Extra arguments go to pytest, e.g. "
                         "bnspec run -k K01 -n 0")
    run.add_argument("--no-report", action="store_true", help="do not write the report after the tests")
    run.add_argument("--all", action="store_true",
                     help="also run bnspec's own unit and robustness tests (what plain `pytest` runs)")
    run.add_argument("--strict", action="store_true", help="exit 3 when a claim is unmeasured on this run")
    run.add_argument("--claim", action="append", default=[], metavar="ID",
                     help="run only this claim's tests (repeat or comma-separate: --claim K01,N05)")
    run.add_argument("--device", choices=("cpu", "gpu"), default=None,
                     help="run device-parametrised cases on this device only")
    run.add_argument("--flavour", choices=("keras3", "tfkeras", "keras-nightly"), default=None,
                     help="Keras flavour to test (sets BNSPEC_FLAVOUR; the flavour must be installed in this env)")

    rep = sub.add_parser("report", help="results JSON -> reports/REPORT.md (no TensorFlow needed)")
    rep.add_argument("--raw", type=Path, default=Path("reports/raw"), help="directory of <flavour>.json results")
    rep.add_argument("--out", type=Path, default=Path("reports"), help="where REPORT.md and results.json go")
    rep.add_argument("--check", action="store_true",
                     help="write nothing: re-render REPORT.md and EVIDENCE.md from the committed results.json and "
                     "exit 1 if they differ from the files (CI runs this)")

    sub.add_parser("data", help="obtain and verify MNIST (sha256) into the cache; prints where it is")

    train = sub.add_parser("train", help="train the notebook's model once and cache it (reused afterwards)")
    train.add_argument("--epochs", type=int, default=None, help="epochs (default: 10, as the notebook)")
    train.add_argument("--bn", choices=("keras", "explicit", "all"), default="keras",
                       help="BN layer: Keras' BatchNormalization, bnspec's ExplicitBatchNorm, or both (default: keras)")

    cmp_ = sub.add_parser("compare", help="compare the verdict tables of two results JSONs (exit 1 if they differ)",
                          description="Compare two runs, e.g. `pytest -n 0` and `pytest -n 2`, or two runs in a "
                          "row: outcome and observed verdict per test case, per run key (flavour/backend). Takes "
                          "reports/raw/<key>.json files or the merged reports/results.json. Evidence numbers are "
                          "not compared. No TensorFlow needed.")
    cmp_.add_argument("first", type=Path)
    cmp_.add_argument("second", type=Path)

    pap = sub.add_parser("paper", help="reproduce the paper's MNIST experiment (Figure 1): 4 runs of 50,000 steps, cached",
                         description="Train the paper's sigmoid network with and without BN (and at 5x the learning "
                         "rate), 50,000 SGD steps each (cached; about 20-30 s per run on 2 cores), then write "
                         "reports/paper_figure1.png and reports/paper/results.json and update REPORT.md.")
    pap.add_argument("--out", type=Path, default=Path("reports"), help="where the figure and results go")
    pap.add_argument("--compute-only", action="store_true", help="only make sure the 4 runs are cached (no outputs)")

    from bnspec.audit import cli as audit_cli  # no TensorFlow at import

    audit_cli.register(sub)
    from bnspec.harness import mutants  # no TensorFlow at import

    mutants.register(sub)
    from bnspec.harness import history, seeds  # no TensorFlow at import

    history.register(sub)
    seeds.register(sub)
    sub.add_parser("claims", help="list the claims in the registry")
    sub.add_parser("cache", help="show the cache directory, its models and its event log")
    return p


def _cmd_report(args) -> int:
    from bnspec import report

    if args.check:
        problems = report.check(args.out)
        for p in problems:
            print(f"bnspec: {p}", file=sys.stderr)
        if problems:
            return 1
        print(f"bnspec: {args.out / 'REPORT.md'} and EVIDENCE.md are what this code renders from {args.out / 'results.json'}")
        return 0
    target = report.write(args.raw, args.out)
    print(f"bnspec: wrote {target} and {args.out / 'results.json'}")
    return 0


def _cmd_paper(args) -> int:
    from bnspec import report
    from bnspec.subjects import paper
    from bnspec.report.paper import summary_lines

    res = paper.all_results()
    if args.compute_only:
        return 0
    png, js = paper.write_outputs(res, args.out)
    print("\n".join(summary_lines(paper.summary(res))))
    print(f"bnspec: wrote {png} and {js}")
    raw = args.out / "raw"
    if raw.is_dir() or (args.out / "results.json").is_file():
        print(f"bnspec: wrote {report.write(raw, args.out, log=lambda m: None)}")
    return 0


def _cmd_compare(args) -> int:
    from bnspec import results

    a, b = results.load_any(args.first), results.load_any(args.second)
    diffs = results.compare(a, b)
    n = sum(len(results.verdicts(d)) for d in a)
    if not diffs:
        print(f"bnspec: identical verdict tables ({n} test cases; {', '.join(d.key for d in a)})")
        return 0
    print(f"bnspec: {len(diffs)} difference(s) between {args.first} and {args.second}:")
    for line in diffs:
        print(f"  {line}")
    return 1


def _cmd_data(args) -> int:
    from bnspec.subjects import data

    (xtr, ytr), (xte, yte) = data.load_mnist()
    print(f"MNIST verified: train {xtr.shape}, test {xte.shape}; from {data.where()}")
    return 0


def _cmd_train(args) -> int:
    from bnspec.run import Run
    from bnspec.subjects import keras_for, training
    from bnspec.subjects.model import ModelSpec

    spec = training.TrainSpec() if args.epochs is None else training.TrainSpec(epochs=args.epochs)
    if spec.epochs < 1:
        raise BnspecError("--epochs must be >= 1")
    run = Run.from_env()
    keras = keras_for(run)
    for bn in ("keras", "explicit") if args.bn == "all" else (args.bn,):
        t = training.trained(run, ModelSpec(bn=bn), train=spec, keras=keras)
        print(f"model ({bn} BN): {t.path} ({'trained now' if t.created else 'reused from cache'}; "
              f"test accuracy {t.metrics['test_accuracy']:.4f})")
    return 0


def _cmd_claims(args) -> int:
    from tabulate import tabulate

    from bnspec import claims

    tests = _claim_tests()
    rows = [[c.id, c.title, f"tests/claims/test_{c.topic}.py::" + ", ".join(tests.get(c.id, ["(no test)"])), c.source]
            for c in claims.CLAIMS]
    print(tabulate(rows, headers=["id", "title", "test", "source"], tablefmt="simple", maxcolwidths=[None, 34, 50, 40]))
    return 0


def _claim_tests() -> dict[str, list[str]]:
    """claim id -> test function names, read from tests/claims/ without importing them (no TensorFlow)."""
    import ast

    found: dict[str, list[str]] = {}
    root = Path(__file__).resolve().parents[1] / "tests" / "claims"
    for f in sorted(root.glob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef):
                for dec in node.decorator_list:
                    if (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "claim" and dec.args
                            and isinstance(dec.args[0], ast.Constant)):
                        found.setdefault(dec.args[0].value, []).append(node.name)
    return found


def _cmd_cache(args) -> int:
    from bnspec import paths
    from bnspec.subjects import training

    home = paths.home()
    print(f"cache directory: {home}  (set BNSPEC_HOME to move it)")
    mnist = home / "data" / "mnist.npz"
    print(f"MNIST: {mnist if mnist.exists() else 'not fetched yet'}")
    models = home / "models"
    for entry in sorted(models.glob("*-*")) if models.exists() else []:
        if entry.is_dir():
            print(f"model: {entry.name}")
    for ev in training.store().events()[-10:]:
        print(f"event: {ev}")
    return 0


def _run_of(args, parser):
    """bnspec run's run: the environment's flavour and backend (--flavour overrides the flavour, unless the
    environment says otherwise) and --device; conflicts are usage errors."""
    from bnspec.run import FLAVOUR_VAR, LEGACY_VAR, Run

    environ = dict(os.environ)
    if args.flavour:
        conflict = Run.flavour_conflict(args.flavour)
        if conflict:
            parser.error(conflict)
        environ[FLAVOUR_VAR] = args.flavour
        if args.flavour == "tfkeras":
            environ[LEGACY_VAR] = "1"
    return Run.from_env(environ, device=args.device)


def _run_options(args, parser) -> list[str]:
    """bnspec run's own options -> pytest arguments; an unknown claim id is a usage error."""
    from bnspec import claims

    ids = [c.strip().upper() for arg in args.claim for c in arg.split(",") if c.strip()]
    unknown = [c for c in ids if c not in claims.BY_ID]
    if unknown:
        parser.error(f"unknown claim id(s) {', '.join(unknown)}; `bnspec claims` lists them")
    return [f"--bnspec-claims={','.join(ids)}"] if ids else []


def _cmd_run(args, pytest_args: list[str], parser=None) -> int:
    from bnspec.harness import runner

    parser = parser or _parser()
    run = _run_of(args, parser)
    own = _run_options(args, parser)
    if not any(a == "-n" or a.startswith("-n") or a.startswith("--numprocesses") for a in pytest_args):
        own += ["-n", "auto"]
    if not args.all and not any(not a.startswith("-") and Path(a.split("::")[0]).exists() for a in pytest_args):
        own.append("tests/claims")  # the main job measures the claims; --all adds bnspec's own tests
    print(f"bnspec: run {run.key} ({run.describe()}): {' '.join(runner.command(run, own + pytest_args))}", flush=True)
    code = runner.claim_suite(run, own + pytest_args, env=os.environ).returncode
    if code not in (0, 1):  # usage error, internal error, interrupted, or nothing measured: the report stays
        print(f"bnspec: pytest exited {code}; the report is unchanged", file=sys.stderr)
        return code
    reports = provenance.ROOT / "reports"  # where the child pytest (run from the checkout) wrote its results
    if not args.no_report and (reports / "raw").is_dir():
        from bnspec import report

        target = report.write(reports / "raw", reports)
        print(f"bnspec: wrote {target}")
        if code == 0 and args.strict and _unmeasured_now(run, reports / "raw"):
            print("bnspec: --strict: some claims are unmeasured on this run (see the terminal summary)", file=sys.stderr)
            return 3
    return code


def _unmeasured_now(run, raw: Path = Path("reports/raw")) -> bool:
    """Whether a claim is unmeasured in the results file this run wrote (reports/raw/<run key>.json)."""
    from bnspec import results
    from bnspec.measure import status

    doc = results.load(raw / f"{run.key}.json")
    return any(s.status == status.UNMEASURED for s in status.summarise(doc).values())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    # `run` passes unknown arguments through to pytest
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "run":
            return _cmd_run(args, extra, parser)
        if args.command == "audit":
            from bnspec.audit import cli as audit_cli

            return audit_cli.run(args)
        if args.command == "mutants":
            from bnspec.harness import mutants
            from bnspec.report import mutants as kill_matrix

            return mutants.run(args, publish=kill_matrix.write_page)
        if args.command == "history":
            from bnspec.harness import history

            return history.main(args)
        if args.command == "seeds":
            from bnspec.harness import seeds

            return seeds.main(args)
        return {"report": _cmd_report, "data": _cmd_data, "train": _cmd_train, "claims": _cmd_claims,
                "cache": _cmd_cache, "compare": _cmd_compare, "paper": _cmd_paper}[args.command](args)
    except BnspecError as exc:
        print(f"bnspec: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bnspec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
