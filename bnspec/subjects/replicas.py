"""BN across two replicas on one machine without a GPU: the experiments run in a child process.

Two replicas need devices that exist before the framework initialises: TensorFlow's MirroredStrategy
gets two *logical* CPU devices (`tf.config.set_logical_device_configuration`, as Keras' own
distribute tests do) and JAX gets two host devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`).
Neither can be done in a process that has already imported the framework, so each experiment group runs
in a fresh `python -m bnspec.subjects.replicas <group> <out.json>`, started from the test process with
`sys.executable` and the flavour's environment; the child only *measures* (inputs, outputs, every
replica's copy of the moving statistics, what is saved and served) and writes the numbers as JSON
(NaN written as NaN). Every comparison, bound and verdict is made by the test in the parent, which
needs no TensorFlow for these groups.

Groups:
  tf   (TensorFlow, both flavours)  c11: one training-mode call under MirroredStrategy with each replica
       holding one half of a global batch, synchronized False/True; c04: fit() of one global batch
       under the strategy, then get_weights(), save()+load_model() and predict() under the strategy;
       c07: fit() on 17 examples with global batch 16 (the last global batch leaves replica 1 an
       empty shard), the replica copies recorded after every batch.
  jax  (Keras 3, KERAS_BACKEND=jax)  c11: keras.distribution.DataParallel over two host devices: fit()
       of one global batch, and a jitted training-mode stateless_call on the batch sharded over both.

    from bnspec.subjects import replicas
    replicas.start("jax")                 # optional: start a child in the background
    numbers = replicas.results("tf")      # once per process; raises ReplicaError on a failed child
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bnspec import provenance, subjects

GROUPS = ("tf", "jax")
TIMEOUT = 240  # seconds per child; the tf group takes ~11 s of CPU (half of it importing TensorFlow): 25-65 s wall
# on 2 cores shared by several runs; the jax group ~7 s of CPU
SEED = 20150211
FEATURES = 3
HALF = 8  # examples per replica in a global batch of 16
GLOBAL = 2 * HALF
SHIFT = 10.0  # replica 1's half has mean SHIFT (std 2), replica 0's mean 0 (std 1): the statistics differ by far


class ReplicaError(RuntimeError):
    """The child process failed: an error of the test, never a verdict."""


def halves(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The global batch's two halves (float32): replica 0 gets N(0, 1), replica 1 gets N(SHIFT, 2)."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(0.0, 1.0, (HALF, FEATURES)).astype(np.float32)
    x1 = rng.normal(SHIFT, 2.0, (HALF, FEATURES)).astype(np.float32)
    return x0, x1


def query(seed: int = SEED + 1) -> np.ndarray:
    """HALF examples served by predict(): the same rows go to both replicas (rows 0-7 and 8-15)."""
    rng = np.random.default_rng(seed)
    return rng.normal(SHIFT / 2, 3.0, (HALF, FEATURES)).astype(np.float32)


def partial_batch(seed: int = SEED + 2) -> np.ndarray:
    """17 examples: with global batch 16 the second global batch holds one example, so the second
    replica's shard of it is empty."""
    rng = np.random.default_rng(seed)
    return rng.normal(1.0, 1.0, (GLOBAL + 1, FEATURES)).astype(np.float32)


# --------------------------------------------------------------------------- parent side


def child_run(run, group: str):
    """The run a group's child measures: the parent's flavour and mutant on the group's backend."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; choose one of {GROUPS}")
    from dataclasses import replace

    return replace(run, backend="tensorflow" if group == "tf" else "jax", device=None)


def child_env(run, group: str) -> dict:
    """The environment of a group's child: this process's, with the child's run written over it and, for JAX,
    two host devices."""
    env = child_run(run, group).child_env()
    env["PYTHONHASHSEED"] = "0"
    if group == "jax":
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=2"])
        env["JAX_PLATFORMS"] = "cpu"
    return env


_RUNNING: dict[str, tuple[subprocess.Popen, str, float]] = {}  # group -> (child, its folder, start time)
_DONE: dict[str, dict | ReplicaError] = {}


@atexit.register
def _stop_children() -> None:
    """A child still running when this process exits (an interrupted run) is stopped, its folder removed."""
    for child, tmp, _ in list(_RUNNING.values()):
        if child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def start(run, group: str) -> None:
    """Start the group's child for `run` in the background (once per process); `results` waits for it."""
    if group in _RUNNING or group in _DONE:
        return
    root = str(provenance.ROOT)
    tmp = tempfile.mkdtemp(prefix=f"bnspec-replicas-{group}-")
    with open(os.path.join(tmp, "log.txt"), "w") as log:
        child = subprocess.Popen([sys.executable, "-m", "bnspec.subjects.replicas", group, os.path.join(tmp, "out.json")],
                                 cwd=root, env=child_env(run, group), stdout=log, stderr=subprocess.STDOUT)
    _RUNNING[group] = (child, tmp, time.time())


