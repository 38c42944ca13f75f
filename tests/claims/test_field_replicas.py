"""BN across two replicas (C04, C07, C11): MirroredStrategy over two logical CPUs, Keras 3 JAX DataParallel
over two host devices, and empty batches.

The multi-replica experiments run in child processes (bnspec.subjects.replicas: `python -m bnspec.subjects.replicas tf|jax`
with this process' flavour), because the devices must exist before TensorFlow or JAX initialises. The
children only measure and return numbers; every comparison here is against the float64 reference
(bnspec.reference) with its float32 bound, or bitwise (verdict.equal), and a non-finite measurement is an
error unless the claim is about non-finite values (C07 counts them). This process needs no TensorFlow for
those cases; the TensorFlow cases skip on the jax and torch backends (they are about tf.distribute), the
JAX DataParallel case always runs in a KERAS_BACKEND=jax child (Keras 3 only). C07's direct call runs
here, on whichever backend is under test.

Without pytest-xdist the module starts the children it will need (tf, jax) at once, so that they run
side by side; each child runs once per process (bnspec.subjects.replicas.results is cached).
"""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from bnspec import reference
from bnspec.flavours import FLAVOUR_HINT, distribution_version
from bnspec.measure.backend import to_numpy
from bnspec.subjects import replicas
from tests.claims import _kit as probes
from bnspec.reference import U32


# --------------------------------------------------------------------------- helpers

FEATURES = replicas.FEATURES
HALF = replicas.HALF
# what a refusal of an empty batch would say (C07's direct call): its size, 0, or that it is empty
EMPTY_BATCH_WORDS = re.compile(r"empty|zero|\b0\b|no (examples|samples|elements)", re.IGNORECASE)


# which children, and starting them

