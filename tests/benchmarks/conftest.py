"""The benchmarks of one process are those of its Keras backend (KERAS_BACKEND): a test marked
`bench_backend(name)` for another backend is deselected, not skipped, so that a run lists only what
it measures. `tox -e bench` runs pytest once per backend into the same --benchmark-storage."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "bench_backend(name): a benchmark of the Keras backend `name` "
                                       "(tensorflow, jax, torch); deselected in a process on another backend")


def pytest_collection_modifyitems(config, items):
    from bnspec import flavours

    here = flavours.backend()
    keep, other = [], []
    for item in items:
        marker = item.get_closest_marker("bench_backend")
        (other if marker is not None and marker.args[0] != here else keep).append(item)
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = keep
