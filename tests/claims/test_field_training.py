"""Field traps: training loops and wrappers (C29-C33): TimeDistributed(BN), gradient accumulation, the
optimizer's weight EMA, zero sample weights and JAX's stateless_call loops.

Every test runs in this process on the backend under test (KERAS_BACKEND=tensorflow|jax|torch, or tf_keras)
through keras.ops, numpy and bnspec.measure.backend. C30 is not applicable where the optimizer has no
gradient_accumulation_steps (tf_keras), C33 skips on every backend but JAX (stateless_call with jax.grad is
JAX's training loop). Comparisons are against the numpy float64 reference (bnspec.reference) with float32
bounds derived beside each test (u = 2^-24, U32), or bitwise (verdict.equal). Each claim is stated as what a
user assumes; the alternative a refutation names is computed in float64 too and must lie outside the claim's
bound (verdict.power), and the refutation must be confirmed by its mechanism's own comparison.

Helpers kept here (not in _kit.py): `_precondition` (as in test_field_backends), `_ema_chain` (the moving
statistics after a stream of training-mode batches with their accumulated float32 bounds, as C19 derives them),
`_dense_stats` (the batch statistics of a float32 Dense layer's output with C03's propagated bounds) and
`_optimizer` (an optimizer whose argument this Keras may not know: not applicable then)."""

import numpy as np
import pytest

from bnspec import reference
from bnspec.measure.verdict import not_applicable
from bnspec.reference import U32
from tests.claims import _kit as probes


# --------------------------------------------------------------------------- helpers


def _precondition(verdict, ok: bool, why: str) -> None:
    """A check of the experiment's design; failing it is an error of the experiment, not a verdict."""
    if not ok:
        pytest.fail(f"{verdict.claim.id}: the experiment did not run as designed: {why}", pytrace=False)


def _ema_chain(batches, mean, var, momentum: float):
    """Moving (mean, var) after training-mode calls on `batches` (features last) from (mean, var), in float64,
    and their float32 bounds: each update adds reference.ema_bounds (its own roundings and the batch
    statistics' reduction error), and an error carried in from earlier updates is multiplied by momentum."""
    b_mean = b_var = 0.0
    for x in batches:
        bm, bv = reference.ema_bounds(x, mean, var, momentum)
        b_mean, b_var = b_mean * momentum + bm, b_var * momentum + bv
        m, v = reference.batch_stats(x)
        mean, var = reference.ema(mean, m, momentum), reference.ema(var, v, momentum)
    return mean, var, b_mean, b_var


def _dense_stats(x, kernel, bias):
    """Batch mean and biased variance of h = x @ kernel + bias (float64) and bounds on how far the statistics
    of the float32 layer's output, stored by a momentum-0 BN update from (0, 1), can be from them (C03's
    derivation): a length-k dot product and the bias add round at most k + 1 times, |dh| <= (k+1) u (|x| @ |W|
    + |b|) (Higham 3.1); the statistics of h + d move by <= mean(dh) (mean) and 2 mean(|h - mean| dh) +
    mean(dh^2) (variance); the update's own rounding is reference.ema_bounds."""
    x, kernel, bias = (np.asarray(a, np.float64) for a in (x, kernel, bias))
    k = kernel.shape[0]
    h = x @ kernel + bias
    dh = (k + 1) * U32 * (np.abs(x) @ np.abs(kernel) + np.abs(bias))
    mean, var = reference.batch_stats(h)
    b_mean, b_var = reference.ema_bounds(h, 0.0, 1.0, 0.0)
    b_mean = b_mean + dh.mean(axis=0)
    b_var = b_var + 2 * (np.abs(h - mean) * dh).mean(axis=0) + (dh**2).mean(axis=0)
    return h, mean, var, b_mean, b_var


