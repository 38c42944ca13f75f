"""Damaged cache entries and bad user input: one clear message, a defined outcome, nothing of the user's deleted."""

import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bnspec.subjects import cache, data
from tests.helpers import run_bnspec

from .conftest import TRAIN_CHILD, child_env, result_of, spawn


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_model_file_is_set_aside_and_retrained(iso_home, damage):
    first = result_of(spawn(TRAIN_CHILD.format(steps=30), child_env(iso_home)))
    model_file = Path(first["path"]) / "model.keras"
    blob = model_file.read_bytes()
    model_file.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"\x00garbage" * 100)
    proc = spawn(TRAIN_CHILD.format(steps=30), child_env(iso_home))
    second = result_of(proc)
    assert second["created"] and second["digest"] == first["digest"]  # retrained, same seed, same weights
    aside = list((iso_home / "models").glob("*.corrupt-0"))
    assert aside and (aside[0] / "model.keras").exists(), "the damaged entry is kept for inspection"
    assert "invalid" in [e["event"] for e in cache.Store(iso_home / "models").events()]


def test_unwritable_home_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = run_bnspec("data", env=child_env(blocker / "home"))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "is not writable" in out.stderr and "BNSPEC_HOME" in out.stderr
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("case", ["missing_keys", "wrong_shapes", "forbidden_pickle"])
def test_bad_user_mnist_is_refused_and_kept(tmp_path, case):
    target = tmp_path / "mnist.npz"
    if case == "missing_keys":
        np.savez(target, x_train=np.zeros((60000, 28, 28), np.uint8))
        want = "missing arrays"
    elif case == "wrong_shapes":
        np.savez(target, **{k: np.zeros((5,) + s[1:], np.uint8) for k, s in data.SHAPES.items()})
        want = "shape"
    else:  # an npz whose member is a pickle calling os.system: numpy must refuse to unpickle it
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))

        with zipfile.ZipFile(target, "w") as zf:
            zf.writestr("x_train.npy", pickle.dumps(Evil()))
        want = "not a readable .npz|missing arrays|pickle"
    before = target.read_bytes()
    out = run_bnspec("data", env=child_env(tmp_path / "home", BNSPEC_MNIST=str(target)))
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert re.search(want, out.stderr), out.stderr
    assert "pwned" not in out.stdout
    assert target.read_bytes() == before