def _group_of(item) -> str | None:
    """The child group a test case of this module needs (None: none)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    name = item.originalname if hasattr(item, "originalname") else item.name
    if name == "test_empty_batch_call":
        return None
    if params.get("mode") == "jax_dataparallel":
        return "jax"
    return "tf"


def _runnable(run, group: str) -> str | None:
    """Why the group cannot run for `run` (a skip reason), or None."""
    if distribution_version(run.flavour) is None:
        return f"flavour {run.flavour!r} is not installed: {FLAVOUR_HINT[run.flavour]}"
    if group == "tf":
        if run.backend != "tensorflow":
            return ("tf.distribute.MirroredStrategy: TensorFlow-specific (this run's backend is "
                    f"{run.backend}; run with KERAS_BACKEND=tensorflow or tf_keras)")
        return None
    if run.family != "keras3":
        return "keras.distribution.DataParallel is Keras 3 only"
    if importlib.util.find_spec("jax") is None:
        return "JAX DataParallel: jax is not installed in this environment"
    return None


@pytest.fixture(scope="session", autouse=True)
def _start_children(run, request):
    """Start every child this module's selected cases need, side by side and before this process imports
    Keras for the direct call (session scope and autouse: set up before the session's `keras` fixture).
    Not under xdist, where each worker runs only some cases and starts a child when a case needs it."""
    if hasattr(request.config, "workerinput"):
        return
    here = Path(__file__).resolve()
    mine = [it for it in request.session.items if Path(str(it.path)).resolve() == here]
    for group in sorted({g for g in map(_group_of, mine) if g}):
        if _runnable(run, group) is None:
            replicas.start(run, group)


def _results(run, group: str) -> dict:
    reason = _runnable(run, group)
    if reason:
        pytest.skip(reason)
    return replicas.results(run, group)


def _copies_as_designed(verdict, name: str, copies_m, copies_v, refs, why: str) -> str:
    """The design check of a two-replica step: replica i's copy of the moving (mean, var) is the update
    with its own shard, refs[i] = probes.ema_step(shard i, ...) -> "replica-local"; or, where the variable averages
    the replicas' writes (a MirroredVariable with aggregation MEAN, as Keras 3.7 made them), every copy is
    the average of those updates -> "averaged on write". Neither is an error of the experiment (pytest.fail),
    not a verdict. The average's bound: the mean of the updates' bounds plus the all-reduce's sum, which
    rounds once (u(|a|+|b|)); the halving is exact."""
    avg = [np.mean([r[k] for r in refs], axis=0) for k in range(2)]
    b_avg = [np.mean([r[k + 2] for r in refs], axis=0) + U32 * np.sum([np.abs(r[k]) for r in refs], axis=0)
             for k in range(2)]
    designs = {"replica-local": ("_vs_design", refs),
               "averaged on write": ("_vs_averaged_design", [(avg[0], avg[1], b_avg[0], b_avg[1])] * len(refs))}
    local_checks = []
    for design, (suffix, expected) in designs.items():
        ok = True
        for i, (m_ref, v_ref, b_m, b_v) in enumerate(expected):
            for stat, copy, ref, bound in (("mean", copies_m[i], m_ref, b_m), ("var", copies_v[i], v_ref, b_v)):
                check = f"{name.format(i=i)}_{stat}{suffix}"
                ok &= verdict.within(check, copy - ref, bound)
                if design == "replica-local":
                    local_checks.append(check)
        if ok:
            verdict.record(copies=design)
            return design
    worst = max(local_checks, key=lambda k: probes.ratio(verdict, k))
    pytest.fail(f"{verdict.claim.id}: the experiment did not run as designed ({why}): the copies are neither "
                f"each replica's own update nor their average; {worst} = {probes.value_text(verdict, worst, '.3g')} > "
                f"bound {probes.bound_text(verdict, worst, '.3g')}", pytrace=False)


def _c11_measurement(run, verdict, mode):
    """(x0, x1, outputs (16, F), {name: (mean, var)} of every copy/read of the moving statistics, momentum, eps)."""
    if mode == "jax_dataparallel":
        d = _results(run, "jax")
        c = d["c11"]
        call = c["call"]
        # the sharded call must really be split 8 + 8 over two devices, else this case measures one device
        if not (d["replicas"] == 2 and call["input_devices"] == 2 and call["input_shards"] == [[0, HALF], [HALF, HALF]]):
            pytest.fail(f"C11: the JAX batch was not sharded over two devices: {d['devices']}, "
                        f"shards {call['input_shards']}", pytrace=False)
        verdict.record(child_seconds=d["child_seconds"], replicas=d["replicas"], input_shards=call["input_shards"],
                       variable_sharding=c["fit"]["variable_sharding"])
        stats = {"fit_get_weights": (c["fit"]["read_mean"], c["fit"]["read_var"]),
                 "sharded_call_state": (call["moving_mean"], call["moving_var"])}
        return probes.f64(c["x0"]), probes.f64(c["x1"]), probes.f64(call["outputs"]), stats, c["momentum"], c["epsilon"]
    d = _results(run, "tf")
    c = d["c11"]
    r = c[f"sync={mode == 'tf_sync'}"]
    verdict.record(child_seconds=d["child_seconds"], replicas=d["replicas"], variable=r["variable"])
    stats = {f"replica{i}_copy": (r["local_mean"][i], r["local_var"][i]) for i in range(2)}
    stats["get_weights"] = (r["read_mean"], r["read_var"])
    outputs = np.concatenate([probes.f64(o) for o in r["outputs"]])
    return probes.f64(c["x0"]), probes.f64(c["x1"]), outputs, stats, r["momentum"], r["epsilon"]


# --------------------------------------------------------------------------- C07: the direct call
# In this process, on the backend under test; first in the module, so that Keras' import here overlaps the children.


@pytest.mark.claim("C07")
@pytest.mark.parametrize("rank", (2, 4))
def test_empty_batch_call(verdict, keras, rank):
    """Moving statistics after a training call on 0 examples: bitwise unchanged and finite, or NaN (counted)."""
    shape = (0, FEATURES) if rank == 2 else (0, 2, 2, FEATURES)
    bn = keras.layers.BatchNormalization()
    bn.build((None,) + shape[1:])
    # finite, non-default statistics, so that "unchanged" cannot be a re-initialisation
    start = [np.full(FEATURES, v, np.float32) for v in (1.5, -0.5, 0.25, 2.0)]  # gamma, beta, mean, variance
    bn.set_weights(start)
    raised = None
    try:
        bn(np.zeros(shape, np.float32), training=True)
    except ValueError as exc:  # a refusal of the empty batch would keep the statistics: recorded, then measured
        # only a refusal that names the empty batch counts; any other exception is an error of the test
        if not verdict.refusal("call_refusal", exc, ValueError, (EMPTY_BATCH_WORDS,)):
            raise
        raised = f"{type(exc).__name__}: {str(exc)[:200]}"
    verdict.record(call_raised=raised or "no")
    after = probes.moving_state([bn])
    bad = verdict.count_nonfinite("moving_nonfinite", after)
    ok = bad == 0 and verdict.equal("moving_unchanged", np.concatenate(start[2:]), after)
    # what the poisoned statistics do next: inference on real data
    y = to_numpy(bn(np.ones((2,) + shape[1:], np.float32), training=False))
    verdict.count_nonfinite("inference_nonfinite_after", y)
    verdict.mechanism("nan_moving_statistics", bad == after.size,
                      f"{bad} of {after.size} moving-statistics elements non-finite after the empty call")
    verdict.conclude(ok, f"rank {rank}: {bad} of {after.size} moving-statistics elements non-finite after a "
                         f"training call on 0 examples (call raised: {raised or 'no'})")


# --------------------------------------------------------------------------- C11


@pytest.mark.claim("C11")
@pytest.mark.parametrize("mode", ("tf_plain", "tf_sync", "jax_dataparallel"))
def test_two_replicas_normalise_like_one_device(verdict, run, mode):
    """Outputs and moving statistics of a step on two replicas (8 + 8 examples) vs BN on the global batch of 16."""
    x0, x1, y, stats, momentum, eps = _c11_measurement(run, verdict, mode)
    x = np.concatenate([x0, x1])
    one, zero = np.ones(FEATURES), np.zeros(FEATURES)
    # the claim: single-device BN on the global batch of 16 (gamma 1, beta 0 at the step)
    y_ref, mean_g, var_g = reference.bn_train(x, one, zero, eps)
    bound = reference.bn_bound(x, one, zero, mean_g, var_g, eps, n_reduce=len(x))
    # the alternative: each half normalised with its own statistics (what plain replicas do)
    halves = [reference.bn_train(h, one, zero, eps) for h in (x0, x1)]
    y_alt = np.concatenate([h[0] for h in halves])
    verdict.power("per_replica_alternative", y_alt - y_ref, bound)

    ok = verdict.within("outputs_vs_global_batch", y - y_ref, bound)
    m_ref, v_ref, b_m, b_v = probes.ema_step(x, 0.0, 1.0, momentum)  # fresh layer: moving mean 0, variance 1
    for name, (m, v) in stats.items():
        ok &= verdict.within(f"{name}_moving_mean_vs_global", probes.f64(m) - m_ref, b_m)
        ok &= verdict.within(f"{name}_moving_var_vs_global", probes.f64(v) - v_ref, b_v)

    # mechanism of the per-replica refutation: each half equals BN with its own half's statistics
    own = []
    for i, (h, (yh, mh, vh)) in enumerate(zip((x0, x1), halves)):
        own.append(verdict.within(f"outputs_half{i}_vs_own_statistics", y[i * HALF:(i + 1) * HALF] - yh,
                                  reference.bn_bound(h, one, zero, mh, vh, eps, n_reduce=HALF)))
    verdict.mechanism("per_replica_statistics", all(own),
                      f"each replica's half within the bound of BN on that half alone: {own}")
    own_ratios = [round(probes.ratio(verdict, f"outputs_half{i}_vs_own_statistics"), 3) for i in range(2)]
    verdict.conclude(ok, f"{mode}: max |y - global-batch BN| = "
                         f"{probes.within_text(verdict, 'outputs_vs_global_batch', '.3g', '.2g')}; halves vs their own "
                         f"statistics {own_ratios} x bound")


# --------------------------------------------------------------------------- C04


@pytest.mark.claim("C04")
@pytest.mark.parametrize("synchronized", (False, True))
@pytest.mark.parametrize("read", ("saved", "served"))
def test_replica_training_saves_and_serves_one_average(run, verdict, read, synchronized):
    """After a step on two replicas: the saved statistics vs the copies' average, or each replica's served rows."""
    d = _results(run, "tf")
    c = d["c04"]
    r = c[f"sync={synchronized}"]
    verdict.record(child_seconds=d["child_seconds"], variable=r["variable"])
    x0, x1, xq = probes.f64(c["x0"]), probes.f64(c["x1"]), probes.f64(c["query"])
    momentum, eps = r["momentum"], r["epsilon"]
    copies_m, copies_v = probes.f64(r["local_mean"]), probes.f64(r["local_var"])

    # the design: after one step with momentum 0 replica r's copy holds half r's batch statistics
    # (synchronized: the global batch's), within the update's float32 bound
    parts = (x0, x1) if not synchronized else (np.concatenate([x0, x1]),) * 2
    local = [probes.ema_step(p, 0.0, 1.0, momentum) for p in parts]
    _copies_as_designed(verdict, "replica{i}_copy", copies_m, copies_v, local,
                        f"replica i holds rows {HALF}i..{HALF}i+{HALF - 1}")
    # the no-synchronisation statistics of each half: the alternative both cases must be able to tell apart
    alt = [probes.ema_step(p, 0.0, 1.0, momentum) for p in (x0, x1)]

    if read == "saved":
        # the claim: the read is the average of the two float32 copies: their sum rounds once (<= u(|a|+|b|)),
        # the halving is exact; we allow u(|a|+|b|) on the average (two roundings' worth)
        avg_m, avg_v = copies_m.mean(axis=0), copies_v.mean(axis=0)
        b_avg_m, b_avg_v = U32 * np.abs(copies_m).sum(axis=0), U32 * np.abs(copies_v).sum(axis=0)
        # the bound sums the claim's (the average's) and the alternative's own (one replica's update) bounds
        verdict.power("primary_replica_alternative_mean", alt[0][0] - avg_m, b_avg_m + alt[0][2], measured=True)
        ok = True
        reads = {"get_weights": (r["read_mean"], r["read_var"]), "save_load": (r["saved_mean"], r["saved_var"])}
        for name, (m, v) in reads.items():
            ok &= verdict.within(f"{name}_mean_vs_replica_average", probes.f64(m) - avg_m, b_avg_m)
            ok &= verdict.within(f"{name}_var_vs_replica_average", probes.f64(v) - avg_v, b_avg_v)
        # mechanism of the Keras 3 refutation: what is read and saved is replica 0's copy, bitwise
        same = []
        for name, (m, v) in reads.items():
            same.append(verdict.equal(f"{name}_mean_is_replica0_copy", probes.f64(m), copies_m[0]))
            same.append(verdict.equal(f"{name}_var_is_replica0_copy", probes.f64(v), copies_v[0]))
        differ = not np.array_equal(copies_m[0], copies_m[1])
        verdict.mechanism("primary_copy_saved", all(same) and differ,
                          f"get_weights/save equal replica 0's copy bitwise: {same}; copies differ: {differ}")
        verdict.conclude(ok, f"replica copies' mean {np.round(copies_m[:, 0], 4).tolist()} (feature 0); saved "
                             f"{round(float(probes.f64(r['saved_mean'])[0]), 4)}, off the average by "
                             f"{probes.within_text(verdict, 'save_load_mean_vs_replica_average', '.3g', '.2g')}")
        return

    # served: the same 8 queries as rows 0-7 (replica 0) and 8-15 (replica 1) of one global batch
    gamma, beta = probes.f64(r["gamma"]), probes.f64(r["beta"])
    served = probes.f64(r["served"])
    if served.shape != (2 * HALF,) + xq.shape[1:]:
        pytest.fail(f"model.predict under the strategy returned shape {served.shape}, not {(2 * HALF,) + xq.shape[1:]}: "
                    "there is no served output to compare")
    mean_s, var_s = probes.f64(r["read_mean"]), probes.f64(r["read_var"])  # what the saved model normalises with
    ref = reference.bn_inference(xq, gamma, beta, mean_s, var_s, eps)
    bound = reference.bn_bound(xq, gamma, beta, mean_s, var_s, eps)
    # alternative: each replica serving with its own half's statistics
    alt_rows = [reference.bn_inference(xq, gamma, beta, a[0], a[1], eps) for a in alt]
    verdict.power("per_replica_serving_alternative", np.concatenate(alt_rows) - np.concatenate([ref, ref]),
                  np.concatenate([bound, bound]))
    ok = True
    for i in range(2):
        ok &= verdict.within(f"served_rows_replica{i}_vs_saved_model", served[i * HALF:(i + 1) * HALF] - ref, bound)
    verdict.record(served_halves_max_difference=float(np.max(np.abs(served[:HALF] - served[HALF:]))))
    # mechanism of the refutation: each replica's rows are inference with that replica's own copy
    own = []
    for i in range(2):
        ref_i = reference.bn_inference(xq, gamma, beta, copies_m[i], copies_v[i], eps)
        own.append(verdict.within(f"served_rows_replica{i}_vs_own_copy", served[i * HALF:(i + 1) * HALF] - ref_i,
                                  reference.bn_bound(xq, gamma, beta, copies_m[i], copies_v[i], eps)))
    differ = not np.array_equal(copies_m, copies_m[::-1])
    verdict.mechanism("replica_local_copies", all(own) and differ,
                      f"each replica's rows within the bound of inference with its own copy: {own}; copies differ: {differ}")
    # mechanism of the Keras < 3.5 refutation: the replicas' gamma and beta differ too (each replica applied
    # its own gradient, not the all-reduced one), and each replica's rows are inference with all four of its
    # own copies
    copies_g, copies_b = probes.f64(r["local_gamma"]), probes.f64(r["local_beta"])
    trainables_differ = not (np.array_equal(copies_g[0], copies_g[1]) and np.array_equal(copies_b[0], copies_b[1]))
    verdict.record(replica_gamma_max_difference=float(np.max(np.abs(copies_g[0] - copies_g[1]))),
                   replica_beta_max_difference=float(np.max(np.abs(copies_b[0] - copies_b[1]))))
    own_all = []
    for i in range(2):
        args = (copies_g[i], copies_b[i], copies_m[i], copies_v[i], eps)
        own_all.append(verdict.within(f"served_rows_replica{i}_vs_own_weights",
                                      served[i * HALF:(i + 1) * HALF] - reference.bn_inference(xq, *args),
                                      reference.bn_bound(xq, *args)))
    verdict.mechanism("replica_local_trainables", all(own_all) and trainables_differ,
                      f"each replica's rows within the bound of inference with its own gamma, beta and moving "
                      f"statistics: {own_all}; gamma/beta copies differ: {trainables_differ}")
    verdict.conclude(ok, f"the same query served by replica 0 and 1 differs by up to "
                         f"{probes.value_text(verdict, 'served_halves_max_difference', '.3g')}; vs the saved model: "
                         f"{probes.ratio_text(verdict, 'served_rows_replica0_vs_saved_model')} and "
                         f"{probes.ratio_text(verdict, 'served_rows_replica1_vs_saved_model')} x bound")


# --------------------------------------------------------------------------- C07: the empty replica shard


@pytest.mark.claim("C07")
@pytest.mark.parametrize("synchronized", (False, True))
def test_empty_replica_shard(run, verdict, synchronized):
    """After a partial batch leaving one replica's shard empty: non-finite statistics, weights, outputs, loss."""
    d = _results(run, "tf")
    c = d["c07"]
    r = c[f"sync={synchronized}"]
    x = probes.f64(c["x"])
    momentum = r["momentum"]
    steps = r["steps"]  # every replica's copy before fit and after each of its two batches
    if len(steps) != 3:
        pytest.fail(f"C07: expected 2 fit() batches (17 examples, global batch 16), recorded {len(steps) - 1}",
                    pytrace=False)
    verdict.record(child_seconds=d["child_seconds"])
    # the design: batch 0 gives replica r rows 8r..8r+7 (synchronized: every replica the 16 rows' statistics)
    init_m, init_v = probes.f64(steps[0]["mean"]), probes.f64(steps[0]["var"])
    step1_m, step1_v = probes.f64(steps[1]["mean"]), probes.f64(steps[1]["var"])
    refs = [probes.ema_step(x[:2 * HALF] if synchronized else x[i * HALF:(i + 1) * HALF], init_m[i], init_v[i], momentum)
            for i in range(2)]
    _copies_as_designed(verdict, "batch0_replica{i}", step1_m, step1_v, refs, "replica i's first shard")

    # batch 1 holds the 17th example only: replica 0 gets it, replica 1 an empty shard
    step2_m, step2_v = probes.f64(steps[2]["mean"]), probes.f64(steps[2]["var"])
    bad_copy = [verdict.count_nonfinite(f"replica{i}_moving_nonfinite", np.concatenate([step2_m[i], step2_v[i]]))
                for i in range(2)]
    bad_read = verdict.count_nonfinite("get_weights_moving_nonfinite", np.concatenate([r["read_mean"], r["read_var"]]))
    bad_weights = verdict.count_nonfinite("gamma_beta_nonfinite", np.concatenate([r["gamma"], r["beta"]]))
    bad_served = verdict.count_nonfinite("served_nonfinite", r["served"])
    bad_loss = verdict.count_nonfinite("loss_nonfinite", [s["loss"] for s in steps[1:]])
    if not bad_loss:
        verdict.record(step_losses=[s["loss"] for s in steps[1:]])
    ok = not (sum(bad_copy) or bad_read or bad_weights or bad_served)
    if ok:  # finite: the empty replica's copy must be kept (local statistics) or take the global batch's update
        kept = verdict.equal("empty_replica_copy_kept", np.concatenate([step1_m[1], step1_v[1]]),
                             np.concatenate([step2_m[1], step2_v[1]]))
        m_ref, v_ref, b_m, b_v = probes.ema_step(x[2 * HALF:], step1_m[1], step1_v[1], momentum)
        global_update = (verdict.within("empty_replica_mean_vs_global_update", step2_m[1] - m_ref, b_m)
                         & verdict.within("empty_replica_var_vs_global_update", step2_v[1] - v_ref, b_v))
        ok = kept or global_update
    verdict.mechanism("nan_moving_statistics", bad_copy[1] == 2 * FEATURES and bad_copy[0] == 0,
                      f"non-finite elements in the moving statistics after the partial batch: replica 0 "
                      f"{bad_copy[0]}, replica 1 (empty shard) {bad_copy[1]} of {2 * FEATURES}")
    # Keras 3.7 (moving statistics averaged on write): the empty replica's NaN is all-reduced into every copy
    verdict.mechanism("nan_averaged_into_every_copy", bad_copy == [2 * FEATURES] * 2 and bad_read == 2 * FEATURES,
                      f"non-finite elements in every replica's copy {bad_copy} and in get_weights() {bad_read} "
                      f"of {2 * FEATURES}")
    verdict.conclude(ok, f"after the partial batch: non-finite moving statistics per replica {bad_copy}, in "
                         f"get_weights() {bad_read}, gamma/beta {bad_weights}, served predictions {bad_served} of "
                         f"{np.size(r['served'])}, loss {bad_loss}")