def _optimizer(keras, name: str, **kwargs):
    """keras.optimizers.<name>(**kwargs); a keyword this Keras' optimizer does not know (e.g.
    gradient_accumulation_steps in tf_keras) makes the case not applicable, not failed."""
    try:
        return getattr(keras.optimizers, name)(**kwargs)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        unknown = [k for k in kwargs if k in text]
        # Keras 3: "Argument(s) not recognized: {...}"; tf_keras: "... is not a valid argument, kwargs should be
        # empty ..."; Python: "unexpected keyword argument"
        if unknown and ("keyword" in text.lower() or "argument" in text.lower()):
            not_applicable(f"this Keras' optimizers have no {', '.join(unknown)} argument")
        raise


# --------------------------------------------------------------------------- C29


@pytest.mark.claim("C29")
@pytest.mark.parametrize("entry", ("call", "fit"))
def test_time_distributed_bn_normalises_batch_and_time(verdict, keras, rng, entry):
    """TimeDistributed(BN) on (B, T, F) with drifting steps: training output and moving statistics vs BN on the
    merged (B*T, F) axis (the claim) and vs BN called once per step (T statistics, T EMA updates)."""
    batch, steps, features, momentum = 16, 4, 3, 0.5
    drift = np.linspace(-6.0, 6.0, steps)  # the steps' means drift by 4 per step, features' spread 0.5..3
    x = (probes.feature_inputs(rng, (batch, steps, features), -1) + drift[None, :, None]).astype(np.float32)
    model = keras.Sequential([keras.Input((steps, features)),
                              keras.layers.TimeDistributed(keras.layers.BatchNormalization(momentum=momentum))])
    bn = model.layers[-1].layer
    probes.randomise_bn(bn, rng)
    s = probes.bn_state(bn)
    g, b, eps = s["gamma"], s["beta"], s["eps"]
    if entry == "call":
        y = probes.f64(model(x, training=True))
    else:  # one fit() step; SGD(0): gamma and beta stay, so the moving statistics are the only change
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
        model.fit(x, np.zeros_like(x), batch_size=batch, epochs=1, shuffle=False, verbose=0)
        y = None
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)

    # the claim: BN over the merged (B*T, F) axis: one set of batch statistics, one EMA update per call
    xm = x.reshape(-1, features)
    y_merged, m_mean, m_var = reference.bn_train(xm, g, b, eps)
    b_y_merged = reference.bn_bound(xm, g, b, m_mean, m_var, eps, n_reduce=batch * steps).reshape(x.shape)
    y_merged = y_merged.reshape(x.shape)
    mean_merged, var_merged, b_mean, b_var = _ema_chain([xm], s["mean"], s["var"], momentum)
    # the mechanism: BN called once per step: step t normalised with its own batch statistics, and T successive
    # EMA updates, step 0 first (the last step weighs (1 - momentum), the first (1 - momentum) momentum^(T-1))
    y_step = np.stack([reference.bn_train(x[:, t], g, b, eps)[0] for t in range(steps)], axis=1)
    b_y_step = np.stack([reference.bn_bound(x[:, t], g, b, *reference.batch_stats(x[:, t]), eps, n_reduce=batch)
                         for t in range(steps)], axis=1)
    mean_step, var_step, b_mean_step, b_var_step = _ema_chain([x[:, t] for t in range(steps)], s["mean"], s["var"],
                                                              momentum)

    ok = verdict.within("moving_mean_vs_merged", mm - mean_merged, b_mean)
    ok &= verdict.within("moving_var_vs_merged", mv - var_merged, b_var)
    verdict.power("per_step_moving_mean_alternative", mean_step - mean_merged, b_mean)
    per_step = verdict.within("moving_mean_vs_per_step_updates", mm - mean_step, b_mean_step)
    per_step &= verdict.within("moving_var_vs_per_step_updates", mv - var_step, b_var_step)
    if y is not None:
        ok &= verdict.within("output_vs_merged", y - y_merged, b_y_merged)
        verdict.power("per_step_output_alternative", y_step - y_merged, b_y_merged)
        per_step &= verdict.within("output_vs_per_step", y - y_step, b_y_step)
        # training output per step, gamma and beta undone: 0 for each step under per-step statistics
        verdict.record(train_step_means=((y - b) / g).mean(axis=(0, 2)))
    verdict.mechanism("per_step_statistics", per_step,
                      f"moving mean {probes.value_text(verdict, 'moving_mean_vs_per_step_updates', '.2g')} from "
                      f"{steps} successive EMA updates with the steps' statistics (bound "
                      f"{probes.bound_text(verdict, 'moving_mean_vs_per_step_updates', '.2g')})"
                      + ("" if y is None else f"; output {probes.ratio_text(verdict, 'output_vs_per_step', '.2g')} "
                                              "x the bound of per-step normalisation"))
    # inference after the step: every step normalised with the one shared moving statistic (gamma/beta undone)
    y_inf = probes.f64(model(x, training=False))
    verdict.record(inference_step_means=((y_inf - b) / g).mean(axis=(0, 2)), step_drift=drift,
                   momentum=momentum, effective_momentum_per_step_if_per_step=momentum**steps)
    verdict.conclude(ok, f"{entry}: moving mean {probes.ratio_text(verdict, 'moving_mean_vs_merged', '.3g')} x its "
                         "bound from one EMA update with the merged (B*T) statistics, "
                         f"{probes.ratio_text(verdict, 'moving_mean_vs_per_step_updates', '.2g')} x from {steps} "
                         "per-step updates"
                         + ("" if y is None else f"; output {probes.ratio_text(verdict, 'output_vs_merged', '.3g')} "
                                                 "x the merged bound"))


