"""The results of the claim suite, typed: what each test case observed on one run key, accumulated over
runs, and which run (code, libraries, machine) measured it. Written by the pytest plugin
(bnspec.measure.plugin) on the controller process, read by the report, the release history and the mutation
harness. No TensorFlow.

    doc = results.load(Path("reports/raw/keras3.json"))     # a Results
    doc.key, doc.cases[0].observed, doc.run_of(doc.cases[0]).environment.label()

On disk (schema 3; schema 2 files are read and upgraded), one JSON file per run key, reports/raw/<key>.json:
{
  "schema": 3, "flavour": "keras3", "backend": "tensorflow", ["device": "gpu",] ["mutant": name,]
  "runs": {run_id: {"finished": iso, "seconds": float, "environment": {...}, "code": {fingerprint, commit, dirty},
                    "selection": {"args": [...], "partial": bool}}},
  "tests": [{nodeid, claim|null, outcome, params, expected, observed, summary, evidence, mechanisms, message,
             run: run_id, [kept: {"skipped_by": run_id, "reason": str}]}]
}

A run merges into the file case by case (`merge_run`): a case the run measured replaces the old one; a case
it skipped does not replace a measured one, which is *kept*, marked with the run that skipped it and why (the
report shows it as inherited, never as this run's); a case it did not select stays as it was. A full
(unselective) run drops the cases that no longer exist. Every case names the run that measured it, so the
report can say with which code, libraries and machine each number was measured.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from bnspec import BnspecError
from bnspec.run import Environment, key_of

SCHEMA = 3
READABLE = (2, 3)  # schema 2: before runs named their GPU and cases could be kept; upgraded on read
OUTCOMES = ("passed", "failed", "skipped", "error")
MEASURED = ("passed", "failed", "error")
# The skip message of a case whose API does not exist on this Keras (e.g. `renorm` before 3.14): the
# claim is *not applicable* there, which the release timeline shows as n/a, not as a failure.
NOT_APPLICABLE = "not applicable: "


class ResultsError(BnspecError):
    pass


@dataclass
class Case:
    """One test case's outcome and evidence (a test function's parametrisation)."""

    nodeid: str
    outcome: str  # passed | failed | skipped | error
    run: str = ""  # the id of the run that measured it (a key of Results.runs)
    claim: str | None = None
    params: dict = field(default_factory=dict)
    expected: str | None = None  # the expected verdict when it ran (the report recomputes it)
    observed: str | None = None  # holds | refuted | None (no conclusion)
    summary: str = ""
    evidence: dict = field(default_factory=dict)
    mechanisms: dict | None = None  # name -> {confirmed, detail}; None: recorded before mechanisms were stored
    mechanism: str | None = None  # the mechanism the expectation named when it ran
    mechanism_failed: bool = False
    message: str = ""  # skip reason or failure message
    kept: dict | None = None  # {"skipped_by": run id, "reason"}: a later run skipped this measured case

    @property
    def measured(self) -> bool:
        return self.outcome in MEASURED

    @property
    def not_applicable(self) -> bool:
        return self.outcome == "skipped" and self.message.startswith(NOT_APPLICABLE)

    @property
    def case_id(self) -> str:
        """The parametrisation as pytest shows it ("cpu-60"), "-" for an unparametrised test."""
        return self.nodeid[self.nodeid.index("[") + 1: -1] if "[" in self.nodeid else "-"

    @property
    def function(self) -> str:
        """The test function's node id without its parametrisation."""
        return self.nodeid.split("[", 1)[0]

    def confirmed(self) -> tuple[str, ...]:
        """The mechanisms this case's test confirmed."""
        return tuple(sorted(n for n, m in (self.mechanisms or {}).items() if m.get("confirmed")))

    def mechanism_confirmed(self, name: str) -> bool:
        """Whether the test confirmed mechanism `name` (the one the *current* expectation names)."""
        if self.mechanisms is None:
            return not self.mechanism_failed
        return bool(self.mechanisms.get(name, {}).get("confirmed"))

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for name in ("summary", "message"):
            values[name] = values.get(name) or ""
        for name in ("params", "evidence"):
            values[name] = values.get(name) or {}
        return cls(**values)

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("kept", "mechanism_failed"):
            if not d[name]:
                d.pop(name)
        if d["mechanisms"] is None:
            d.pop("mechanisms")
        return d


