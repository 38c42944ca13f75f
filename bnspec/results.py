"""The results JSON: what the claim suite observed on one run key (a Keras flavour), accumulated
over runs. Written by the pytest plugin (bnspec.plugin) on the controller process, read by the
report. No TensorFlow.

Schema (version 2), one file per run key, reports/raw/<key>.json:
{
  "schema": 2, "flavour": "keras3", "backend": "tensorflow", ["device": "gpu" for a GPU machine's run,]
  "runs": {run_id: {"finished": iso, "seconds": float, "environment": {...}, "code": {fingerprint, commit, dirty},
                    "selection": {"args": [...], "partial": bool}}},
  "tests": [{nodeid, claim|null, outcome, params, expected, observed, summary, evidence, message, run: run_id}]
}

A run merges into the file per test case (`merge_run`): a case the run measured replaces the old
one; a case it skipped never replaces a measured one (a CPU-only run keeps the GPU cases; a run in
an environment without the flavour keeps everything); a case it did not select stays as it was.
A full (unselective) run drops the cases that no longer exist. Each case keeps the id of the run that
measured it, so the report can say when and on which code each number was measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from bnspec import BnspecError

SCHEMA = 2
OUTCOMES = ("passed", "failed", "skipped", "error")
MEASURED = ("passed", "failed", "error")
# The skip message of a case whose API does not exist on this Keras (e.g. `renorm` before 3.14): the
# claim is *not applicable* there, which the release timeline shows as n/a, not as a failure.
NOT_APPLICABLE = "not applicable: "


def not_applicable(test: dict) -> bool:
    return test.get("outcome") == "skipped" and str(test.get("message", "")).startswith(NOT_APPLICABLE)


class ResultsError(BnspecError):
    pass


def key(doc: dict) -> str:
    """The run key of a results document: the flavour, plus the backend when it is not TensorFlow, plus
    "gpu" for a run on a GPU machine (`--bnspec-device=gpu`): each key is a column of the report."""
    backend = doc.get("backend") or "tensorflow"
    parts = [doc["flavour"]] + ([backend] if backend != "tensorflow" else []) + (["gpu"] if doc.get("device") == "gpu" else [])
    return "-".join(parts)


def validate(doc, origin: str) -> dict:
    if not isinstance(doc, dict):
        raise ResultsError(f"{origin}: not a results object")
    if doc.get("schema") != SCHEMA:
        raise ResultsError(
            f"{origin}: results schema {doc.get('schema')!r}, this bnspec reads schema {SCHEMA}; "
            "re-run the tests to regenerate it"
        )
    for name in ("flavour", "runs", "tests"):
        if name not in doc:
            raise ResultsError(f"{origin}: missing field {name!r}")
    if not isinstance(doc["runs"], dict) or not isinstance(doc["tests"], list):
        raise ResultsError(f"{origin}: 'runs' must be an object and 'tests' a list")
    for i, test in enumerate(doc["tests"]):
        if not isinstance(test, dict) or "nodeid" not in test or test.get("outcome") not in OUTCOMES:
            raise ResultsError(f"{origin}: tests[{i}] is malformed")
        if test.get("run") not in doc["runs"]:
            raise ResultsError(f"{origin}: tests[{i}] ({test['nodeid']}) names run {test.get('run')!r}, not in 'runs'")
    return doc


def load(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file; run the tests first (bnspec run)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: unreadable results JSON ({exc}); re-run the tests to regenerate it") from exc
    return validate(doc, str(path))


def load_any(path: Path) -> list[dict]:
    """A per-run-key results file, or the merged reports/results.json: a list of results documents."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: unreadable results JSON ({exc})") from exc
    if isinstance(doc, dict) and "results" in doc and doc.get("schema") == SCHEMA:
        return [validate(d, f"{path} ({i})") for i, d in enumerate(doc["results"])]
    return [validate(doc, str(path))]


def load_dir(directory: Path) -> list[dict]:
    """All results in `directory` (one <key>.json each), in run order."""
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        raise ResultsError(f"{directory}: no results files; run the tests first (bnspec run)")
    return in_order(load(f) for f in files)


def in_order(docs) -> list[dict]:
    """Results sorted as bnspec.flavours.FLAVOURS lists the flavours, TensorFlow backend first."""
    from bnspec.flavours import FLAVOURS

    order = {f: i for i, f in enumerate(FLAVOURS)}
    backends = {"tensorflow": 0, "jax": 1, "torch": 2}
    return sorted(docs, key=lambda d: (order.get(d["flavour"], len(order)), backends.get(d.get("backend"), 9), key(d)))


def merge_run(old: dict | None, new: dict) -> dict:
    """Merge one run's document (a single run in `runs`) into the accumulated document `old`."""
    if old is None or key(old) != key(new):
        return new
    (run_id, run), = new["runs"].items()
    partial = run["selection"]["partial"]
    tests = {t["nodeid"]: t for t in old["tests"]}
    seen = set()
    for t in new["tests"]:
        seen.add(t["nodeid"])
        prev = tests.get(t["nodeid"])
        if t["outcome"] == "skipped" and prev is not None and prev["outcome"] in MEASURED:
            continue  # a skip never replaces a measurement
        tests[t["nodeid"]] = t
    if not partial:
        tests = {n: t for n, t in tests.items() if n in seen}
    kept = sorted(tests.values(), key=lambda t: t["nodeid"])
    runs = {**old["runs"], run_id: run}
    used = {t["run"] for t in kept}
    return {**new, "runs": {r: v for r, v in sorted(runs.items()) if r in used}, "tests": kept}


def verdicts(doc: dict) -> dict[str, tuple]:
    """The verdict table of one document: nodeid -> (what happened, observed verdict, the mechanisms a
    refutation confirmed). What happened is "concluded" for a case that reached a verdict, whether or not
    it matched the expectation of its day (passed/failed depend on the claims' expectations, which may be
    edited after a run; the observation may not change), else the outcome (skipped, failed, error).
    Evidence numbers are left out on purpose: they may move in the last digits (e.g. an unseeded fit),
    verdicts may not."""
    table = {}
    for t in doc["tests"]:
        observed = t.get("observed")
        mechs = tuple(sorted(n for n, m in (t.get("mechanisms") or {}).items() if m.get("confirmed"))) \
            if observed == "refuted" else ()
        table[t["nodeid"]] = ("concluded" if observed else t["outcome"], observed, mechs)
    return table


def compare(a: list[dict], b: list[dict]) -> list[str]:
    """Differences between two sets of results, per run key, one line each."""
    lines = []
    ka, kb = {key(d): d for d in a}, {key(d): d for d in b}
    for k in sorted(ka.keys() | kb.keys()):
        if k not in ka or k not in kb:
            lines.append(f"{k}: only in {'the first' if k in ka else 'the second'}")
            continue
        va, vb = verdicts(ka[k]), verdicts(kb[k])
        for nodeid in sorted(va.keys() | vb.keys()):
            x, y = va.get(nodeid), vb.get(nodeid)
            if x != y:
                fmt = lambda v: "absent" if v is None else f"{v[0]}/{v[1]}" + (f" ({', '.join(v[2])})" if v[2] else "")  # noqa: E731
                lines.append(f"{k}: {nodeid}: {fmt(x)} vs {fmt(y)}")
    return lines