# --------------------------------------------------------------------------- C30


@pytest.mark.claim("C30")
def test_gradient_accumulation_is_one_large_batch_for_bn(verdict, keras, rng):
    """k = 4 micro-batches of 8 with gradient_accumulation_steps=4: moving statistics vs one EMA update with the
    32 examples' statistics (the claim) and vs 4 updates with each micro-batch's; the weights' schedule."""
    k, m, features, momentum = 4, 8, 3, 0.9
    # micro-batches whose means differ (by 3 per micro-batch): their statistics differ from the whole batch's
    x = (probes.feature_inputs(rng, (k * m, features), -1) + np.repeat(3.0 * np.arange(k), m)[:, None]).astype(
        np.float32)
    y = rng.normal(0, 1, (k * m, features)).astype(np.float32)
    opt = _optimizer(keras, "SGD", learning_rate=0.1, gradient_accumulation_steps=k)
    model = keras.Sequential([keras.Input((features,)), keras.layers.BatchNormalization(momentum=momentum)])
    bn = model.layers[-1]
    probes.randomise_bn(bn, rng)  # BN first: its inputs (and so its statistics) do not depend on the weights
    s = probes.bn_state(bn)
    model.compile(optimizer=opt, loss="mse")
    # the first k - 1 micro-batches, then the k-th (the optimizer's accumulators persist between fit() calls)
    model.fit(x[:(k - 1) * m], y[:(k - 1) * m], batch_size=m, epochs=1, shuffle=False, verbose=0)
    gb_partial = probes.flat([probes.f64(bn.gamma), probes.f64(bn.beta)])
    model.fit(x[(k - 1) * m:], y[(k - 1) * m:], batch_size=m, epochs=1, shuffle=False, verbose=0)
    gb_final = probes.flat([probes.f64(bn.gamma), probes.f64(bn.beta)])
    gb0 = probes.flat([s["gamma"], s["beta"]])
    accumulating = verdict.equal("gamma_beta_unchanged_after_k-1", gb0, gb_partial)
    stepped = not verdict.equal("gamma_beta_unchanged_after_k", gb0, gb_final)
    _precondition(verdict, accumulating and stepped,
                  f"gradient accumulation over {k} steps: gamma/beta unchanged after {k - 1} micro-batches: "
                  f"{accumulating}; changed after {k}: {stepped}")
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)

    # the claim: one update with all k*m examples (what fit(batch_size=k*m) does)
    mean_big, var_big, b_mean, b_var = _ema_chain([x], s["mean"], s["var"], momentum)
    # the mechanism: k updates, one per micro-batch
    micro = [x[i * m:(i + 1) * m] for i in range(k)]
    mean_mu, var_mu, b_mean_mu, b_var_mu = _ema_chain(micro, s["mean"], s["var"], momentum)
    ok = verdict.within("moving_mean_vs_one_large_batch", mm - mean_big, b_mean)
    ok &= verdict.within("moving_var_vs_one_large_batch", mv - var_big, b_var)
    verdict.power("per_microbatch_alternative", mean_mu - mean_big, b_mean)
    per_micro = verdict.within("moving_mean_vs_per_microbatch", mm - mean_mu, b_mean_mu)
    per_micro &= verdict.within("moving_var_vs_per_microbatch", mv - var_mu, b_var_mu)
    verdict.mechanism("per_microbatch_statistics", per_micro,
                      f"moving statistics {probes.ratio_text(verdict, 'moving_mean_vs_per_microbatch', '.2g')} (mean) "
                      f"and {probes.ratio_text(verdict, 'moving_var_vs_per_microbatch', '.2g')} (variance) x their "
                      f"bounds from {k} EMA updates with the micro-batches' statistics, while gamma/beta changed "
                      f"once, after micro-batch {k}")
    # how different each micro-batch's statistics are from the whole batch's (what each normalisation used)
    verdict.record(microbatch_means=[reference.batch_stats(b_)[0] for b_ in micro],
                   large_batch_mean=reference.batch_stats(x)[0], k=k, micro_batch=m, momentum=momentum)
    verdict.conclude(ok, f"k = {k} x {m}: moving mean "
                         f"{probes.value_text(verdict, 'moving_mean_vs_one_large_batch', '.3g')} from one update with the "
                         f"{k * m} examples' statistics "
                         f"({probes.ratio_text(verdict, 'moving_mean_vs_one_large_batch', '.3g')} x its bound), "
                         f"{probes.value_text(verdict, 'moving_mean_vs_per_microbatch', '.2g')} from {k} "
                         "per-micro-batch updates")


