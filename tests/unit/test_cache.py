"""bnspec.subjects.cache: keying, atomic creation, corrupt entries, and one creator among many processes."""

import json
import multiprocessing as mp
import time

import pytest

from bnspec.subjects import cache


def _create(tmp, value="v", delay=0.0):
    time.sleep(delay)
    (tmp / "value.txt").write_text(value)
    return {"note": value}


def _load(path):
    return (path / "value.txt").read_text()


def test_key_is_stable_and_sensitive():
    a = cache.key_of({"model": {"units": (100, 100)}, "lr": 1e-3})
    assert a == cache.key_of({"lr": 1e-3, "model": {"units": [100, 100]}})  # order and tuple/list don't matter
    assert a != cache.key_of({"model": {"units": (100, 101)}, "lr": 1e-3})


def test_create_once_then_hit(tmp_path):
    store = cache.Store(tmp_path)
    first = store.get_or_create("m", {"k": 1}, lambda t: _create(t, "one"), _load)
    second = store.get_or_create("m", {"k": 1}, lambda t: _create(t, "two"), _load)
    assert (first.created, second.created) == (True, False)
    assert first.value == second.value == "one"
    assert [e["event"] for e in store.events()] == ["created", "hit"]


def test_interrupted_creation_leaves_no_entry(tmp_path):
    store = cache.Store(tmp_path)

    def boom(tmp):
        (tmp / "value.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.get_or_create("m", {"k": 2}, boom, _load)
    assert not store.entry_dir("m", cache.key_of({"k": 2})).exists()
    assert not list(tmp_path.glob(".tmp-*"))
    assert store.get_or_create("m", {"k": 2}, _create, _load).created


@pytest.mark.parametrize("damage", ["garbage-entry-json", "missing-file", "other-key"])
def test_corrupt_entry_is_set_aside_and_recreated(tmp_path, damage):
    store = cache.Store(tmp_path, log=lambda m: None)
    entry = store.get_or_create("m", {"k": 3}, _create, _load).path
    if damage == "garbage-entry-json":
        (entry / cache.ENTRY_FILE).write_text("{not json")
    elif damage == "missing-file":
        (entry / "value.txt").unlink()
    else:
        meta = json.loads((entry / cache.ENTRY_FILE).read_text())
        meta["key"] = {"k": 999}
        (entry / cache.ENTRY_FILE).write_text(json.dumps(meta))
    again = store.get_or_create("m", {"k": 3}, lambda t: _create(t, "fresh"), _load)
    assert again.created and again.value == "fresh"
    assert entry.with_name(entry.name + ".corrupt-0").is_dir()  # kept for inspection, not deleted


def _worker(root, q):
    store = cache.Store(root)
    entry = store.get_or_create("m", {"k": "shared"}, lambda t: _create(t, "x", delay=0.5), _load)
    q.put((entry.created, entry.value))


@pytest.mark.parametrize("n", [2, 4])
def test_n_processes_create_exactly_once(tmp_path, n):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(tmp_path, q)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(created for created, _ in got) == 1
    assert {value for _, value in got} == {"x"}
    events = [e["event"] for e in cache.Store(tmp_path).events()]
    assert events.count("created") == 1 and len(events) == n
