"""A keyed, locked, atomic, train-once store. No TensorFlow here: callers pass `create` and `load`.

An entry is a directory `<root>/<name>-<key>/` holding whatever `create` wrote plus `entry.json`
(the full key and the creator's metadata). Guarantees:

* one creator: a per-key OS file lock (filelock -> flock), so N processes (pytest-xdist workers)
  asking for the same key on a cold cache create it exactly once; the lock dies with its holder,
  so a killed process never leaves a lock that blocks the next run;
* atomic: `create` writes into a private temporary directory that is renamed into place only
  when complete; an interrupted creation leaves at most a `.tmp-*` directory, never an entry,
  and the next creator of that key removes it;
* self-healing: an entry whose `entry.json` is missing/unreadable/for another key, or whose
  `load` fails, is moved aside to `<entry>.corrupt-<n>` (kept for inspection) and recreated;
* observable: every hit, miss and creation is appended to `<root>/events.log`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

from bnspec import BnspecError, paths

ENTRY_FILE = "entry.json"
SCHEMA = 1


def key_of(key_material: dict) -> str:
    """A stable short hash of a JSON-able dict (sorted keys)."""
    blob = json.dumps({"schema": SCHEMA, **key_material}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class Entry:
    path: Path
    meta: dict
    value: Any
    created: bool  # True when this call created the entry


class CacheError(BnspecError):
    pass


class Store:
    def __init__(self, root: Path, log: Callable[[str], None] = lambda m: None):
        self.root = Path(root)
        self.log = log

    def entry_dir(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}"

    def event(self, what: str, entry: Path, **extra) -> None:
        """Append one line to events.log (small O_APPEND writes are atomic on POSIX)."""
        record = {"t": round(time.time(), 3), "pid": os.getpid(), "event": what, "entry": entry.name, **extra}
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "events.log", "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def events(self) -> list[dict]:
        try:
            lines = (self.root / "events.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def _read_valid(self, final: Path, key_material: dict, load: Callable[[Path], Any]):
        """(meta, value) of a valid entry, None if absent; moves an invalid entry aside."""
        if not final.exists():
            return None
        problem = None
        try:
            meta = json.loads((final / ENTRY_FILE).read_text())
            if key_of(meta.get("key") or {}) != key_of(key_material):  # compare as JSON, not as Python
                problem = "entry.json describes another key"
            else:
                return meta, load(final)
        except Exception as exc:  # any failure to read our own entry means: not valid
            problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        n = 0
        while final.with_name(f"{final.name}.corrupt-{n}").exists():
            n += 1
        aside = final.with_name(f"{final.name}.corrupt-{n}")
        os.replace(final, aside)
        self.log(f"cache entry {final.name} is invalid ({problem}); moved to {aside.name} and recreating")
        self.event("invalid", final, problem=problem)
        return None

    def _remove_leftovers(self, final: Path) -> None:
        """Temporary directories of this key left by a killed creator. Safe: we hold the key's lock,
        so no live process is writing into them."""
        for stale in self.root.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
            self.log(f"removed {stale.name}, left by an interrupted creation")
            self.event("removed-leftover", final, leftover=stale.name)

    def get_or_create(
        self,
        name: str,
        key_material: dict,
        create: Callable[[Path], dict],
        load: Callable[[Path], Any],
        lock_timeout: float = 3600.0,
    ) -> Entry:
        """Return the valid entry for `key_material`, creating it (once, under a lock) if needed.

        `create(tmpdir)` writes the entry's files into `tmpdir` and returns metadata (JSON-able);
        `load(entry_dir)` turns a directory into the value and raises if it is unusable.
        """
        key = key_of(key_material)
        final = self.entry_dir(name, key)
        self.root.mkdir(parents=True, exist_ok=True)
        found = self._read_valid(final, key_material, load)
        if found:
            self.event("hit", final)
            return Entry(final, found[0], found[1], created=False)

        lock = FileLock(str(final) + ".lock")
        waited_since = time.monotonic()
        while True:
            try:
                lock.acquire(timeout=30)
                break
            except Timeout:
                waited = time.monotonic() - waited_since
                if waited >= lock_timeout:
                    raise CacheError(
                        f"waited {waited:.0f} s for the lock {final.name}.lock held by another process; "
                        "if no bnspec process is running, that lock is stale: delete it and retry"
                    ) from None
                self.log(f"waiting for another process to finish creating {final.name} ({waited:.0f} s)")
        try:
            found = self._read_valid(final, key_material, load)  # created while we waited?
            if found:
                self.event("hit-after-wait", final)
                return Entry(final, found[0], found[1], created=False)
            self._remove_leftovers(final)
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{final.name}-"))
            try:
                started = time.time()
                meta = create(tmp)
                meta = {"key": key_material, "created_s": round(time.time() - started, 2),
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
                paths.atomic_write_json(tmp / ENTRY_FILE, meta)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self.event("created", final, seconds=meta["created_s"])
            return Entry(final, meta, load(final), created=True)
        finally:
            lock.release()