# --------------------------------------------------------------------------- C31


def _ema_run(keras, data, use_ema: bool, steps: int):
    """Dense(H) -> BN(momentum 0) -> tanh -> Dense(1) from fixed weights, trained by fit() for `steps` full-batch
    SGD steps (the data repeated, one epoch), learning rate 0.2 and 0 for the last step."""
    x, y, k0, b0, k1 = data
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(k0.shape[1]),
                              keras.layers.BatchNormalization(momentum=0.0), keras.layers.Activation("tanh"),
                              keras.layers.Dense(1)])
    dense, bn, out = model.layers[0], model.layers[1], model.layers[-1]
    dense.kernel.assign(k0)
    dense.bias.assign(b0)
    out.kernel.assign(k1)
    out.bias.assign(np.zeros(1, np.float32))
    # step i uses 0.2 for i <= steps - 2 and 0 for the last: w - 0*g is w bitwise, so the final raw weights are
    # those of the last forward pass, whose batch statistics (momentum 0) the moving statistics then hold
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([steps - 2], [0.2, 0.0])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, use_ema=use_ema, ema_momentum=0.99), loss="mse")
    n = len(x)
    model.fit(np.tile(x, (steps, 1)), np.tile(y, (steps, 1)), batch_size=n, epochs=1, shuffle=False, verbose=0)
    return model, dense, bn, out


