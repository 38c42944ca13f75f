"""The results JSON: what one pytest run on one flavour observed. Written by the pytest plugin
(bnspec.plugin) on the controller process, read by the report. No TensorFlow.

Schema (version 1):
{
  "schema": 1, "flavour": "keras3", "started": iso, "finished": iso, "seconds": float,
  "environment": {python, tensorflow, keras, flavour, platform, cpu, cpu_count, workers, pytest_args},
  "model_cache": {entry, created, train_seconds, test_accuracy} | null,
  "tests": [{nodeid, claim|null, outcome, params, expected, expected_why, observed, summary,
             evidence, message, duration}]
}
"""

from __future__ import annotations

import json
from pathlib import Path

from bnspec import BnspecError

SCHEMA = 1
OUTCOMES = ("passed", "failed", "skipped", "error")


class ResultsError(BnspecError):
    pass


def validate(doc, origin: str) -> dict:
    if not isinstance(doc, dict):
        raise ResultsError(f"{origin}: not a results object")
    if doc.get("schema") != SCHEMA:
        raise ResultsError(
            f"{origin}: results schema {doc.get('schema')!r}, this bnspec reads schema {SCHEMA}; "
            "re-run the tests to regenerate it"
        )
    for name in ("flavour", "environment", "tests"):
        if name not in doc:
            raise ResultsError(f"{origin}: missing field {name!r}")
    for i, test in enumerate(doc["tests"]):
        if not isinstance(test, dict) or "nodeid" not in test or test.get("outcome") not in OUTCOMES:
            raise ResultsError(f"{origin}: tests[{i}] is malformed")
    return doc


def load(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file; run the tests first (bnspec run)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: unreadable results JSON ({exc}); re-run the tests to regenerate it") from exc
    return validate(doc, str(path))


def load_dir(directory: Path) -> list[dict]:
    """All flavour results in `directory` (one <flavour>.json each), in bnspec.flavours.FLAVOURS order."""
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        raise ResultsError(f"{directory}: no results files; run the tests first (bnspec run)")
    return in_flavour_order(load(f) for f in files)


def in_flavour_order(docs) -> list[dict]:
    """Results sorted as bnspec.flavours.FLAVOURS lists the flavours (unknown ones last)."""
    from bnspec.flavours import FLAVOURS

    order = {f: i for i, f in enumerate(FLAVOURS)}
    return sorted(docs, key=lambda d: (order.get(d["flavour"], len(order)), d["flavour"]))


def verdicts(doc: dict) -> dict[str, tuple]:
    """The verdict table of one run: nodeid -> (outcome, expected, observed). Evidence numbers are
    left out on purpose: they may move in the last digits (e.g. an unseeded fit), verdicts may not."""
    return {t["nodeid"]: (t["outcome"], t.get("expected"), t.get("observed")) for t in doc["tests"]}


def compare(a: dict, b: dict) -> list[str]:
    """Differences between two runs' verdict tables (same flavour expected), one line each."""
    lines = []
    if a["flavour"] != b["flavour"]:
        lines.append(f"flavour: {a['flavour']} vs {b['flavour']}")
    va, vb = verdicts(a), verdicts(b)
    for nodeid in sorted(va.keys() | vb.keys()):
        x, y = va.get(nodeid), vb.get(nodeid)
        if x != y:
            fmt = lambda v: "absent" if v is None else "/".join(str(p) for p in v)  # noqa: E731
            lines.append(f"{nodeid}: {fmt(x)} vs {fmt(y)}")
    return lines
