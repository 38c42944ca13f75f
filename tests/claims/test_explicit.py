"""ExplicitBatchNorm (bnspec.layers), the paper's BN written out with TensorFlow ops, against Keras'
BatchNormalization and the numpy float64 reference: forward, gradients, moving statistics,
population statistics (Algorithm 2), training, serialization."""

import numpy as np
import pytest

from bnspec import popstats, probes, reference

SHAPES = {  # name -> (input shape, axis)
    "60x100": ((60, 100), -1),
    "7x3": ((7, 3), -1),
    "1x100": ((1, 100), -1),
    "2x100": ((2, 100), -1),
    "nhwc_axis-1": ((8, 4, 4, 6), -1),
    "nchw_axis1": ((8, 6, 4, 4), 1),
}


@pytest.fixture(scope="module")
def layers_mod(keras):
    from bnspec import layers

    return layers


def _pair(keras, layers_mod, rng, shape, axis, **kwargs):
    """A Keras BN layer with randomised state and an ExplicitBatchNorm holding the same weights."""
    features = shape[axis]
    k = probes.make_bn(keras, features, rng, input_shape=(None,) + shape[1:], axis=axis, **kwargs)
    e = layers_mod.ExplicitBatchNorm(axis=axis, **kwargs)
    e.build((None,) + shape[1:])
    e.set_weights(k.get_weights())
    return k, e


def _x(rng, shape, axis):
    b = [1] * len(shape)
    b[axis] = shape[axis]
    return (rng.normal(0, 1, shape) * rng.uniform(0.5, 3, b) + rng.normal(0, 2, b)).astype(np.float32)


