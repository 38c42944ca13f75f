"""The pytest plugin: the `claim` marker, the `run` and `verdict` fixtures, the results file and the run's
summary. Loaded by conftest.py (`pytest_plugins`); the verdict vocabulary itself is bnspec.measure.verdict.

The run (bnspec.run.Run: flavour, backend, device, mutant) is made once, in `pytest_configure`, from the
environment and this plugin's options (group "bnspec"), and stored with everything the run accumulates in
one object, `RunState`, in `config.stash`. On the controller process a `Collector` (registered like
pytest's junitxml) gathers every claim case's evidence from the reports (xdist workers send it in
`user_properties`) and, at the end, merges the run into reports/raw/<key>.json (bnspec.results.merge_run)
and prints one line per claim status. A run whose claim cases were all skipped measured nothing: it writes
nothing and exits 5 (pytest's "no tests" status) with one line saying why.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bnspec import BnspecError, DEVICES, claims, paths, provenance, results
from bnspec.flavours import distribution_version
from bnspec.measure import status
from bnspec.measure.verdict import PROP, Verdict, case_params
from bnspec.run import MUTANT_VAR, Environment, Run

NOTHING_MEASURED = pytest.ExitCode.NO_TESTS_COLLECTED  # 5: the run measured no case


@dataclass
class RunState:
    run: Run
    keras_version: str | None
    started: float = field(default_factory=time.time)
    tests: dict = field(default_factory=dict)  # nodeid -> the case as a dict, filled from the reports
    model: dict | None = None  # the trained model's cache entry, when a test used it


STATE = pytest.StashKey[RunState]()


def pytest_addoption(parser):
    group = parser.getgroup("bnspec", "bnspec: the claim suite (bnspec run passes these)")
    group.addoption("--bnspec-results", default=None,
                    help="results JSON to merge this run into (default: reports/raw/<run key>.json under the rootdir)")
    group.addoption("--bnspec-claims", default=None, help="comma-separated claim ids: run only their tests, e.g. K01,N05")
    group.addoption("--bnspec-device", default=None, choices=DEVICES,
                    help="run the device-parametrised cases on this device only (default: cpu, and gpu when "
                    "visible); gpu makes the run a report column of its own")
    group.addoption("--bnspec-mutant", default=None, metavar="NAME",
                    help="measure a deliberately wrong BN layer (bnspec mutants passes this, with --bnspec-results)")
    group.addoption("--bnspec-train-seed", default=None, type=int, metavar="N",
                    help="train the notebook's model with this seed instead of the notebook's 100 (bnspec seeds passes "
                    "this, with --bnspec-results: the statistical claims' verdicts across trainings)")


def make_run(config) -> Run:
    """The run this pytest process measures: flavour and backend from the environment, device and mutant from
    the options. A mutant must be asked for as an option and written to a named results file: a BNSPEC_MUTANT
    left in the environment never turns a real run into a mutant's."""
    mutant = config.getoption("--bnspec-mutant")
    inherited = Run.mutant_in()
    if inherited and inherited != mutant:
        raise pytest.UsageError(
            f"{MUTANT_VAR}={inherited} is set in the environment: a run with a deliberately wrong BN layer is "
            f"started only by `bnspec mutants`; unset {MUTANT_VAR} to measure the real layer")
    if mutant and not config.getoption("--bnspec-results"):
        raise pytest.UsageError("--bnspec-mutant needs --bnspec-results: a mutant's results never go to reports/raw/")
    if config.getoption("--bnspec-train-seed") is not None and not config.getoption("--bnspec-results"):
        raise pytest.UsageError("--bnspec-train-seed needs --bnspec-results: a run on another training's model never "
                                "goes to reports/raw/")
    try:
        return Run.from_env(device=config.getoption("--bnspec-device"), mutant=mutant)
    except BnspecError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(id): the claim (bnspec.claims) this test measures")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")
    run = make_run(config)
    config.stash[STATE] = RunState(run, distribution_version(run.flavour))
    if not _is_worker(config):
        config.pluginmanager.register(Collector(config), "bnspec-collector")


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


# --------------------------------------------------------------------------- selection


