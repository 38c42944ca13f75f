"""pytest plugin: the `claim` marker, the `verdict` fixture, and the results JSON.

A claim test measures, records numbers, and concludes:

    @pytest.mark.claim("K01")
    def test_something(verdict):
        err = ...
        verdict.record(max_abs_err=err, bound=bound)
        verdict.conclude(err <= bound, f"max |y - ref| = {err:.2e} <= bound {bound:.2e}")

`conclude` compares the observed verdict with the claim's expected verdict for this flavour,
version and parametrisation, and fails the test when they differ. Evidence travels to the
controller process in `user_properties` (this works under pytest-xdist), which writes one results
file per run: reports/raw/<flavour>.json (option --bnspec-results).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnspec import DEVICES, claims, flavours, paths, results

PROP = "bnspec"


def pytest_addoption(parser):
    parser.addoption(
        "--bnspec-results", default=None,
        help="results JSON to write (default: reports/raw/<flavour>.json under the rootdir)",
    )
    parser.addoption("--bnspec-claims", default=None,
                     help="comma-separated claim ids: run only their tests (plus bnspec's own), e.g. K01,N05")
    parser.addoption("--bnspec-device", default=None, choices=DEVICES,
                     help="run the device-parametrised cases on this device only (default: cpu, and gpu when visible)")


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(id): the claim (bnspec.claims) this test measures")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")
    config._bnspec_started = time.time()
    config._bnspec_tests = {}
    config._bnspec_model = None
    config._bnspec_trained_now = False


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


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in item.iter_markers("claim"):
            claims.get(mark.args[0])  # unknown claim ids fail collection with a clear message
    wanted, device = selected_claims(config), config.getoption("--bnspec-device")
    if wanted is None and device is None:
        return
    keep, drop = [], []
    for item in items:
        marks = [m.args[0] for m in item.iter_markers("claim")]
        params = getattr(getattr(item, "callspec", None), "params", {})
        ok = (wanted is None or not marks or marks[0] in wanted) and \
            (device is None or params.get("device", device) == device)
        (keep if ok else drop).append(item)
    if wanted is not None:  # a claim filter runs claim tests only
        drop += [i for i in keep if not list(i.iter_markers("claim"))]
        keep = [i for i in keep if list(i.iter_markers("claim"))]
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


def _clean(value):
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # also numpy.float64, a float subclass execnet cannot send
        value = float(value)
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    try:  # numpy scalars
        return _clean(value.item())
    except (AttributeError, ValueError):
        return str(value)


def case_params(item) -> dict:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return {}
    return {k: _clean(v) if isinstance(v, (bool, int, float, str, type(None))) else str(v)
            for k, v in callspec.params.items()}


class Verdict:
    """Collects evidence for one test case and checks the observed verdict against the claim's."""

    def __init__(self, item, claim: claims.Claim):
        self.item = item
        self.claim = claim
        self.params = case_params(item)
        self.flavour = flavours.current()
        self.version = flavours.versions(self.flavour)["keras"]
        self.expect = claim.expectation(self.flavour, self.version, self.params)
        self.evidence: dict = {}
        self.observed: str | None = None
        self.summary = ""

    def record(self, **numbers) -> None:
        self.evidence.update({k: _clean(v) for k, v in numbers.items()})
        self._publish()

    def conclude(self, holds: bool, summary: str) -> None:
        if self.observed is not None:
            raise RuntimeError("conclude() called twice in one test")
        self.observed = claims.HOLDS if bool(holds) else claims.REFUTED
        self.summary = summary
        self._publish()
        if self.observed != self.expect.verdict:
            pytest.fail(
                f"claim {self.claim.id} was expected to be {self.expect.verdict} on {self.flavour} "
                f"{self.version} ({self.expect.why or 'see bnspec/claims.py'}) but is {self.observed}: {summary}",
                pytrace=False,
            )

    def _publish(self) -> None:
        record = {
            "claim": self.claim.id, "params": self.params, "expected": self.expect.verdict,
            "expected_why": self.expect.why, "observed": self.observed, "summary": self.summary,
            "evidence": self.evidence,
        }
        props = [p for p in self.item.user_properties if p[0] != PROP]
        self.item.user_properties[:] = props + [(PROP, record)]