@pytest.mark.claim("E01")
@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
@pytest.mark.parametrize("mode", ["training", "inference", "frozen"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_forward_matches_keras_and_reference(verdict, keras, layers_mod, device, rng, shape, mode, dtype):
    dims, axis = SHAPES[shape]
    k, e = _pair(keras, layers_mod, rng, dims, axis, dtype=dtype)
    s = probes.bn_state(k)
    x = _x(rng, dims, axis)
    if mode == "frozen":  # trainable=False must mean inference mode even with training=True
        k.trainable = e.trainable = False
    training = mode != "inference"
    y_k, y_e = (np.asarray(layer(x, training=training), np.float64) for layer in (k, e))
    xin = x.astype(np.float16).astype(np.float64) if dtype == "mixed_float16" else x.astype(np.float64)
    m = x.size // dims[axis]
    if mode == "training":
        ref, mean, var = reference.bn_train(xin, s["gamma"], s["beta"], s["eps"], axis=axis)
        bound = reference.bn_bound(xin, s["gamma"], s["beta"], mean, var, s["eps"], axis=axis, n_reduce=m)
    else:
        ref = reference.bn_inference(xin, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"], axis=axis)
        bound = reference.bn_bound(xin, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"], axis=axis)
    if dtype == "mixed_float16":
        bound = reference.float16_output_bound(ref, bound)
    e_exp, e_k = np.abs(y_e - ref), np.abs(y_k - ref)
    verdict.record(explicit_vs_reference=e_exp.max(), keras_vs_reference=e_k.max(), explicit_vs_keras=np.abs(y_e - y_k).max(),
                   max_bound=bound.max(), elements_per_feature=m)
    verdict.conclude(bool(np.all(e_exp <= bound) and np.all(e_k <= bound)),
                     f"{shape} {mode} {dtype}: explicit {e_exp.max():.1e}, Keras {e_k.max():.1e} from the reference "
                     f"(bound {bound.max():.1e}); explicit vs Keras {np.abs(y_e - y_k).max():.1e}")


def _grads(tf, layer, x, dy):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
        loss = tf.reduce_sum(y * dy)
    gx, gg, gb = tape.gradient(loss, [xt, layer.gamma, layer.beta])
    return {"x": np.asarray(gx, np.float64), "gamma": np.asarray(gg, np.float64), "beta": np.asarray(gb, np.float64)}


@pytest.mark.claim("E02")
@pytest.mark.parametrize("shape", list(SHAPES))
def test_gradients_match_the_paper(verdict, keras, tf, layers_mod, device, rng, shape):
    dims, axis = SHAPES[shape]
    k, e = _pair(keras, layers_mod, rng, dims, axis)
    s = probes.bn_state(k)
    x, dy = _x(rng, dims, axis), rng.normal(0, 1, dims).astype(np.float32)
    ref = reference.bn_backward(dy, x, s["gamma"], s["eps"], axis=axis)
    bound = reference.bn_backward_bound(dy, x, s["gamma"], s["eps"], axis=axis)
    worst, ok = {}, True
    for name, layer in (("explicit", e), ("keras", k)):
        g = _grads(tf, layer, x, dy)
        for part in ("x", "gamma", "beta"):
            err = np.abs(g[part] - ref[part])
            worst[f"{name}_d{part}_err_over_bound"] = float((err / (bound[part] + 1e-300)).max())
            ok &= bool(np.all(err <= bound[part]))
    verdict.record(**worst, max_dx=np.abs(ref["x"]).max(), max_dgamma=np.abs(ref["gamma"]).max())
    verdict.conclude(ok, f"{shape}: worst gradient error / float32 bound = {max(worst.values()):.2g} "
                         f"(dx, dgamma, dbeta; explicit and Keras)")


@pytest.mark.claim("E03")
@pytest.mark.parametrize("shape", ["60x100", "7x3", "nhwc_axis-1", "nchw_axis1"])
def test_moving_statistics_after_updates(verdict, keras, tf, layers_mod, rng, shape):
    dims, axis = SHAPES[shape]
    momentum, steps = 0.9, 20
    k, e = _pair(keras, layers_mod, rng, dims, axis, momentum=momentum)
    s = probes.bn_state(k)
    mean, var = s["mean"], s["var"]
    b_mean, b_var = 0.0, 0.0
    for _ in range(steps):
        x = _x(rng, dims, axis)
        bm, bv = reference.ema_bounds(x, mean, var, momentum, axis=axis)
        b_mean, b_var = b_mean * momentum + bm, b_var * momentum + bv
        bmean, bvar = reference.batch_stats(x, axis)
        mean, var = reference.ema(mean, bmean, momentum), reference.ema(var, bvar, momentum)
        k(x, training=True)
        e(x, training=True)
    errs = {}
    for name, layer in (("explicit", e), ("keras", k)):
        errs[f"{name}_mean_err"] = float(np.abs(layer.moving_mean.numpy() - mean).max())
        errs[f"{name}_var_err"] = float(np.abs(layer.moving_variance.numpy() - var).max())
    ok = all(v <= np.max(b_mean) for n, v in errs.items() if "mean" in n) and \
        all(v <= np.max(b_var) for n, v in errs.items() if "var" in n)
    verdict.record(**errs, bound_mean=np.max(b_mean), bound_var=np.max(b_var), steps=steps)
    verdict.conclude(ok, f"{shape}, {steps} updates: moving mean within {max(errs['explicit_mean_err'], errs['keras_mean_err']):.1e} "
                         f"(bound {np.max(b_mean):.1e}), variance within {max(errs['explicit_var_err'], errs['keras_var_err']):.1e} "
                         f"(bound {np.max(b_var):.1e}) of the EMA reference")


@pytest.mark.claim("E04")
@pytest.mark.parametrize("shape", ["60x100", "7x3", "2x100", "nhwc_axis-1", "nchw_axis1"])
def test_paper_backward_equals_autodiff(verdict, tf, layers_mod, device, rng, shape):
    dims, axis = SHAPES[shape]
    auto = layers_mod.ExplicitBatchNorm(axis=axis)
    paper = layers_mod.ExplicitBatchNorm(axis=axis, paper_gradient=True)
    for layer in (auto, paper):
        layer.build((None,) + dims[1:])
    probes.randomise_bn(auto, rng)
    paper.set_weights(auto.get_weights())
    s = probes.bn_state(auto)
    x, dy = _x(rng, dims, axis), rng.normal(0, 1, dims).astype(np.float32)
    g_auto, g_paper = _grads(tf, auto, x, dy), _grads(tf, paper, x, dy)
    bound = reference.bn_backward_bound(dy, x, s["gamma"], s["eps"], axis=axis)
    ratios = {p: float((np.abs(g_paper[p] - g_auto[p]) / (2 * bound[p] + 1e-300)).max()) for p in ("x", "gamma", "beta")}
    diffs = {f"max_diff_d{p}": float(np.abs(g_paper[p] - g_auto[p]).max()) for p in ("x", "gamma", "beta")}
    verdict.record(**diffs, **{f"d{p}_diff_over_bound": r for p, r in ratios.items()})
    verdict.conclude(all(r <= 1.0 for r in ratios.values()),
                     f"{shape}: custom gradient vs autodiff: dx {diffs['max_diff_dx']:.1e}, dgamma "
                     f"{diffs['max_diff_dgamma']:.1e}, dbeta {diffs['max_diff_dbeta']:.1e} (<= {max(ratios.values()):.2g} x bound)")


@pytest.mark.claim("E05")
@pytest.mark.parametrize("layer", ["keras", "explicit", "explicit_algorithm2"])
def test_population_statistics_recomputed(verdict, keras, layers_mod, rng, layer):
    units, m, n = 20, 60, 50
    if layer == "keras":
        bn = keras.layers.BatchNormalization()
    else:
        bn = layers_mod.ExplicitBatchNorm(population="algorithm2" if layer.endswith("algorithm2") else "ema")
    model = keras.Sequential([keras.Input(shape=(units,)), bn])
    scale, shift = rng.uniform(0.5, 3, units), rng.normal(0, 2, units)
    batches = [(rng.normal(0, 1, (m, units)) * scale + shift).astype(np.float32) for _ in range(n)]
    before = bn.moving_mean.numpy().copy()
    model(batches[0], training=True)
    moved_by_training = float(np.abs(bn.moving_mean.numpy() - before).max())
    popstats.recompute(model, batches, unbiased=True)
    want_mean, want_var = reference.population_stats(batches, unbiased=True)
    # running average i/(i+1): each step's rounding as in an EMA update (reference.ema_bounds), damped
    b_mean, b_var = 0.0, 0.0
    for i, b in enumerate(batches):
        bm, bv = reference.ema_bounds(b, want_mean, want_var, i / (i + 1.0))
        b_mean, b_var = b_mean * i / (i + 1.0) + bm, b_var * i / (i + 1.0) + bv
    b_var = b_var * m / (m - 1) + 2 * reference.U32 * want_var  # the final m/(m-1) scaling
    e_mean = np.abs(bn.moving_mean.numpy() - want_mean)
    e_var = np.abs(bn.moving_variance.numpy() - want_var)
    ok = bool(np.all(e_mean <= b_mean) and np.all(e_var <= b_var))
    if layer == "explicit_algorithm2":
        ok = ok and moved_by_training == 0.0  # training leaves the statistics to Algorithm 2
    verdict.record(max_mean_err=e_mean.max(), bound_mean=np.max(b_mean), max_var_err=e_var.max(),
                   bound_var=np.max(b_var), training_call_moved_mean=moved_by_training, batches=n)
    verdict.conclude(ok, f"{layer}: recomputed statistics within {e_mean.max():.1e} / {e_var.max():.1e} of Algorithm 2 "
                         f"(bounds {np.max(b_mean):.1e} / {np.max(b_var):.1e}); a training call moved the mean by "
                         f"{moved_by_training:.2e}")


@pytest.mark.claim("E06")
def test_keras_and_explicit_models_train_alike(verdict, keras, tf, mnist):
    from bnspec.model import ModelSpec, build, compile_model

    keras.utils.set_random_seed(7)
    tf.config.experimental.enable_op_determinism()
    a = compile_model(build(ModelSpec(), keras), keras)
    e = compile_model(build(ModelSpec(bn="explicit"), keras), keras)
    b = compile_model(build(ModelSpec(), keras), keras)
    init = a.get_weights()
    e.set_weights(init)
    noise = np.random.default_rng(11)
    # rounding baseline: every weight moved by one float32 ulp in a random direction
    b.set_weights([np.nextafter(w, np.where(noise.random(w.shape) < 0.5, -np.inf, np.inf).astype(np.float32))
                   for w in init])
    d_e, d_b = [], []
    for step in range(100):
        sl = slice(step * 60, (step + 1) * 60)
        for model in (a, e, b):
            model.train_on_batch(mnist.x_train[sl], mnist.y_train[sl])
        wa = a.get_weights()
        d_e.append(max(float(np.abs(x - y).max()) for x, y in zip(wa, e.get_weights())))
        d_b.append(max(float(np.abs(x - y).max()) for x, y in zip(wa, b.get_weights())))
    drift = max(float(np.abs(x - y).max()) for x, y in zip(a.get_weights(), init))
    worst_e, worst_b = max(d_e), max(d_b)
    verdict.record(max_param_diff_explicit=worst_e, max_param_diff_ulp_baseline=worst_b, max_param_change=drift,
                   diff_at_steps_1_10_100=[d_e[0], d_e[9], d_e[99]], baseline_at_steps_1_10_100=[d_b[0], d_b[9], d_b[99]])
    # the explicit layer rounds differently in each of its ~10 operations per element, every step;
    # the baseline perturbs once by 1 ulp: allow the explicit model 10x the baseline's divergence
    verdict.conclude(worst_e <= 10 * worst_b,
                     f"100 Adam steps: max parameter difference {worst_e:.1e} (rounding baseline {worst_b:.1e}; "
                     f"parameters moved up to {drift:.2f})")


@pytest.mark.claim("E07")
def test_trained_accuracies_agree(verdict, trained, trained_explicit, mnist):
    accs = {}
    for name, t in (("keras", trained), ("explicit", trained_explicit)):
        logits = np.asarray(t.model.predict(mnist.x_test, batch_size=1000, verbose=0))
        accs[name] = float((logits.argmax(1) == mnist.y_test.argmax(1)).mean())
    gap = abs(accs["keras"] - accs["explicit"])
    verdict.record(keras_test_accuracy=accs["keras"], explicit_test_accuracy=accs["explicit"], gap_points=100 * gap)
    verdict.conclude(gap <= 0.005, f"test accuracy {accs['keras']:.4f} (Keras BN) vs {accs['explicit']:.4f} "
                                   f"(ExplicitBatchNorm): {100 * gap:.2f} points apart")


@pytest.mark.claim("E08")
@pytest.mark.parametrize("route", ["config", "keras_file"])
def test_explicit_layer_serialises(verdict, keras, layers_mod, rng, tmp_path, route):
    layer = layers_mod.ExplicitBatchNorm(momentum=0.9, epsilon=1e-2, population="algorithm2")
    model = keras.Sequential([keras.Input(shape=(12,)), layer])
    probes.randomise_bn(layer, rng)
    if route == "config":
        clone = type(layer).from_config(layer.get_config())
        clone.build((None, 12))
        clone.set_weights(layer.get_weights())
    else:
        model.save(tmp_path / "explicit.keras")
        clone = keras.models.load_model(tmp_path / "explicit.keras").layers[-1]
    x = _x(rng, (30, 12), -1)
    same_state = all(np.array_equal(p, q) for p, q in zip(layer.get_weights(), clone.get_weights()))
    same_cfg = {k: v for k, v in clone.get_config().items() if k != "name"} == \
        {k: v for k, v in layer.get_config().items() if k != "name"}
    diffs = [float(np.abs(np.asarray(layer(x, training=t)) - np.asarray(clone(x, training=t))).max()) for t in (False, True)]
    s = probes.bn_state(layer)
    bound = reference.bn_bound(x, s["gamma"], s["beta"], s["mean"], s["var"], s["eps"]).max()
    verdict.record(same_weights=same_state, same_config=same_cfg, inference_diff=diffs[0], training_diff=diffs[1],
                   bound=2 * bound, type=type(clone).__name__)
    verdict.conclude(same_state and same_cfg and max(diffs) <= 2 * bound,
                     f"{route}: weights equal {same_state}, config equal {same_cfg}, outputs differ by {max(diffs):.1e}")