@dataclass
class RunRecord:
    """One run of the suite on a key: when, how long, on what (environment), by which code, what it selected."""

    id: str
    finished: str
    seconds: float
    environment: Environment
    code: dict  # {fingerprint, commit, dirty}
    selection: dict  # {args, partial[, unfinished]}
    model: dict | None = None  # the trained model's cache entry the run used (trained now or reused)

    @property
    def fingerprint(self) -> str:
        return self.code.get("fingerprint", "")

    @property
    def partial(self) -> bool:
        return bool(self.selection.get("partial"))

    @classmethod
    def from_dict(cls, run_id: str, d: dict) -> RunRecord:
        env = dict(d.get("environment") or {})
        model = d.get("model") or env.pop("model_cache", None)  # schema 2 kept it in the environment
        return cls(run_id, d.get("finished", ""), d.get("seconds", 0.0), Environment.from_dict(env),
                   dict(d.get("code") or {}), dict(d.get("selection") or {"args": [], "partial": False}), model)

    def to_dict(self) -> dict:
        d = {"finished": self.finished, "seconds": self.seconds, "environment": self.environment.as_dict(),
             "code": self.code, "selection": self.selection}
        if self.model:
            d["model"] = self.model
        return d


@dataclass
class Results:
    """Every case of one run key, and the runs that measured them."""

    flavour: str
    backend: str = "tensorflow"
    device: str | None = None  # "gpu": a GPU-only run (a column of its own)
    mutant: str | None = None  # a mutation-harness run (never merged into the report)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    release: str | None = None  # a release-history job: the release it measured
    tensorflow_release: str | None = None
    install_error: str | None = None  # a release that could not be installed (no runs, no cases)
    job: str | None = None  # a release-history job: its id (the file's name; not stored in the file)

    @property
    def key(self) -> str:
        return key_of(self.flavour, self.backend, self.device, self.mutant)

    @property
    def family(self) -> str:
        return "tfkeras" if self.flavour == "tfkeras" else "keras3"

    def run_of(self, case: Case) -> RunRecord:
        return self.runs[case.run]

    def latest(self) -> RunRecord | None:
        return self.runs[sorted(self.runs)[-1]] if self.runs else None

    def claim_cases(self) -> list[Case]:
        return [c for c in self.cases if c.claim]

    def inherited(self, case: Case) -> bool:
        """Whether `case` is not this key's current measurement: kept when a later run skipped it, or measured
        under another environment (Keras, backend library, Python, GPU) than the key's latest run."""
        if case.kept:
            return True
        latest = self.latest()
        return bool(latest) and case.measured and self.runs[case.run].environment.identity() != latest.environment.identity()

    @classmethod
    def from_dict(cls, d: dict, origin: str = "results") -> Results:
        if not isinstance(d, dict):
            raise ResultsError(f"{origin}: not a results object")
        if d.get("schema") not in READABLE:
            raise ResultsError(f"{origin}: results schema {d.get('schema')!r}, this bnspec reads schema "
                               f"{' or '.join(map(str, READABLE))}; re-run the tests to regenerate it")
        for name in ("flavour", "runs", "tests"):
            if name not in d:
                raise ResultsError(f"{origin}: missing field {name!r}")
        if not isinstance(d["runs"], dict) or not isinstance(d["tests"], list):
            raise ResultsError(f"{origin}: 'runs' must be an object and 'tests' a list")
        cases = []
        for i, t in enumerate(d["tests"]):
            if not isinstance(t, dict) or "nodeid" not in t or t.get("outcome") not in OUTCOMES:
                raise ResultsError(f"{origin}: tests[{i}] is malformed")
            if t.get("run") not in d["runs"]:
                raise ResultsError(f"{origin}: tests[{i}] ({t['nodeid']}) names run {t.get('run')!r}, not in 'runs'")
            cases.append(Case.from_dict(t))
        return cls(flavour=d["flavour"], backend=d.get("backend") or "tensorflow", device=d.get("device"),
                   mutant=d.get("mutant"), runs={k: RunRecord.from_dict(k, v) for k, v in d["runs"].items()},
                   cases=cases, release=d.get("release"), tensorflow_release=d.get("tensorflow_release"),
                   install_error=d.get("install_error"))

    def to_dict(self) -> dict:
        d = {"schema": SCHEMA, "flavour": self.flavour, "backend": self.backend,
             "runs": {k: r.to_dict() for k, r in sorted(self.runs.items())},
             "tests": [c.to_dict() for c in self.cases]}
        for name in ("device", "mutant", "release", "tensorflow_release", "install_error"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d


# --------------------------------------------------------------------------- files


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file; run the tests first (bnspec run)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: unreadable results JSON ({exc}); re-run the tests to regenerate it") from exc


def load(path: Path) -> Results:
    """One run key's results file (reports/raw/<key>.json or a release-history job)."""
    return Results.from_dict(_read_json(path), str(path))


def load_any(path: Path) -> list[Results]:
    """A per-run-key results file, or the merged reports/results.json: a list of Results."""
    doc = _read_json(path)
    if isinstance(doc, dict) and "results" in doc and doc.get("schema") in READABLE:
        return [Results.from_dict(d, f"{path} ({i})") for i, d in enumerate(doc["results"])]
    return [Results.from_dict(doc, str(path))]


def merged_document(docs: list[Results]) -> dict:
    """reports/results.json: every run key's results in one document."""
    return {"schema": SCHEMA, "results": [d.to_dict() for d in docs]}


def in_order(docs) -> list[Results]:
    """Results sorted as bnspec.flavours.FLAVOURS lists the flavours, TensorFlow backend first, CPU before GPU."""
    from bnspec.flavours import BACKENDS, FLAVOURS

    order = {f: i for i, f in enumerate(FLAVOURS)}
    backends = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(docs, key=lambda d: (order.get(d.flavour, len(order)), backends.get(d.backend, 9), d.device == "gpu", d.key))


# --------------------------------------------------------------------------- accumulating runs


def merge_run(old: Results | None, new: Results) -> Results:
    """Merge one run's results (a single run in `runs`) into the accumulated results `old` of the same key."""
    if old is None or old.key != new.key:
        return new
    (run_id, run), = new.runs.items()
    cases = {c.nodeid: c for c in old.cases}
    seen = set()
    for c in new.cases:
        seen.add(c.nodeid)
        prev = cases.get(c.nodeid)
        if not c.measured and prev is not None and prev.measured:
            # a skip never replaces a measurement: the old one stays, marked as kept by this run's skip
            cases[c.nodeid] = replace(prev, kept={"skipped_by": run_id, "reason": c.message or "skipped"})
            continue
        cases[c.nodeid] = c
    if not run.partial:
        cases = {n: c for n, c in cases.items() if n in seen}
    kept = sorted(cases.values(), key=lambda c: c.nodeid)
    runs = {**old.runs, run_id: run}
    used = {c.run for c in kept} | {c.kept["skipped_by"] for c in kept if c.kept}
    return replace(new, runs={r: v for r, v in sorted(runs.items()) if r in used}, cases=kept)


# --------------------------------------------------------------------------- comparing runs


def verdicts(doc: Results) -> dict[str, tuple]:
    """The verdict table of one key: nodeid -> (what happened, observed verdict, the mechanisms a refutation
    confirmed). What happened is "concluded" for a case that reached a verdict, whether or not it matched the
    expectation of its day (passed/failed depend on the claims' expectations, which may be edited after a
    run; the observation may not change), else the outcome (skipped, failed, error). Evidence numbers are
    left out on purpose: they may move in the last digits (e.g. an unseeded fit), verdicts may not."""
    return {c.nodeid: ("concluded" if c.observed else c.outcome, c.observed,
                       c.confirmed() if c.observed == "refuted" else ()) for c in doc.cases}


def compare(a: list[Results], b: list[Results]) -> list[str]:
    """Differences between two sets of results, per run key, one line each."""
    lines = []
    ka, kb = {d.key: d for d in a}, {d.key: d for d in b}
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


# --------------------------------------------------------------------------- the mutation harness' results

MUTANTS_SCHEMA, MUTANTS_READABLE = 2, (1, 2)  # schema 1: before rows carried what measured them


def load_mutants(path: Path) -> dict:
    """reports/mutants/results.json (written by bnspec.harness.mutants, rendered by bnspec.report.mutants); one
    clear error when it is missing, unreadable or of another schema."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no mutant results; run `bnspec mutants` first") from None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable mutation-harness results ({exc}); run `bnspec mutants` again") from exc
    if not isinstance(doc, dict) or doc.get("schema") not in MUTANTS_READABLE or not isinstance(doc.get("mutants"), dict):
        raise ResultsError(f"{path}: not a mutant results file of schema {' or '.join(map(str, MUTANTS_READABLE))}; "
                           "regenerate it with `bnspec mutants` (a full run, without --only)")
    return doc