@pytest.mark.claim("C31")
def test_ema_weights_keep_bn_statistics_consistent(verdict, keras, rng):
    """After fit() with use_ema=True: moving statistics vs the batch statistics of BN's inputs under the final
    (EMA) weights (the claim) and under the raw weights (a twin run without EMA)."""
    n, k, hidden, steps = 64, 4, 6, 20
    x = rng.normal(0, 1, (n, k)).astype(np.float32)
    y = (3 * np.sin(x @ rng.normal(0, 1, (k, 1))) + 1).astype(np.float32)
    data = (x, y, rng.normal(0, 0.5, (k, hidden)).astype(np.float32), np.zeros(hidden, np.float32),
            rng.normal(0, 0.5, (hidden, 1)).astype(np.float32))
    model, dense, bn, out = _ema_run(keras, data, True, steps)
    twin, t_dense, t_bn, _ = _ema_run(keras, data, False, steps)  # the same raw trajectory, no EMA
    w_ema, c_ema = probes.f64(dense.kernel), probes.f64(dense.bias)
    w_raw, c_raw = probes.f64(t_dense.kernel), probes.f64(t_dense.bias)
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)
    tm, tv = probes.f64(t_bn.moving_mean), probes.f64(t_bn.moving_variance)

    # the design (control): without EMA the moving statistics are the batch statistics under the final weights
    _, r_mean, r_var, rb_mean, rb_var = _dense_stats(x, w_raw, c_raw)
    control = verdict.within("control_no_ema_moving_mean", tm - r_mean, rb_mean)
    control &= verdict.within("control_no_ema_moving_var", tv - r_var, rb_var)
    _precondition(verdict, control, "without EMA the moving statistics should be the batch statistics of BN's "
                                    "inputs under the final weights (momentum 0, learning rate 0 in the last step)")
    # the claim: with EMA they describe the final (EMA) weights the same way
    h_ema, e_mean, e_var, eb_mean, eb_var = _dense_stats(x, w_ema, c_ema)
    ok = verdict.within("moving_mean_vs_final_weights", mm - e_mean, eb_mean)
    ok &= verdict.within("moving_var_vs_final_weights", mv - e_var, eb_var)
    verdict.power("raw_weights_alternative", r_var - e_var, eb_var)
    # mechanism: only the trainable weights were replaced: the moving statistics are those of the raw weights,
    # bitwise those of the twin run without EMA
    raw = verdict.within("moving_mean_vs_raw_weights", mm - r_mean, rb_mean)
    raw &= verdict.within("moving_var_vs_raw_weights", mv - r_var, rb_var)
    swapped = not verdict.equal("kernel_equal_twin_without_ema", w_ema, w_raw)
    verdict.mechanism("trainable_only_averaged", raw and swapped,
                      f"moving statistics within the bound of the raw weights' batch statistics: {raw}; kernel "
                      f"replaced by its average: {swapped}")
    # supporting evidence, not required (two runs need not round alike on every device): bitwise the twin's
    verdict.equal("moving_stats_equal_twin_without_ema", probes.flat([mm, mv]), probes.flat([tm, tv]))
    # what it costs: |log(data variance / moving variance)| per feature, and the MSE of the final model with the
    # stored statistics vs with statistics re-estimated under its own weights (float64 forward)
    layers = probes.mlp_reference_layers(model)
    pred_stale = reference.mlp_inference(x, layers)[0]
    layers[1] = dict(layers[1], mean=e_mean, var=e_var)
    pred_fresh = reference.mlp_inference(x, layers)[0]
    twin_pred = reference.mlp_inference(x, probes.mlp_reference_layers(twin))[0]
    verdict.record(max_abs_log_var_ratio_ema=float(np.max(np.abs(np.log(e_var / mv)))),
                   max_abs_log_var_ratio_no_ema=float(np.max(np.abs(np.log(r_var / tv)))),
                   mse_ema_stored_statistics=float(np.mean((pred_stale - y) ** 2)),
                   mse_ema_reestimated_statistics=float(np.mean((pred_fresh - y) ** 2)),
                   mse_no_ema=float(np.mean((twin_pred - y) ** 2)), steps=steps, ema_momentum=0.99)
    verdict.conclude(ok, f"{steps} steps, EMA 0.99: moving variance "
                         f"{probes.ratio_text(verdict, 'moving_var_vs_final_weights', '.3g')} x its bound from the "
                         f"final weights' batch variance (max |log ratio| "
                         f"{verdict.evidence['max_abs_log_var_ratio_ema']:.3g}; without EMA "
                         f"{verdict.evidence['max_abs_log_var_ratio_no_ema']:.2g}); MSE "
                         f"{verdict.evidence['mse_ema_stored_statistics']:.3g} with the stored statistics, "
                         f"{verdict.evidence['mse_ema_reestimated_statistics']:.3g} re-estimated")


# --------------------------------------------------------------------------- C32