def results(run, group: str) -> dict:
    """The group's numbers (lists; NaN kept as float NaN), from its child (started here if need be),
    once per process. A failed child raises ReplicaError (again for every later call: one child per group)."""
    if group in _DONE:
        if isinstance(_DONE[group], ReplicaError):
            raise _DONE[group]
        return _DONE[group]
    start(run, group)
    child, tmp, started = _RUNNING.pop(group)
    try:
        try:
            child.wait(timeout=max(1.0, TIMEOUT - (time.time() - started)))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise ReplicaError(f"replicas child {group!r} ran past {TIMEOUT} s") from None
        out = os.path.join(tmp, "out.json")
        if child.returncode != 0 or not os.path.exists(out):
            with open(os.path.join(tmp, "log.txt")) as f:
                tail = "\n".join(f.read().strip().splitlines()[-25:])
            raise ReplicaError(f"replicas child {group!r} failed (exit {child.returncode}):\n{tail}")
        with open(out) as f:
            data = json.load(f)
    except ReplicaError as exc:
        _DONE[group] = exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data["parent_seconds"] = round(time.time() - started, 1)
    _DONE[group] = data
    return data


# --------------------------------------------------------------------------- child side


def _child_run():
    """The child is an entry point: its run comes from the environment its parent wrote (child_env)."""
    from bnspec.run import Run

    return Run.from_env(mutant=Run.mutant_in())


def _arr(x) -> list:
    return np.asarray(x, dtype=np.float64).tolist()


def _tf_child(tmpdir: str) -> dict:
    t0 = time.time()
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    run = _child_run()
    keras = subjects.keras_for(run)
    legacy = run.family == "tfkeras"
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices[:2])
    out = {"flavour": run.flavour, "keras": keras.__version__, "tensorflow": tf.__version__,
           "replicas": strategy.num_replicas_in_sync, "devices": devices[:2], "import_seconds": round(time.time() - t0, 1)}

    def tfvar(v):  # the tf.Variable behind a layer's variable (Keras 3 wraps it)
        return getattr(v, "value", v) if not legacy else v

    def local(v) -> list:
        """Every replica's copy of a variable, in replica order."""
        return [_arr(t) for t in strategy.experimental_local_results(tfvar(v))]

    def var_info(v) -> dict:
        t = tfvar(v)
        return {"class": type(t).__name__, "synchronization": str(getattr(t, "synchronization", "")),
                "aggregation": str(getattr(t, "aggregation", ""))}

    x0, x1 = halves()

    # ---- C11: one training-mode call, replica r holds half r
    c11 = {"x0": _arr(x0), "x1": _arr(x1)}
    for sync in (False, True):
        keras.utils.set_random_seed(SEED)
        with strategy.scope():
            bn = keras.layers.BatchNormalization(synchronized=sync)
            bn.build((None, FEATURES))
        parts = (x0, x1)
        dist = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group]))

        @tf.function
        def step(x):
            return strategy.run(lambda xr: bn(xr, training=True), args=(x,))

        y = strategy.experimental_local_results(step(dist))
        c11[f"sync={sync}"] = {
            "outputs": [_arr(t) for t in y], "momentum": float(bn.momentum), "epsilon": float(bn.epsilon),
            "local_mean": local(bn.moving_mean), "local_var": local(bn.moving_variance),
            "read_mean": _arr(bn.get_weights()[2]), "read_var": _arr(bn.get_weights()[3]),
            "variable": var_info(bn.moving_mean)}
    out["c11"] = c11
    out["c11_seconds"] = round(time.time() - t0, 1)

    # ---- C04: fit one global batch under the strategy; saved and served statistics
    xq = query()
    c04 = {"x0": _arr(x0), "x1": _arr(x1), "query": _arr(xq)}
    for sync in (False, True):
        keras.utils.set_random_seed(SEED)
        with strategy.scope():
            model = keras.Sequential([keras.Input((FEATURES,)),
                                      keras.layers.BatchNormalization(momentum=0.0, synchronized=sync)])
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
        bn = model.layers[-1]
        x = np.concatenate([x0, x1])
        model.fit(x, np.zeros_like(x), batch_size=GLOBAL, epochs=1, shuffle=False, verbose=0)
        path = os.path.join(tmpdir, f"sync{sync}.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)  # outside the strategy's scope: one device
        rbn = reloaded.layers[-1]
        served = model.predict(np.concatenate([xq, xq]), batch_size=GLOBAL, verbose=0)
        w = bn.get_weights()
        c04[f"sync={sync}"] = {
            "momentum": float(bn.momentum), "epsilon": float(bn.epsilon),
            "local_mean": local(bn.moving_mean), "local_var": local(bn.moving_variance),
            "local_gamma": local(bn.gamma), "local_beta": local(bn.beta),
            "gamma": _arr(w[0]), "beta": _arr(w[1]), "read_mean": _arr(w[2]), "read_var": _arr(w[3]),
            "saved_mean": _arr(rbn.get_weights()[2]), "saved_var": _arr(rbn.get_weights()[3]),
            "saved_gamma": _arr(rbn.get_weights()[0]), "saved_beta": _arr(rbn.get_weights()[1]),
            "served": _arr(served), "variable": var_info(bn.moving_mean)}
    out["c04"] = c04
    out["c04_seconds"] = round(time.time() - t0, 1)

    # ---- C07: 17 examples, global batch 16: replica 1's shard of the last global batch is empty
    xp = partial_batch()
    c07 = {"x": _arr(xp), "query": _arr(xq)}
    for sync in (False, True):
        keras.utils.set_random_seed(SEED)
        with strategy.scope():
            model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.BatchNormalization(synchronized=sync)])
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
        bn = model.layers[-1]
        steps = [{"mean": local(bn.moving_mean), "var": local(bn.moving_variance)}]  # before training

        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                steps.append({"mean": local(bn.moving_mean), "var": local(bn.moving_variance),
                              "loss": float((logs or {}).get("loss", float("nan")))})

        hist = model.fit(xp, np.zeros_like(xp), batch_size=GLOBAL, epochs=1, shuffle=False, verbose=0,
                         callbacks=[Record()])
        w = bn.get_weights()
        served = model.predict(np.concatenate([xq, xq]), batch_size=GLOBAL, verbose=0)  # rows 8-15: replica 1
        c07[f"sync={sync}"] = {
            "momentum": float(bn.momentum), "steps": steps, "read_mean": _arr(w[2]), "read_var": _arr(w[3]),
            "gamma": _arr(w[0]), "beta": _arr(w[1]), "served": _arr(served),
            "loss": [float(v) for v in hist.history.get("loss", [])]}
    out["c07"] = c07
    out["child_seconds"] = round(time.time() - t0, 1)
    return out


