"""The benchmarks of one process are those of its run's Keras backend (the `run`, made by bnspec's plugin):
a test marked `bench_backend(name)` for another backend is deselected, not skipped, so that a run lists
only what it measures. `tox -e bench` runs pytest once per backend into the same --benchmark-storage.

Each device measures its own tensors (tests/benchmarks/_device.py): a case of the other device's shapes,
or a host-memory copy on the GPU, is skipped at collection with the reason. A GPU run measures its cases
most wanted first (_device.priority) and stops starting new ones once --bench-budget-s is spent (the rest
skip with that reason and the JSON is still written): scripts/gpu_run.sh gives each backend its share of
the GPU machine's time.
"""

from __future__ import annotations

import time

import pytest

from tests.benchmarks import _device

_START = pytest.StashKey[float]()


def pytest_addoption(parser):
    parser.getgroup("bnspec-bench", "bnspec benchmarks").addoption(
        "--bench-budget-s", type=float, default=None, metavar="S",
        help="seconds this process may spend on benchmarks (from the start of the session); once spent, "
             "the cases not yet started skip with that reason")


def pytest_configure(config):
    config.addinivalue_line("markers", "bench_backend(name): a benchmark of the Keras backend `name` "
                                       "(tensorflow, jax, torch); deselected in a process on another backend")
    config.stash[_START] = time.monotonic()


def _run(config):
    from bnspec.measure.plugin import run_of  # the run bnspec's plugin made for this session

    return run_of(config)


def pytest_collection_modifyitems(config, items):
    here = _run(config).backend
    keep, other = [], []
    for item in items:
        marker = item.get_closest_marker("bench_backend")
        (other if marker is not None and marker.args[0] != here else keep).append(item)
    if other:
        config.hook.pytest_deselected(items=other)
    for item in keep:
        params = getattr(getattr(item, "callspec", None), "params", {})
        reason = _device.skip_reason(params.get("device"), params.get("shape"), params.get("impl"))
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    gpu = [i for i in keep if getattr(getattr(i, "callspec", None), "params", {}).get("device") == "gpu"]
    if gpu and len(gpu) == len([i for i in keep if "device" in getattr(getattr(i, "callspec", None), "params", {})]):
        # a GPU-only run (--bnspec-device=gpu): the most wanted cases first, in case the budget runs out
        keep.sort(key=lambda i: _device.priority(getattr(getattr(i, "callspec", None), "params", {}),
                                                 i.originalname or i.name))
    items[:] = keep


@pytest.fixture(autouse=True)
def _budget(request):
    """Skips a case that would start after --bench-budget-s is spent."""
    budget = request.config.getoption("--bench-budget-s", default=None)
    if budget is not None:
        spent = time.monotonic() - request.config.stash[_START]
        if spent > budget:
            pytest.skip(f"the benchmark time budget is spent ({spent:.0f} s of --bench-budget-s={budget:g})")


@pytest.fixture(scope="session")
def bench_limits(request) -> tuple[float, int]:
    """(seconds per case, rounds at least): pytest-benchmark's --benchmark-max-time and --benchmark-min-rounds,
    which the GPU cases' own round planning (_device.plan) honours too."""
    return float(request.config.getoption("benchmark_max_time")), int(request.config.getoption("benchmark_min_rounds"))
