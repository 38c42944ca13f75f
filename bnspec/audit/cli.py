"""`bnspec audit MODEL`: the command line of bnspec.audit. `--help` and `--static` on a saved file import
no Keras and no TensorFlow. An entry point: it makes the run (bnspec.run.Run) once and passes it down.

Exit status: 0 no finding at or above --fail-on (default: warning), 1 findings at or above it,
2 usage errors (unreadable model or data, bad arguments).

Wiring: bnspec/cli.py calls `register(subparsers)` and, for the `audit` command, `run(args)`;
`main(argv)` runs it stand-alone.
"""

from __future__ import annotations

import argparse
import json
import sys

from bnspec.audit.findings import SEVERITIES, UsageError

HELP = "check your own model for the BN traps bnspec measures (static config checks + forward passes)"
DESCRIPTION = (
    "Audit a model for Batch Normalization traps: hard-coded training arguments, preprocessing layers that put BN "
    "in training mode, shared or frozen BN, BN inside TimeDistributed, Keras-2-only arguments, 16-bit statistics, "
    "hyper-parameters copied from PyTorch, biases before BN (static, from the config), and inference calls that "
    "write variables or depend on the batch, untrained or near-zero statistics, and moving statistics far from "
    "the data: stale, or a train/inference shift (dynamic, forward passes; a model without BN needs none); with "
    "--export, what each deployment format's runtime computes against Keras, within a derived float32 bound. Every "
    "finding names the layer, the evidence, the bnspec claim behind it with its verdict on this Keras, and the fix.")
EPILOG = ("MODEL: a .keras file (Keras 3), an .h5 file (tf_keras / legacy), or package.module:factory (a function "
          "returning the model, for subclassed models). Exit status: 0 clean, 1 findings at or above --fail-on, "
          "2 usage error.")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("audit", help=HELP, description=DESCRIPTION, epilog=EPILOG)
    _arguments(p)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model.keras | model.h5 | package.module:factory")
    p.add_argument("--data", metavar="FILE", default=None,
                   help=".npy or .npz of inputs for the dynamic checks (default: random inputs of the model's "
                   "input shape; the stale-statistics and train/inference-shift checks need real data)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--fail-on", choices=SEVERITIES, default="warning",
                   help="exit 1 when a finding has at least this severity (default: warning)")
    p.add_argument("--static", "--static-only", dest="static_only", action="store_true",
                   help="no forward pass; for a saved file, read its config only (no Keras import)")
    p.add_argument("--max-examples", type=int, default=64, metavar="N",
                   help="use at most N examples of --data (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--export", metavar="FORMAT[,FORMAT...]", default="",
                   help="also export the model in each format (tf_saved_model, onnx, openvino, litert, torch), "
                   "serve it in the format's own runtime on the same inputs, and report its drift against model(x, "
                   "training=False) with a float32 bound derived through the model's graph, the first BN layer "
                   "whose activations diverge (onnx, openvino, litert) and the likely cause (claims D01-D09); "
                   "needs the runtimes: pip install -e '.[deploy]'")
    p.add_argument("--export-dir", metavar="DIR", default=None,
                   help="keep the exported artefacts in DIR (default: a temporary directory, removed)")


def run(args) -> int:
    from bnspec import audit

    try:
        if args.max_examples < 2:
            raise UsageError("--max-examples must be at least 2")
        run, why = audit.current_run()  # None (and why) when the environment names no valid run: static still runs
        formats = audit.export_formats(args.export)
        if formats and args.static_only:
            raise UsageError("--export runs the model: drop --static")
        if args.static_only and not audit.looks_like_factory(args.model):
            if args.data:
                raise UsageError("--data needs the dynamic checks: drop --static")
            result = audit.check_file(args.model, run=run)
        elif run is None and not args.static_only:
            raise UsageError(f"the dynamic checks need Keras: {why} (or audit with --static)")
        else:
            result = audit.check(args.model, data=args.data, dynamic=not args.static_only,
                                 max_examples=args.max_examples, seed=args.seed, run=run, export=formats,
                                 export_dir=args.export_dir)
    except UsageError as exc:
        print(f"bnspec audit: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = result.to_json()
        out["fail_on"] = args.fail_on
        print(json.dumps(out, indent=1))
    else:
        print(result.table())
    return 1 if result.at_least(args.fail_on) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bnspec audit", description=DESCRIPTION, epilog=EPILOG)
    _arguments(p)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for bad usage
        return int(exc.code or 0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
