"""What travels to the lent GPU machine, and MNIST packed small enough to travel with it.

The device tool copies the working tree (every tracked file, and every untracked file git does not
ignore) plus the ignored folders it is told to carry (.whl and .gpu, written by scripts/gpu_prepare.sh),
64 MiB in all. This script measures that payload and writes the verified MNIST compressed:

    python scripts/gpu_payload.py mnist .gpu/mnist.npz   # np.savez_compressed (55 MB raw -> about 11.5 MB)
    python scripts/gpu_payload.py size                   # the payload now: exit 1 at or over 64 MiB

Standard library and numpy only, except `mnist`, which reads MNIST through bnspec (verified by sha256)
and checks the written file the way `bnspec data` checks a BNSPEC_MNIST file. tests/robustness/
test_gpu_payload.py imports it to check that the recipe fits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LIMIT = 64 * 2**20  # bytes: what the device tool carries (working tree + carried folders)
CARRY = (".whl", ".gpu")  # the ignored folders gpu_prepare.sh writes and the device tool is told to carry
ROOT = Path(__file__).resolve().parents[1]


def _size(path: Path) -> int:
    st = path.lstat()  # a link travels as a link
    return st.st_size


def tree(root: Path = ROOT) -> dict[str, int]:
    """{path: bytes} of the working tree as it travels: tracked files and untracked files that git does not
    ignore (a tracked file deleted from the work tree does not travel)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    sizes = {}
    for name in sorted(set(out.decode("utf-8", "surrogateescape").split("\0")) - {""}):
        path = root / name
        if path.is_symlink() or path.is_file():
            sizes[name] = _size(path)
    return sizes


def folder(path: Path, prefix: str | None = None) -> dict[str, int]:
    """{path: bytes} of every file under `path` (nothing when it does not exist), named `prefix/...`."""
    path = Path(path)
    prefix = path.name if prefix is None else prefix
    if not path.is_dir():
        return {}
    return {f"{prefix}/{f.relative_to(path).as_posix()}": _size(f) for f in sorted(path.rglob("*"))
            if f.is_symlink() or f.is_file()}


def payload(root: Path = ROOT, carry=CARRY) -> dict[str, int]:
    """{path: bytes} of everything that travels: the working tree and the carried folders."""
    sizes = tree(root)
    for name in carry:
        sizes.update(folder(Path(root) / name, name))
    return sizes


def by_top(sizes: dict[str, int]) -> dict[str, int]:
    """Bytes per top-level folder (or file), biggest first."""
    tops: dict[str, int] = {}
    for name, n in sizes.items():
        top = name.split("/", 1)[0]
        tops[top] = tops.get(top, 0) + n
    return dict(sorted(tops.items(), key=lambda kv: -kv[1]))


def biggest(sizes: dict[str, int], n: int = 8) -> list[tuple[str, int]]:
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:n]


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def describe(sizes: dict[str, int], limit: int = LIMIT) -> str:
    total = sum(sizes.values())
    lines = [f"payload {mib(total)} of {mib(limit)} ({len(sizes)} files)",
             "by folder: " + ", ".join(f"{k} {mib(v)}" for k, v in list(by_top(sizes).items())[:8]),
             "biggest files: " + ", ".join(f"{k} {mib(v)}" for k, v in biggest(sizes))]
    return "\n".join(lines)


def write_mnist(dest: Path) -> int:
    """The verified MNIST (bnspec's sources) written to `dest` with np.savez_compressed, then read back and
    verified as `bnspec data` verifies a BNSPEC_MNIST file. Returns the file's size."""
    import numpy as np

    if str(ROOT) not in sys.path:  # run as a script from a checkout where bnspec is not installed
        sys.path.insert(0, str(ROOT))
    from bnspec.subjects import data

    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:  # a file object: np.savez_compressed would append .npz to a bare name
        np.savez_compressed(fh, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data.verify(data.read_npz(tmp), str(tmp))
    os.replace(tmp, dest)
    return dest.stat().st_size


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "mnist":
        n = write_mnist(Path(argv[1]))
        print(f"{argv[1]}: MNIST, verified, compressed: {mib(n)}")
        return 0
    if argv == ["size"]:
        sizes = payload()
        print(describe(sizes))
        if sum(sizes.values()) >= LIMIT:
            print(f"gpu_payload: over the device tool's {mib(LIMIT)}: remove or ignore the biggest files above",
                  file=sys.stderr)
            return 1
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
