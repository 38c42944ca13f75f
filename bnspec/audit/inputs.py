"""What the forward passes run on: the user's data (`--data`: an array, a list/dict of arrays, a .npy/.npz
file), or random inputs of the model's input shape; and the two operations every measurement needs on
either (how many examples, which rows). numpy only: no Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnspec.audit.findings import UsageError

N_RANDOM = 8  # examples in the random batch when no data is given


def load_data(data):
    """--data: an array, a list/dict of arrays, or a .npy / .npz file. An .npz with one array gives that
    array; with keys x / inputs, that one; otherwise the arrays in file order (several inputs)."""
    if data is None:
        return None
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise UsageError(f"--data {path}: no such file")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--data {path}: not a .npy/.npz array file ({exc})") from exc
        if isinstance(loaded, np.ndarray):
            data = loaded
        else:
            keys = list(loaded.files)
            if not keys:
                raise UsageError(f"--data {path}: the .npz holds no array")
            pick = next((k for k in ("x", "inputs", "x_test", "x_train") if k in keys), None)
            data = loaded[pick] if pick else (loaded[keys[0]] if len(keys) == 1 else [loaded[k] for k in keys])
    if isinstance(data, (list, tuple)):
        data = [np.asarray(a) for a in data]
        if len(data) == 1:
            data = data[0]
    elif isinstance(data, dict):
        data = {k: np.asarray(v) for k, v in data.items()}
    else:
        data = np.asarray(data)
    arrays = data if isinstance(data, list) else (list(data.values()) if isinstance(data, dict) else [data])
    if any(a.ndim == 0 or len(a) == 0 for a in arrays):
        raise UsageError("--data: the arrays must hold at least one example along axis 0")
    if len({len(a) for a in arrays}) != 1:
        raise UsageError("--data: the arrays have different numbers of examples")
    if arrays[0].dtype == object:
        raise UsageError("--data: object arrays are not model inputs")
    for i, a in enumerate(arrays):
        if np.issubdtype(a.dtype, np.floating) and a.dtype != np.float32 and a.dtype != np.float16:
            arrays[i] = a.astype(np.float32)
    if isinstance(data, list):
        return arrays
    if isinstance(data, dict):
        return dict(zip(data.keys(), arrays))
    return arrays[0]


def examples(x) -> int:
    """How many examples x holds (array, list of arrays or dict of arrays)."""
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    if isinstance(x, list):
        return len(x[0])
    return len(x)


def take(x, idx):
    """Examples `idx` of x (array, list of arrays or dict of arrays)."""
    if isinstance(x, dict):
        return {k: v[idx] for k, v in x.items()}
    if isinstance(x, list):
        return [v[idx] for v in x]
    return x[idx]


def random_inputs(model, n: int = N_RANDOM, seed: int = 0):
    """Standard-normal float inputs (0/1 integers for integer inputs) of the model's input shape."""
    rng = np.random.default_rng(seed)
    try:
        specs = list(model.inputs)
    except (AttributeError, ValueError, TypeError):  # subclassed models have no symbolic inputs
        specs = None
    shapes = []
    if specs:
        for spec in specs:
            shapes.append((tuple(spec.shape), str(getattr(spec.dtype, "name", spec.dtype))))
    else:
        shape = getattr(model, "_build_shapes_dict", None)
        if isinstance(shape, dict) and len(shape) == 1:
            shapes.append((tuple(next(iter(shape.values()))), "float32"))
        else:
            raise UsageError(f"{model.name}: the input shape is unknown (a model never built or called): "
                             "pass data (--data file.npy/.npz)")
    arrays = []
    for shape, dtype in shapes:
        full = (n,) + tuple(8 if d is None else int(d) for d in shape[1:])
        if "int" in dtype:
            arrays.append(rng.integers(0, 2, size=full).astype(dtype))
        else:
            arrays.append(rng.standard_normal(full).astype("float32"))
    return arrays[0] if len(arrays) == 1 else arrays


def ensure_two(x, seed: int = 0):
    """The batch-dependence checks need two examples: a single example gets a random batch-mate."""
    if examples(x) >= 2:
        return x
    rng = np.random.default_rng(seed)

    def pad(a):
        other = rng.standard_normal(a.shape).astype(a.dtype) * (np.std(a) or 1.0) + np.mean(a) \
            if np.issubdtype(a.dtype, np.floating) else a
        return np.concatenate([a, other], axis=0)

    if isinstance(x, dict):
        return {k: pad(v) for k, v in x.items()}
    if isinstance(x, list):
        return [pad(v) for v in x]
    return pad(x)