@pytest.mark.claim("C32")
@pytest.mark.parametrize("weighting", ("sample_weight", "sample_weight_and_mask"))
def test_zero_weight_rows_stay_out_of_bn_statistics(verdict, keras, rng, weighting):
    """A batch padded with zero rows of sample_weight 0 (half of it), one fit() step with momentum 0: moving
    statistics vs those of the weighted rows (the claim) and of every row; with the padding also as BN's mask."""
    real, pad, features = 16, 16, 3
    x_real = (5.0 + probes.feature_inputs(rng, (real, features), -1)).astype(np.float32)  # mean ~5, far from 0
    x = np.concatenate([x_real, np.zeros((pad, features), np.float32)])
    w = np.concatenate([np.ones(real), np.zeros(pad)]).astype(np.float32)
    y = rng.normal(0, 1, x.shape).astype(np.float32)
    bn = keras.layers.BatchNormalization(momentum=0.0)
    inp = keras.Input((features,))
    if weighting == "sample_weight":
        model, inputs = keras.Model(inp, bn(inp)), x
    else:  # the fix: the same rows given to BN as its mask (True = a real row)
        keep = keras.Input((), dtype="bool")
        model, inputs = keras.Model([inp, keep], bn(inp, mask=keep)), [x, w > 0]
    probes.randomise_bn(bn, rng)
    s = probes.bn_state(bn)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    hist = model.fit(inputs, y, sample_weight=w, batch_size=real + pad, epochs=1, shuffle=False, verbose=0)
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)

    # the claim: the statistics of the weighted rows only. Bounds: reference.ema_bounds of those rows, scaled by
    # (real + pad) / real because a masked reduction runs over all rows (the padded ones add exact zeros, but a
    # bound per element count is what we have); plus Keras' masked moments divide by count + 1e-7 (a relative
    # 1e-7 / count on mean and variance)
    r_mean, r_var = reference.batch_stats(x_real)
    b_mean, b_var = (b_ * (real + pad) / real for b_ in reference.ema_bounds(x_real, s["mean"], s["var"], 0.0))
    b_mean, b_var = b_mean + np.abs(r_mean) * 1e-7 / real, b_var + r_var * 1e-7 / real
    ok = verdict.within("moving_mean_vs_weighted_rows", mm - r_mean, b_mean)
    ok &= verdict.within("moving_var_vs_weighted_rows", mv - r_var, b_var)
    # the mechanism: every row counted, padding included
    a_mean, a_var = reference.batch_stats(x)
    ab_mean, ab_var = reference.ema_bounds(x, s["mean"], s["var"], 0.0)
    verdict.power("all_rows_alternative", a_mean - r_mean, b_mean)
    counted = verdict.within("moving_mean_vs_all_rows", mm - a_mean, ab_mean)
    counted &= verdict.within("moving_var_vs_all_rows", mv - a_var, ab_var)
    verdict.mechanism("padded_rows_counted", counted,
                      f"moving statistics {probes.ratio_text(verdict, 'moving_mean_vs_all_rows', '.2g')} (mean) and "
                      f"{probes.ratio_text(verdict, 'moving_var_vs_all_rows', '.2g')} (variance) x their bounds from "
                      f"the statistics of all {real + pad} rows, the {pad} zero-weight rows included")
    verdict.record(fit_loss=float(hist.history["loss"][0]), padded_fraction=pad / (real + pad),
                   weighted_rows_mean=r_mean, all_rows_mean=a_mean, moving_mean=mm)
    verdict.conclude(ok, f"{weighting}: moving mean {np.round(mm, 3).tolist()} vs the weighted rows' "
                         f"{np.round(r_mean, 3).tolist()} "
                         f"({probes.ratio_text(verdict, 'moving_mean_vs_weighted_rows', '.3g')} x the bound) and all rows' "
                         f"{np.round(a_mean, 3).tolist()}")


# --------------------------------------------------------------------------- C33


C33_VARIANTS = ("training_and_writeback", "no_training_arg", "no_writeback")