def _jax_child(tmpdir: str) -> dict:
    t0 = time.time()
    run = _child_run()
    keras = subjects.keras_for(run)
    import jax

    devices = jax.devices("cpu")
    out = {"flavour": run.flavour, "keras": keras.__version__, "jax": jax.__version__,
           "devices": [str(d) for d in devices], "import_seconds": round(time.time() - t0, 1)}
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    out["replicas"] = int(distribution.device_mesh.devices.size)
    x0, x1 = halves()
    x = np.concatenate([x0, x1])
    c11 = {"x0": _arr(x0), "x1": _arr(x1)}

    # fit(): one global batch; Keras shards it over the mesh's batch axis
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.BatchNormalization()])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    bn = model.layers[-1]
    momentum, epsilon = float(bn.momentum), float(bn.epsilon)
    model.fit(x, np.zeros_like(x), batch_size=GLOBAL, epochs=1, shuffle=False, verbose=0)
    w = bn.get_weights()
    c11["fit"] = {"read_mean": _arr(w[2]), "read_var": _arr(w[3]),
                  "variable_sharding": str(bn.moving_mean.value.sharding)}

    # a jitted training-mode call on the batch sharded over both devices
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.BatchNormalization()])
    xs = keras.distribution.distribute_tensor(x, distribution.get_data_layout(x.shape))
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    y, new_ntv = jax.jit(lambda t, n, inp: model.stateless_call(t, n, inp, training=True))(tv, ntv, xs)
    shards = sorted((s.index[0].start or 0, np.asarray(s.data).shape[0]) for s in xs.addressable_shards)
    names = [v.path for v in model.non_trainable_variables]
    c11["call"] = {"outputs": _arr(y), "input_shards": [list(s) for s in shards],
                   "input_devices": len(xs.sharding.device_set), "output_devices": len(y.sharding.device_set),
                   "moving_mean": _arr(new_ntv[[i for i, n in enumerate(names) if "moving_mean" in n][0]]),
                   "moving_var": _arr(new_ntv[[i for i, n in enumerate(names) if "moving_variance" in n][0]])}
    c11["momentum"], c11["epsilon"] = momentum, epsilon
    out["c11"] = c11
    out["child_seconds"] = round(time.time() - t0, 1)
    return out


def main(argv: list[str]) -> int:
    group, path = argv[1], argv[2]
    data = {"tf": _tf_child, "jax": _jax_child}[group](os.path.dirname(os.path.abspath(path)))
    with open(path, "w") as f:
        json.dump(data, f)  # NaN stays NaN (json's default allow_nan)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
