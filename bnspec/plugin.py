"""pytest plugin: the `claim` marker, the `verdict` fixture, the results JSON and the run's summary.

A claim test measures, compares through the verdict's helpers, and concludes:

    @pytest.mark.claim("K01")
    def test_something(verdict):
        ok = verdict.within("output_err", np.abs(y - ref), bound)   # recorded: max err, bound, ratio
        verdict.power("unbiased_alternative", np.abs(y_unbiased - ref), bound)  # else the test has no power
        verdict.conclude(ok, "max |y - ref| within its float32 bound")

The helpers reduce with NaN-propagating operations and turn any non-finite measurement into an
*error* of the test (`NonFiniteMeasurement`), never a verdict. `conclude` compares the observed
verdict with the claim's expected one for this flavour, version, backend and case, and fails the
test when they differ; an expected refutation must also be confirmed by the mechanism its rule
names (`verdict.mechanism(name, confirmed)`), or the refutation is not the expected one.

Run state lives in one object on the controller (`config.stash[STATE]`); evidence travels to it
from xdist workers in `user_properties`. At the end the controller merges the run into
reports/raw/<key>.json (bnspec.results.merge_run) and prints a one-line summary per claim status.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bnspec import DEVICES, claims, flavours, paths, provenance, results

PROP = "bnspec"


class NonFiniteMeasurement(Exception):
    """A measurement was NaN or infinite: an error of the test, never evidence for a verdict."""


class NoPower(Exception):
    """The test cannot tell the claim from its alternative on these inputs: its verdict would mean nothing."""


@dataclass
class RunState:
    started: float = field(default_factory=time.time)
    tests: dict = field(default_factory=dict)
    model: dict | None = None


STATE = pytest.StashKey[RunState]()


def pytest_addoption(parser):
    parser.addoption(
        "--bnspec-results", default=None,
        help="results JSON to merge this run into (default: reports/raw/<flavour>.json under the rootdir)",
    )
    parser.addoption("--bnspec-claims", default=None,
                     help="comma-separated claim ids: run only their tests, e.g. K01,N05")
    parser.addoption("--bnspec-device", default=None, choices=DEVICES,
                     help="run the device-parametrised cases on this device only (default: cpu, and gpu when visible)")


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(id): the claim (bnspec.claims) this test measures")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")
    config.stash[STATE] = RunState()


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


def _node_selective(config) -> bool:
    return any("::" in a for a in config.args)


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
    if not _node_selective(config):  # every case of a collected claim is here: check its case= rules
        problems = [p for cid, params in sorted(by_claim.items()) for p in claims.get(cid).stale_cases(params)]
        if problems:
            raise pytest.UsageError("expected-verdict rules that match no test case (fix bnspec/claims/):\n  "
                                    + "\n  ".join(problems))
    wanted, device = selected_claims(config), config.getoption("--bnspec-device")
    if wanted is None and device is None:
        return
    keep, drop = [], []
    for item in items:
        cid = _claim_of(item)
        params = getattr(getattr(item, "callspec", None), "params", {})
        ok = (wanted is None or cid in wanted) and (device is None or params.get("device", device) == device)
        (keep if ok else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def _clean(value, name: str = "value"):
    """A JSON-able copy of an evidence value; a non-finite number is an error."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # also numpy.float64, a float subclass execnet cannot send
        value = float(value)
        if value != value or abs(value) == float("inf"):
            raise NonFiniteMeasurement(f"measurement {name!r} is {value}: a non-finite number is never evidence")
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, name) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist(), name)
    try:  # numpy scalars
        return _clean(value.item(), name)
    except (AttributeError, ValueError):
        return str(value)


def case_params(item) -> dict:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return {}
    out = {}
    for k, v in callspec.params.items():
        out[k] = v if isinstance(v, (bool, int, str, type(None))) else float(v) if isinstance(v, float) else str(v)
    return out


def not_applicable(reason: str):
    """Skip a case whose API does not exist on this Keras (a release before it was added): the claim
    is *not applicable* there, which is neither a verdict nor a failure."""
    pytest.skip(results.NOT_APPLICABLE + reason)


