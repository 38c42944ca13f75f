"""Train the notebook's model once per (run, model spec, training spec, data, library versions, code) and cache it.

    t = training.trained(run)                       # the notebook's model, trained or from the cache
    t = training.trained(run, ModelSpec(bn="explicit"))
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bnspec import flavours, paths, provenance
from bnspec.flavours import distribution_version
from bnspec.measure.backend import Backend
from bnspec.run import Environment, Run
from bnspec.subjects import cache, data, layers
from bnspec.subjects.model import ModelSpec, build, compile_model


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 10  # the notebook trained 10 epochs and reached test accuracy 0.9711
    batch_size: int = 60  # the paper's and the notebook's mini-batch
    learning_rate: float = 1e-3
    seed: int = 100
    n_valid: int = 5000
    steps_per_epoch: int | None = None  # None = the whole epoch (916 steps of 60)


@dataclass
class Trained:
    model: object  # a keras.Model; shared, treat as read-only (use `fresh()` to mutate)
    metrics: dict
    path: Path
    created: bool

    keras: object = None  # the Keras module the model lives in

    def fresh(self):
        """A new, independent copy of the trained model loaded from the cache entry."""
        return _load(self.keras, self.path)


def log(msg: str) -> None:
    # sys.__stderr__: progress must be visible even when pytest captures sys.stderr.
    print(f"bnspec: {msg}", file=sys.__stderr__, flush=True)


# The source files whose code builds, trains or preprocesses the cached model: a change to any of
# them is a new cache key (read as files, so computing the key imports no TensorFlow).
CODE = ("subjects/model.py", "subjects/layers.py", "subjects/training.py", "subjects/data.py", "measure/backend.py")


def key_material(run: Run, spec: ModelSpec, train: TrainSpec) -> dict:
    return {
        "model": spec.as_dict(),
        "train": asdict(train),
        "data": data.DATA_HASH,
        "versions": {"flavour": run.flavour, "keras": distribution_version(run.flavour),
                     "tensorflow": Environment.capture(run, gpu=False).tensorflow},
        "backend": run.backend,
        "code": provenance.file_hash(*(provenance.PACKAGE / name for name in CODE)),
        "mutant": run.mutant,
    }


def store() -> cache.Store:
    return cache.Store(paths.home() / "models", log=log)


def _load(keras, path: Path):
    layers.for_keras(keras)  # registers ExplicitBatchNorm for deserialisation
    model = keras.models.load_model(path / "model.keras", compile=False)
    return compile_model(model, keras)


def epoch_order(n: int, batch: int, seed: int, epoch: int, steps: int | None = None) -> np.ndarray:
    """The example indices of one epoch: a fresh permutation per epoch from (seed, epoch), cut to full
    batches (drop the remainder, as the notebook's pipeline did), optionally to the first `steps` batches.
    numpy only, the same on every backend (no tf.data)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    full = (n // batch if steps is None else min(steps, n // batch)) * batch
    return order[:full]


def _train_into(run: Run, keras, spec: ModelSpec, train: TrainSpec, out: Path) -> dict:
    B = Backend(run.backend)
    B.configure()
    B.deterministic(keras, train.seed)
    splits = data.preprocess(data.load_mnist(), seed=train.seed, n_valid=train.n_valid)
    model = compile_model(build(spec, keras), keras, train.learning_rate)
    log(f"training {spec.kind} model on {run.backend} ({train.epochs} epochs, batch {train.batch_size}) "
        f"-> {out.name}")
    started = time.time()
    history: dict[str, list[float]] = {}
    for epoch in range(train.epochs):  # one fit() per epoch over that epoch's order
        idx = epoch_order(len(splits.x_train), train.batch_size, train.seed, epoch, train.steps_per_epoch)
        h = model.fit(splits.x_train[idx], splits.y_train[idx], batch_size=train.batch_size, epochs=1, shuffle=False,
                      validation_data=(splits.x_valid, splits.y_valid), validation_batch_size=train.batch_size, verbose=0)
        for k, vs in h.history.items():
            history.setdefault(k, []).extend(float(v) for v in vs)
        log(f"  epoch {epoch + 1}/{train.epochs}: loss {history['loss'][-1]:.4f} acc {history['accuracy'][-1]:.4f} "
            f"val_acc {history['val_accuracy'][-1]:.4f} ({time.time() - started:.0f} s)")
    seconds = time.time() - started
    test_loss, test_acc = model.evaluate(splits.x_test, splits.y_test, batch_size=train.batch_size, verbose=0)
    model.save(out / "model.keras")
    log(f"trained in {seconds:.0f} s: test accuracy {test_acc:.4f}")
    return {
        "history": history,
        "test_loss": float(test_loss),
        "test_accuracy": float(test_acc),
        "train_seconds": round(seconds, 1),
    }


def _entry_name(run: Run, spec: ModelSpec) -> str:
    return f"{run.key}-{spec.kind}" + ("" if spec.bn == "keras" else f"-{spec.bn}")


def trained(run: Run, spec: ModelSpec = ModelSpec(), train: TrainSpec = TrainSpec(), keras=None) -> Trained:
    """The trained model for (run, spec, train), from the cache or trained now (once across processes), in
    `keras` (default: the run's Keras module)."""
    keras = keras or flavours.keras_module(run)
    entry = store().get_or_create(
        _entry_name(run, spec),
        key_material(run, spec, train),
        create=lambda tmp: _train_into(run, keras, spec, train, tmp),
        load=lambda path: _load(keras, path),
    )
    if not entry.created:
        log(
            f"reusing cached model {entry.path.name} (trained in {entry.meta.get('train_seconds')} s, "
            f"test accuracy {entry.meta.get('test_accuracy', float('nan')):.4f})"
        )
    return Trained(entry.value, entry.meta, entry.path, entry.created, keras)