def selected_claims(config) -> set[str] | None:
    raw = config.getoption("--bnspec-claims")
    if not raw:
        return None
    wanted = {c.strip().upper() for c in raw.split(",") if c.strip()}
    unknown = sorted(wanted - set(claims.BY_ID))
    if unknown:
        raise pytest.UsageError(f"unknown claim id(s) {', '.join(unknown)} in --bnspec-claims; "
                                f"`bnspec claims` lists the {len(claims.BY_ID)} known ids")
    return wanted


def _claim_of(item) -> str | None:
    marks = [m.args[0] for m in item.iter_markers("claim")]
    return marks[0] if marks else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    by_claim: dict[str, list[dict]] = {}
    for item in items:
        cid = _claim_of(item)
        if cid is not None:
            if cid not in claims.BY_ID:
                raise pytest.UsageError(f"{item.nodeid}: unknown claim id {cid!r} (bnspec/claims/)")
            by_claim.setdefault(cid, []).append(case_params(item))
    if not any("::" in a for a in config.args):  # every case of a collected claim is here: check its case= rules
        problems = [p for cid, params in sorted(by_claim.items()) for p in claims.get(cid).stale_cases(params)]
        if problems:
            raise pytest.UsageError("expected-verdict rules that match no test case (fix bnspec/claims/):\n  "
                                    + "\n  ".join(problems))
    wanted, device = selected_claims(config), config.getoption("--bnspec-device")
    if wanted is None and device is None:
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        ok = (wanted is None or _claim_of(item) in wanted) and (device is None or params.get("device", device) == device)
        (keep if ok else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def selection(config, exitstatus=0) -> dict:
    """What this run selected; `partial` when it ran less than the whole claim suite: a narrowing option
    (claims, device, -k, -m, --deselect, --ignore, --ignore-glob), named files or nodes, --lf or --sw, or a
    run that did not finish (interrupted, a crashed worker, -x/--maxfail)."""
    opt = config.option
    narrowing = {
        "claims": config.getoption("--bnspec-claims"), "device": config.getoption("--bnspec-device"),
        "keyword": getattr(opt, "keyword", "") or None, "markexpr": getattr(opt, "markexpr", "") or None,
        "deselect": getattr(opt, "deselect", None) or None, "ignore": getattr(opt, "ignore", None) or None,
        "ignore_glob": getattr(opt, "ignore_glob", None) or None,
        "last_failed": getattr(opt, "lf", False) or None, "stepwise": getattr(opt, "stepwise", False) or None,
    }
    files = [a for a in config.args if "::" in a or a.endswith(".py")]
    unfinished = int(exitstatus) in (int(pytest.ExitCode.INTERRUPTED), int(pytest.ExitCode.INTERNAL_ERROR)) or \
        bool(getattr(opt, "maxfail", 0))
    partial = any(narrowing.values()) or bool(files) or unfinished
    seed = config.getoption("--bnspec-train-seed")
    return {"args": list(config.invocation_params.args), "partial": partial, **({"unfinished": True} if unfinished else {}),
            **({"train_seed": seed} if seed is not None else {})}


# --------------------------------------------------------------------------- fixtures and the test protocol


def run_of(config) -> Run:
    """The run this pytest session measures (for hooks, which cannot take the `run` fixture)."""
    return config.stash[STATE].run


@pytest.fixture(scope="session")
def run(request) -> Run:
    """The run under test (bnspec.run.Run): flavour, backend, device, mutant."""
    return run_of(request.config)


@pytest.fixture
def verdict(request):
    marks = list(request.node.iter_markers("claim"))
    if len(marks) != 1:
        raise pytest.UsageError(f"{request.node.nodeid}: the verdict fixture needs exactly one claim marker")
    state = request.config.stash[STATE]
    v = Verdict(request.node, claims.get(marks[0].args[0]), state.run, state.keras_version)
    yield v
    done = getattr(request.node, "_bnspec_call_done", False)  # the body returned (no skip, failure, interrupt)
    if v.observed is None and done and not getattr(request.node, "_bnspec_incomplete", False):
        pytest.fail(f"{request.node.nodeid} measured claim {v.claim.id} but never called verdict.conclude()")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield  # re-raises whatever the test body raised
    item._bnspec_call_done = True
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    cid = _claim_of(item)
    if cid and not any(name == PROP for name, _ in item.user_properties):
        # a case skipped or broken before it measured anything still belongs to its claim
        item.user_properties.append((PROP, {"claim": cid, "params": case_params(item)}))
    report = yield
    if report.when in ("setup", "call") and not report.passed:
        item._bnspec_incomplete = True  # skipped or failed: no conclusion to demand
    return report


def pytest_report_header(config):
    state = config.stash[STATE]
    env = Environment.capture(state.run, gpu=False)
    c = provenance.code()
    lines = [f"bnspec: run {state.run.key} ({state.run.describe()}; {env.label()}); measuring code {c['fingerprint']}"
             + (f" at {c['commit']}{' + local changes' if c['dirty'] else ''}" if c["commit"] else "")]
    try:
        lines.append(f"bnspec: cache {paths.home()}; claims {config.getoption('--bnspec-claims') or 'all'}, "
                     f"device {config.getoption('--bnspec-device') or 'all'}")
    except BnspecError as exc:  # an unusable cache is reported by the tests that need it
        lines.append(f"bnspec: cache unusable ({exc})")
    return lines


# --------------------------------------------------------------------------- the controller's collector


def _skip_reason(report) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)[:300]