def finite(name: str, values) -> np.ndarray:
    """`values` as a float64 array; raises NonFiniteMeasurement if any element is NaN or infinite."""
    arr = np.asarray(values, dtype=np.float64)
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise NonFiniteMeasurement(f"measurement {name!r} has {bad} non-finite value(s) of {np.size(arr)}: "
                                   "a NaN or inf is never evidence for a verdict")
    if arr.size == 0:
        raise NonFiniteMeasurement(f"measurement {name!r} is empty")
    return arr


class Verdict:
    """Collects evidence for one test case and checks the observed verdict against the claim's.

    The comparison helpers share one spelling: each records `evidence[name] = {"value", "bound",
    "ratio"}` for the element whose value/bound ratio is largest (the nearest to its bound, or the
    furthest past it): ratio <= 1 means within. Each returns the comparison's outcome."""

    def __init__(self, item, claim: claims.Claim):
        self.item = item
        self.claim = claim
        self.params = case_params(item)
        self.flavour = flavours.current()
        self.backend = flavours.backend()
        self.version = flavours.versions(self.flavour)["keras"]
        self.expect = claim.expectation(self.flavour, self.version, self.params, self.backend)
        self.evidence: dict = {}
        self.mechanisms: dict[str, dict] = {}
        self.observed: str | None = None
        self.summary = ""

    # ------------------------------------------------------------------ comparisons
    def _compare(self, name: str, value, bound) -> tuple[np.ndarray, np.ndarray, float]:
        v = np.abs(finite(name, value))
        b = finite(f"{name} bound", bound)
        if np.any(b < 0):
            raise ValueError(f"{name}: a bound must be >= 0")
        v, b = np.broadcast_arrays(v, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(b > 0, v / np.where(b > 0, b, 1.0), np.where(v > 0, np.inf, 0.0))
        # value and bound of the same element: the one nearest to (or furthest past) its bound; among
        # ties (several infinite ratios: a zero bound), the largest value
        worst = int(np.lexsort((v.ravel(), ratio.ravel()))[-1])
        self.evidence[name] = {"value": float(v.flat[worst]), "bound": float(b.flat[worst]),
                               "ratio": float(ratio.flat[worst]) if np.isfinite(ratio.flat[worst]) else "inf"}
        self._publish()
        return v, b, float(ratio.flat[worst])

    def within(self, name: str, err, bound) -> bool:
        """Every |err| <= its bound (elementwise, broadcast)."""
        v, b, _ = self._compare(name, err, bound)
        return bool(np.all(v <= b))

    def beyond(self, name: str, value, bound) -> bool:
        """Some |value| exceeds its bound: the measured quantity is outside what rounding explains."""
        v, b, _ = self._compare(name, value, bound)
        return bool(np.any(v > b))

    def power(self, name: str, alternative_diff, bound) -> None:
        """Require that the alternative (what the other mode/formula would give) differs from the claim's
        prediction by more than the bound somewhere; otherwise the test has no power here (an error)."""
        if not self.beyond(name, alternative_diff, bound):
            raise NoPower(f"{self.claim.id}: {name} = {self.evidence[name]['value']:.3g} does not exceed the bound "
                          f"{self.evidence[name]['bound']:.3g}: this case cannot tell the claim from its alternative")

    def equal(self, name: str, a, b) -> bool:
        """Bitwise equality of two finite arrays (e.g. a variable before and after a call)."""
        a, b = finite(name, a), finite(f"{name} (second)", b)
        same = a.shape == b.shape and bool(np.array_equal(a, b))
        diff = float(np.abs(a - b).max()) if a.shape == b.shape else "shape differs"
        self.evidence[name] = {"value": diff, "bound": 0.0, "ratio": 0.0 if same else "inf"}
        self._publish()
        return same

    def count_nonfinite(self, name: str, values) -> int:
        """How many elements are NaN/inf, recorded as a count: for claims *about* non-finite values
        (a NaN example poisoning a batch); the count itself is finite evidence."""
        arr = np.asarray(values, dtype=np.float64)
        n = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        self.record(**{name: n})
        return n

    def mechanism(self, name: str, confirmed: bool, detail: str = "") -> bool:
        """Record whether the mechanism `name` (named by an expected refutation's rule) was observed."""
        self.mechanisms[name] = {"confirmed": bool(confirmed), "detail": detail}
        self._publish()
        return bool(confirmed)

    def record(self, **numbers) -> None:
        self.evidence.update({k: _clean(v, k) for k, v in numbers.items()})
        self._publish()

    # ------------------------------------------------------------------ the verdict
    def conclude(self, holds: bool, summary: str) -> None:
        if self.observed is not None:
            raise RuntimeError("conclude() called twice in one test")
        self.observed = claims.HOLDS if bool(holds) else claims.REFUTED
        self.summary = summary
        self._publish()
        where = f"{self.flavour} {self.version} ({self.backend})"
        if self.observed != self.expect.verdict:
            pytest.fail(
                f"claim {self.claim.id} was expected to be {self.expect.verdict} on {where} "
                f"({self.expect.why or 'see bnspec/claims/'}) but is {self.observed}: {summary}",
                pytrace=False,
            )
        if self.observed == claims.REFUTED:
            m = self.mechanisms.get(self.expect.mechanism)
            if not (m and m["confirmed"]):
                self.mechanism_failed = True
                self._publish()
                pytest.fail(
                    f"claim {self.claim.id} is refuted on {where} as expected, but not by the mechanism the "
                    f"expectation names ({self.expect.mechanism!r}: "
                    f"{(m or {}).get('detail') or 'not confirmed by the test'}): {summary}",
                    pytrace=False,
                )

    def _publish(self) -> None:
        record = {
            "claim": self.claim.id, "params": self.params, "expected": self.expect.verdict,
            "observed": self.observed, "summary": self.summary, "evidence": self.evidence,
            "mechanisms": self.mechanisms, "mechanism": self.expect.mechanism or None,
        }
        if getattr(self, "mechanism_failed", False):
            record["mechanism_failed"] = True
        props = [p for p in self.item.user_properties if p[0] != PROP]
        self.item.user_properties[:] = props + [(PROP, record)]


@pytest.fixture
def verdict(request):
    marks = list(request.node.iter_markers("claim"))
    if len(marks) != 1:
        raise pytest.UsageError(f"{request.node.nodeid}: the verdict fixture needs exactly one claim marker")
    v = Verdict(request.node, claims.get(marks[0].args[0]))
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


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


_CONFIG: dict = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    _CONFIG["config"] = session.config


def pytest_runtest_logreport(report):
    config = _CONFIG.get("config")
    if config is None or _is_worker(config):
        return
    state = config.stash[STATE]
    entry = state.tests.setdefault(report.nodeid, {"nodeid": report.nodeid, "claim": None, "outcome": "passed",
                                                   "params": {}, "expected": None, "observed": None,
                                                   "summary": "", "evidence": {}, "message": ""})
    for name, value in report.user_properties:
        if name == PROP:
            entry.update(value)
        elif name == "bnspec_model":
            state.model = value
    if report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        entry["message"] = _skip_reason(report)
    elif report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"
        entry["message"] = _short(report)


def _skip_reason(report) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)[:300]


