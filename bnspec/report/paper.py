"""The report's section on the paper's MNIST experiment, from reports/paper/results.json (written by
`bnspec paper`). No TensorFlow: the experiment itself is bnspec.subjects.paper."""

from __future__ import annotations

import json
from pathlib import Path

from bnspec import BnspecError

RUN_NAMES = ("baseline-lr0.1", "bn-lr0.1", "baseline-lr0.5", "bn-lr0.5")


def load(out_dir: Path) -> dict | None:
    """reports/paper/results.json, or None when the experiment has not been run."""
    path = Path(out_dir) / "paper" / "results.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        doc["summary"]["final_accuracy"], doc["runs"]["bn-lr0.1"]["run"]  # noqa: B018  (shape check)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BnspecError(f"{path}: not the paper experiment's results ({exc}); run bnspec paper again") from exc
    return doc


def checkpoint_table(res: dict[str, dict], every: int = 5000) -> list[str]:
    names = list(RUN_NAMES)
    lines = ["| step | " + " | ".join(f"{n}: accuracy" for n in names) + " | baseline 15/50/85 | BN 15/50/85 |",
             "|" + "---|" * (len(names) + 3)]
    base, bn = res["baseline-lr0.1"]["checkpoints"], res["bn-lr0.1"]["checkpoints"]
    for i, c in enumerate(base):
        if c["step"] % every and c["step"] != 1000:
            continue
        accs = " | ".join(f"{res[n]['checkpoints'][i]['test_accuracy']:.4f}" for n in names)
        fmt = lambda ps: "/".join(f"{v:+.2f}" for v in ps)  # noqa: E731
        lines.append(f"| {c['step']} | {accs} | {fmt(c['percentiles'])} | {fmt(bn[i]['percentiles'])} |")
    return lines



def summary_lines(s: dict) -> list[str]:
    """The measured orderings and ratios as markdown bullets (the CLI prints them too)."""
    fa = s["final_accuracy"]
    return [
        "- final test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in fa.items()),
        f"- BN minus baseline accuracy from step 5,000 on: at least {s['bn_minus_baseline_from_5000']:+.4f}",
        f"- BN reaches the baseline's final accuracy at step {s['bn_steps_to_baseline_final']} "
        f"(baseline: {s['baseline_steps']})",
        f"- drift of the median sigmoid input: {s['median_drift']['baseline']:.2f} without BN, "
        f"{s['median_drift']['bn']:.2f} with BN; of the 15-85 spread: {s['spread_drift']['baseline']:.2f} vs "
        f"{s['spread_drift']['bn']:.2f}",
        "- wall time per run (s): " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items())
        + "; steps/s: " + ", ".join(f"{k} {v}" for k, v in s["steps_per_second"].items()),
    ]


def section(doc: dict, figure_name: str = "paper_figure1.png", table: bool = True) -> list[str]:
    """The report's section for reports/paper/results.json (no TensorFlow)."""
    run = doc["runs"]["bn-lr0.1"]["run"]
    lines = ["## The paper's MNIST experiment (Figure 1), reproduced", "",
             f"`bnspec paper` (or `tox -e paper`): 3 x 100 sigmoid units, N(0, {run['init_std']:g}^2) weights, plain "
             f"SGD, {run['steps']:,} steps of {run['batch']}, the same initial weights and batch order with and without BN "
             "(choices and reasons: `bnspec/paper.py`). Claims P07-P10 test the orderings below.", "",
             f"![Figure 1 reproduced]({figure_name})", ""]
    return lines + summary_lines(doc["summary"]) + [""] + (checkpoint_table(doc["runs"]) + [""] if table else [])