@pytest.mark.claim("C33")
@pytest.mark.parametrize("variant", C33_VARIANTS)
def test_stateless_call_loop_trains_bn(verdict, keras, backend_name, rng, variant):
    """A jitted JAX loop (stateless_call, jax.value_and_grad, optimizer.stateless_apply) over 3 batches:
    the model's moving statistics afterwards vs 3 EMA updates with the batches' statistics."""
    if backend_name != "jax":
        pytest.skip(f"JAX-specific: a stateless_call + jax.grad training loop needs the JAX backend "
                    f"(this run's backend is {backend_name}); C03 covers fit() on every backend")
    import jax

    features, batch, momentum = 3, 16, 0.5
    xs = [(probes.feature_inputs(rng, (batch, features), -1)).astype(np.float32) for _ in range(3)]
    ys = [rng.normal(0, 1, (batch, 1)).astype(np.float32) for _ in range(3)]
    model = keras.Sequential([keras.Input((features,)), keras.layers.BatchNormalization(momentum=momentum),
                              keras.layers.Dense(1)])
    bn = model.layers[0]
    probes.randomise_bn(bn, rng)  # BN first: its statistics do not depend on the weights
    s = probes.bn_state(bn)
    opt = keras.optimizers.SGD(learning_rate=0.1)
    opt.build(model.trainable_variables)
    mse = keras.losses.MeanSquaredError()
    kwargs = {} if variant == "no_training_arg" else {"training": True}  # the trap: training left at its default

    def loss_fn(tv, ntv, xb, yb):
        pred, ntv = model.stateless_call(tv, ntv, xb, **kwargs)
        return mse(yb, pred), ntv

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def train_step(state, xb, yb):
        tv, ntv, ov = state
        (loss, ntv), grads = grad_fn(tv, ntv, xb, yb)
        tv, ov = opt.stateless_apply(ov, grads, tv)
        return loss, (tv, ntv, ov)

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in opt.variables])
    ntv0 = probes.flat([probes.f64(v) for v in state[1]])
    for xb, yb in zip(xs, ys):
        _, state = train_step(state, xb, yb)
    tv, ntv, _ = state
    for v, value in zip(model.trainable_variables, tv):
        v.assign(value)
    if variant != "no_writeback":  # the keras.io guide's last step: write the non-trainable state back
        for v, value in zip(model.non_trainable_variables, ntv):
            v.assign(value)
    paths = [probes.variable_name(v) for v in model.non_trainable_variables]
    loop = dict(zip(paths, (probes.f64(v) for v in ntv)))
    loop_mm, loop_mv = loop[probes.variable_name(bn.moving_mean)], loop[probes.variable_name(bn.moving_variance)]
    mm, mv = probes.f64(bn.moving_mean), probes.f64(bn.moving_variance)

    mean, var, b_mean, b_var = _ema_chain(xs, s["mean"], s["var"], momentum)
    ok = verdict.within("moving_mean_vs_3_updates", mm - mean, b_mean)
    ok &= verdict.within("moving_var_vs_3_updates", mv - var, b_var)
    verdict.power("unchanged_alternative", s["mean"] - mean, b_mean)
    # mechanisms: (no training=) stateless_call ran BN in inference mode: the loop's state is bitwise the state it
    # started from; (no write-back) the loop's state holds the 3 updates, the model's variables their initial values
    inference = verdict.equal("loop_state_unchanged", ntv0, probes.flat([probes.f64(v) for v in ntv]))
    verdict.mechanism("training_defaults_false", inference,
                      f"the non-trainable state returned after 3 steps is bitwise the initial one: {inference}")
    in_loop = verdict.within("loop_moving_mean_vs_3_updates", loop_mm - mean, b_mean)
    in_loop &= verdict.within("loop_moving_var_vs_3_updates", loop_mv - var, b_var)
    kept = verdict.equal("model_moving_unchanged", probes.flat([s["mean"], s["var"]]), probes.flat([mm, mv]))
    verdict.mechanism("state_not_written_back", in_loop and kept,
                      f"the loop's state holds the 3 updates: {in_loop}; the model's moving statistics are bitwise "
                      f"the initial ones: {kept}")
    verdict.conclude(ok, f"{variant}: moving mean {probes.value_text(verdict, 'moving_mean_vs_3_updates', '.3g')} "
                         f"from 3 EMA updates ({probes.ratio_text(verdict, 'moving_mean_vs_3_updates', '.3g')} x the "
                         "bound); "
                         f"loop state unchanged: {inference}")