def _short(report) -> str:
    text = getattr(report, "longreprtext", "") or str(report.longrepr)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return " ".join((errors or lines[-1:] or [""])[:4])[:800]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(config) -> dict:
    v = flavours.versions()
    workers = getattr(config.option, "numprocesses", None)
    return {
        "python": platform.python_version(), "tensorflow": v["tensorflow"], "keras": v["keras"],
        "flavour": v["flavour"], "backend": flavours.backend(), "platform": platform.platform(),
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "workers": str(workers or 0),
    }


def selection(config, exitstatus=0) -> dict:
    """What this run selected; `partial` when it ran less than the whole claim suite: a narrowing
    option, named files or nodes, or a run that did not finish (interrupted, a crashed worker, -x)."""
    opt = config.option
    narrowing = {
        "claims": config.getoption("--bnspec-claims"), "device": config.getoption("--bnspec-device"),
        "keyword": getattr(opt, "keyword", "") or None, "markexpr": getattr(opt, "markexpr", "") or None,
        "deselect": list(getattr(opt, "deselect", None) or []) or None,
    }
    files = [a for a in config.args if "::" in a or a.endswith(".py")]
    unfinished = int(exitstatus) in (int(pytest.ExitCode.INTERRUPTED), int(pytest.ExitCode.INTERNAL_ERROR)) or \
        bool(getattr(opt, "maxfail", 0))
    partial = any(narrowing.values()) or bool(files) or bool(getattr(opt, "lf", False)) or unfinished
    return {"args": list(config.invocation_params.args), "partial": partial, **({"unfinished": True} if unfinished else {})}


