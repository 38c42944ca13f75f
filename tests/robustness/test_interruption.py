"""Work killed half-way (SIGKILL) leaves nothing a later run mistakes for valid, and no lock that hangs it."""

import os
import signal
import subprocess
import sys
import time

import pytest
from filelock import FileLock

from bnspec.subjects import cache

from .conftest import ROOT, TRAIN_CHILD, child_env, result_of, spawn


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_training_killed_midway_is_recovered(iso_home):
    models = iso_home / "models"
    victim = spawn(TRAIN_CHILD.format(steps=2000), child_env(iso_home))  # long enough to be killed while training
    _wait_for(lambda: any(models.glob(".tmp-*")), 120, "training to start")
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    leftovers = list(models.glob(".tmp-*"))
    entries = [p for p in models.glob("*-*") if p.is_dir() and not p.name.startswith(".")]
    assert leftovers and not entries, "a killed training must leave no entry, only its temporary directory"
    lock = next(models.glob("*.lock"))
    FileLock(str(lock)).acquire(timeout=2)  # the OS released the dead process's lock

    again = result_of(spawn(TRAIN_CHILD.format(steps=2000), child_env(iso_home)))
    assert again["created"]
    assert not list(models.glob(".tmp-*")), "the next creator removes the leftover"
    assert "removed-leftover" in [e["event"] for e in cache.Store(models).events()]


_HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_lock_of_a_killed_process_does_not_hang_the_next_run(tmp_path):
    lock_path = tmp_path / "entry.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(Exception, match="(?i)timeout|could not be acquired"):
        FileLock(str(lock_path)).acquire(timeout=0.5)  # held while the holder lives
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    started = time.monotonic()
    FileLock(str(lock_path)).acquire(timeout=5)
    assert time.monotonic() - started < 2.0
    assert lock_path.exists()  # the stale file is harmless: flock, not the file, is the lock


def test_a_live_lock_holder_gives_a_clear_timeout(tmp_path):
    store = cache.Store(tmp_path)
    final = store.entry_dir("m", cache.key_of({"k": 1}))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(final) + ".lock"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(cache.CacheError, match="waited .* for the lock .* delete it and retry"):
            store.get_or_create("m", {"k": 1}, lambda t: {}, lambda p: None, lock_timeout=1.0)
    finally:
        holder.kill()
        holder.wait(timeout=30)


_SLOW_FETCH = """
import sys, time
from pathlib import Path
from bnspec.subjects import data
real = data.read_npz(Path(sys.argv[1]))
def fetch(progress):
    print("fetching", flush=True)
    time.sleep(600)
    return real
data.SOURCES = (data.Source("slow fake", fetch),)
data.load_mnist(progress=lambda m: None)
"""


def test_data_fetch_killed_midway_is_recovered(iso_home, tmp_path):
    from bnspec.subjects import data

    source = tmp_path / "source.npz"
    (iso_home / "data" / "mnist.npz").rename(source)
    victim = subprocess.Popen([sys.executable, "-c", _SLOW_FETCH, str(source)], env=child_env(iso_home), cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "fetching"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert not (iso_home / "data" / "mnist.npz").exists()
    env = child_env(iso_home)
    code = ("import sys; from pathlib import Path; from bnspec.subjects import data; real = data.read_npz(Path(sys.argv[1]));"
            "data.SOURCES = (data.Source('fake', lambda p: real),); data.load_mnist(progress=lambda m: None);"
            "print('RESULT {}')")
    done = subprocess.run([sys.executable, "-c", code, str(source)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-1000:]
    assert data.verify(data.read_npz(iso_home / "data" / "mnist.npz"), "recovered")