def _short(report) -> str:
    text = getattr(report, "longreprtext", "") or str(report.longrepr)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return " ".join((errors or lines[-1:] or [""])[:4])[:800]


class Collector:
    """The controller's side of a run: the cases as they are reported, then the results file and the summary."""

    def __init__(self, config):
        self.config = config
        self.state: RunState = config.stash[STATE]

    def pytest_runtest_logreport(self, report):
        entry = self.state.tests.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed"})
        for name, value in report.user_properties:
            if name == PROP:
                entry.update(value)
            elif name == "bnspec_model":
                self.state.model = value
        if report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
            entry["message"] = _skip_reason(report)
        elif report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["message"] = _short(report)

    def cases(self, run_id: str = "") -> list[results.Case]:
        return [results.Case.from_dict({**t, "run": run_id}) for t in self.state.tests.values() if t.get("claim")]

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        cases = self.cases()
        if not cases:
            return
        counts, unmeasured = status.run_summary(cases)
        terminalreporter.write_sep("=", "bnspec claims")
        terminalreporter.write_line(status.summary_sentence(counts))
        for cid, reason in unmeasured:
            terminalreporter.write_line(f"  unmeasured {cid}: {reason}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        state, config = self.state, self.config
        tr = config.pluginmanager.get_plugin("terminalreporter")
        say = (lambda m: tr.write_line(m)) if tr is not None else print
        run_id = time.strftime("%Y%m%dT%H%M%S", time.localtime(state.started)) + f"-{os.getpid()}"
        cases = sorted(self.cases(run_id), key=lambda c: c.nodeid)
        if not cases:
            return  # only bnspec's own tests ran: the claim results stay as they were
        if not any(c.measured for c in cases):
            reasons = sorted({c.message for c in cases if c.message})
            say(f"bnspec: this run measured nothing ({len(cases)} claim case(s), all skipped"
                + (f"; first reason: {reasons[0]}" if reasons else "") + "); no results written, the report is unchanged")
            if int(session.exitstatus) == 0:
                session.exitstatus = NOTHING_MEASURED
            return
        finished = time.time()
        workers = getattr(config.option, "numprocesses", None)
        env = Environment.capture(state.run, workers=str(workers or 0))
        record = results.RunRecord(
            run_id, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(finished)), round(finished - state.started, 1),
            env, provenance.code(), selection(config, exitstatus), model=state.model)
        run = state.run
        new = results.Results(run.flavour, run.backend, device="gpu" if run.device == "gpu" else None,
                              mutant=run.mutant, runs={run_id: record}, cases=cases)
        target = Path(config.getoption("--bnspec-results") or Path(config.rootpath) / "reports" / "raw" / f"{new.key}.json")
        old = None
        try:
            if target.is_file():
                old = results.load(target)
            elif not config.getoption("--bnspec-results"):  # a fresh checkout: start from the committed results
                committed = Path(config.rootpath) / "reports" / "results.json"
                if committed.is_file():
                    old = next((d for d in results.load_any(committed) if d.key == new.key), None)
        except results.ResultsError as exc:
            say(f"bnspec: not merging with earlier results: {exc}")
        merged = results.merge_run(old, new)
        paths.atomic_write_json(target, merged.to_dict())
        say(f"bnspec: results merged into {target}; the report: bnspec report")