def pytest_report_header(config):
    v = flavours.versions()
    c = provenance.code()
    lines = [f"bnspec: flavour {v['flavour']} (Keras {v['keras']}, TensorFlow {v['tensorflow']}), backend "
             f"{flavours.backend()}; measuring code {c['fingerprint']}"
             + (f" at {c['commit']}{' + local changes' if c['dirty'] else ''}" if c["commit"] else "")]
    try:
        lines.append(f"bnspec: cache {paths.home()}; claims {config.getoption('--bnspec-claims') or 'all'}, "
                     f"device {config.getoption('--bnspec-device') or 'all'}")
    except Exception as exc:  # an unusable cache is reported by the tests that need it
        lines.append(f"bnspec: cache unusable ({exc})")
    return lines


def claim_tests(state: RunState) -> list[dict]:
    return [t for t in state.tests.values() if t.get("claim")]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _is_worker(config):
        return
    tests = claim_tests(config.stash[STATE])
    if not tests:
        return
    from bnspec.report import verdicts as rv

    counts, unmeasured = rv.run_summary(tests)
    terminalreporter.write_sep("=", "bnspec claims")
    terminalreporter.write_line(rv.summary_sentence(counts))
    for cid, reason in unmeasured:
        terminalreporter.write_line(f"  unmeasured {cid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if _is_worker(config):
        return
    state = config.stash[STATE]
    tests = claim_tests(state)
    if not tests:
        return  # only bnspec's own tests ran: the claim results stay as they were
    flavour, backend = flavours.current(), flavours.backend()
    finished = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%S", time.localtime(state.started)) + f"-{os.getpid()}"
    env = environment(config)
    if state.model:
        env["model_cache"] = state.model
    run = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(finished)),
           "seconds": round(finished - state.started, 1), "environment": env, "code": provenance.code(),
           "selection": selection(config, exitstatus)}
    new = {"schema": results.SCHEMA, "flavour": flavour, "backend": backend, "runs": {run_id: run},
           "tests": sorted((dict(t, run=run_id) for t in tests), key=lambda t: t["nodeid"])}
    if config.getoption("--bnspec-device") == "gpu":  # a GPU machine's run is a column of its own
        new["device"] = "gpu"
    key = results.key(new)
    target = Path(config.getoption("--bnspec-results") or Path(config.rootpath) / "reports" / "raw" / f"{key}.json")
    old = None
    tr = config.pluginmanager.get_plugin("terminalreporter")
    try:
        if target.is_file():
            old = results.load(target)
        elif not config.getoption("--bnspec-results"):  # a fresh checkout: start from the committed results
            committed = Path(config.rootpath) / "reports" / "results.json"
            if committed.is_file():
                old = next((d for d in results.load_any(committed) if results.key(d) == key), None)
    except results.ResultsError as exc:
        if tr is not None:
            tr.write_line(f"bnspec: not merging with earlier results: {exc}")
    paths.atomic_write_json(target, results.validate(results.merge_run(old, new), "results being written"))
    if tr is not None:
        tr.write_line(f"bnspec: results merged into {target}; the report: bnspec report")