@pytest.fixture
def verdict(request):
    marks = list(request.node.iter_markers("claim"))
    if len(marks) != 1:
        raise pytest.UsageError(f"{request.node.nodeid}: the verdict fixture needs exactly one claim marker")
    v = Verdict(request.node, claims.get(marks[0].args[0]))
    yield v
    if v.observed is None and not getattr(request.node, "_bnspec_incomplete", False):
        pytest.fail(f"{request.node.nodeid} measured claim {v.claim.id} but never called verdict.conclude()")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    marks = list(item.iter_markers("claim"))
    if marks and not any(name == PROP for name, _ in item.user_properties):
        # a case skipped or broken before it measured anything still belongs to its claim
        item.user_properties.append((PROP, {"claim": marks[0].args[0], "params": case_params(item)}))
    report = yield
    if report.when in ("setup", "call") and not report.passed:
        item._bnspec_incomplete = True  # skipped or failed: no conclusion to demand
    return report


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_runtest_logreport(report):
    config = _CONFIG.get("config")
    if config is None or _is_worker(config):
        return
    tests = config._bnspec_tests
    entry = tests.setdefault(report.nodeid, {"nodeid": report.nodeid, "claim": None, "outcome": "passed",
                                             "params": {}, "expected": None, "expected_why": "", "observed": None,
                                             "summary": "", "evidence": {}, "message": "", "duration": 0.0})
    entry["duration"] = round(entry["duration"] + report.duration, 3)
    for name, value in report.user_properties:
        if name == PROP:
            entry.update(value)
        elif name == "bnspec_model":
            config._bnspec_model = value
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


_CONFIG: dict = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    _CONFIG["config"] = session.config
    if not _is_worker(session.config) and os.environ.get("BNSPEC_PREPARE", "1") != "0" and _needs_model(session.config):
        prepare(session.config)
        prepare_paper(session.config)


# Suites that build what they need themselves (small models, isolated caches) or need no model at all.
SELF_CONTAINED = ("unit", "robustness", "benchmarks")


def _needs_model(config) -> bool:
    """False when every path given on the command line lies in a self-contained suite."""
    targets = [a for a in config.args if not a.startswith("-")]
    return not targets or any(not set(SELF_CONTAINED) & set(Path(a.split("::")[0]).parts) for a in targets)


def _run_visibly(config, announce: str, *args: str) -> int:
    """`python -m bnspec ARGS` with pytest's capture off, so its progress reaches the terminal."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"bnspec: {announce} (progress below)", flush=True)
        return subprocess.call([sys.executable, "-m", "bnspec", *args])


def prepare(config) -> None:
    """Fetch MNIST and train the cached models before any test (or xdist worker) starts, in a
    subprocess whose progress reaches the terminal. Cheap when cached: no TensorFlow is imported here.
    Set BNSPEC_PREPARE=0 to leave it to the tests' fixtures."""
    from bnspec import training
    from bnspec.model import ModelSpec

    entries = [training.cached_entry(ModelSpec(bn=bn)) for bn in ("keras", "explicit")]
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if all(entries):
        if tr is not None:
            tr.write_line(f"bnspec: reusing cached models {', '.join(e.name for e in entries)}")
        return
    code = _run_visibly(config, "models not cached yet: fetching MNIST and training the notebook's model once "
                        "with Keras' BN and once with ExplicitBatchNorm", "train", "--bn", "all")
    config._bnspec_trained_now = code == 0
    if code != 0 and tr is not None:
        tr.write_line(f"bnspec: preparation failed (exit {code}); the tests that need the model will report why")


def _wants_paper(config) -> bool:
    wanted = selected_claims(config)
    return "not slow" not in (config.option.markexpr or "") and (wanted is None or bool(wanted & {"P07", "P08", "P09", "P10"}))


def prepare_paper(config) -> None:
    """Run (or find cached) the paper's 4 x 50,000-step experiment before the workers start."""
    from bnspec import paper

    if not _wants_paper(config) or all(paper.cached(run) for run in paper.RUNS):
        return
    _run_visibly(config, "the paper's MNIST experiment is not cached yet: 4 runs of 50,000 steps",
                 "paper", "--compute-only")


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
        "flavour": v["flavour"], "platform": platform.platform(), "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(), "workers": str(workers or 0), "pytest_args": list(config.invocation_params.args),
    }


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if _is_worker(config) or not config._bnspec_tests:
        return
    if not any(t["claim"] for t in config._bnspec_tests.values()) and not config.getoption("--bnspec-results"):
        return  # only bnspec's own tests ran: keep the last claim run's results
    flavour = flavours.current()
    target = config.getoption("--bnspec-results") or Path(config.rootpath) / "reports" / "raw" / f"{flavour}.json"
    finished = time.time()
    if config._bnspec_model and config._bnspec_trained_now:
        config._bnspec_model["created"] = True  # trained by prepare() in this run, then loaded by the tests
    doc = {
        "schema": results.SCHEMA, "flavour": flavour,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(config._bnspec_started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(finished)),
        "seconds": round(finished - config._bnspec_started, 1),
        "environment": environment(config), "model_cache": config._bnspec_model,
        "tests": sorted(config._bnspec_tests.values(), key=lambda t: t["nodeid"]),
    }
    paths.atomic_write_json(Path(target), results.validate(doc, "results being written"))
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"bnspec: results written to {target}; make the report with: bnspec report")
    else:  # pragma: no cover
        print(f"bnspec: results written to {target}", file=sys.stderr)

