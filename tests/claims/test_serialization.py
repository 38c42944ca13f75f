"""Configuration and saved-model round trips keep what BN has learned and how it behaves.

Both claims compare BEHAVIOUR, original against clone: outputs in training and inference mode,
and the moving statistics after one training step on the same batch. Equality of the clone's own
get_config() with the original's is recorded only as an auxiliary number: a config that lost an
argument on both sides (both read back the default) would still compare equal."""

import numpy as np
import pytest

from bnspec import reference
from tests.claims import _kit as probes
from bnspec.measure.backend import to_numpy
from bnspec.subjects.model import ModelSpec, bn_layers, build, compile_model
from bnspec.measure.verdict import finite


@pytest.mark.claim("K13")
@pytest.mark.parametrize("training", [True, False])
def test_config_round_trip(verdict, keras, rng, training):
    """A from_config() clone vs the original: outputs in both modes, moving statistics after one training step."""
    units, batch, momentum, eps = 20, 60, 0.9, 1e-2  # not the defaults (0.99, 1e-3): a lost argument shows
    kwargs = {"axis": -1, "momentum": momentum, "epsilon": eps, "center": True, "scale": True}
    layer = probes.make_bn(keras, units, rng, **kwargs)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone.build((None, units))
    clone.set_weights(layer.get_weights())
    x = (rng.normal(0, 2, (batch, units)) + 1).astype(np.float32)
    s = probes.bn_state(layer)
    g, b = s["gamma"], s["beta"]
    ref_train, mean, var = reference.bn_train(x, g, b, s["eps"])
    bound_train = reference.bn_bound(x, g, b, mean, var, s["eps"], n_reduce=batch)
    ok = True

    def compare_outputs(mode: str, ref, bound, alternative):
        # original and clone run the same code on the same weights: each is within `bound` of the exact
        # result, so of each other within 2 x bound; the clone is also held to the reference of the mode,
        # so that two equally wrong layers cannot pass. `alternative`: what a clone that fell back to
        # the default epsilon (1e-3) would compute, which the comparison must be able to see.
        y1, y2 = (to_numpy(lyr(x, training=mode == "training"), np.float64) for lyr in (layer, clone))
        verdict.power(f"{mode}_default_epsilon_alternative", alternative - ref, bound)
        same = verdict.within(f"{mode}_output_clone_vs_original", y2 - y1, 2 * bound)
        return same & verdict.within(f"{mode}_output_clone_vs_reference", y2 - ref, bound)

    if not training:  # inference first (moving statistics as assigned), then the training step below
        ref = reference.bn_inference(x, g, b, s["mean"], s["var"], s["eps"])
        ok &= compare_outputs("inference", ref, reference.bn_bound(x, g, b, s["mean"], s["var"], s["eps"]),
                              reference.bn_inference(x, g, b, s["mean"], s["var"], 1e-3))
    # one training step on the same batch for both (the case's own call when training=True)
    ok &= compare_outputs("training", ref_train, bound_train, reference.bn_train(x, g, b, 1e-3)[0])
    b_mean, b_var = reference.ema_bounds(x, s["mean"], s["var"], momentum)
    for name, old, batch_value, bnd in (("moving_mean", s["mean"], mean, b_mean), ("moving_variance", s["var"], var, b_var)):
        want = reference.ema(old, batch_value, momentum)
        # a clone with the default momentum 0.99 would move its statistics by a tenth as much
        verdict.power(f"{name}_default_momentum_alternative", reference.ema(old, batch_value, 0.99) - want, bnd)
        got_o, got_c = (to_numpy(getattr(lyr, name), np.float64) for lyr in (layer, clone))
        ok &= verdict.within(f"{name}_clone_vs_original", got_c - got_o, 2 * bnd)
        ok &= verdict.within(f"{name}_clone_vs_reference", got_c - want, bnd)
    strip = lambda c: {k: v for k, v in c.items() if k != "name"}  # noqa: E731  (names are unique by design)
    verdict.record(same_config_auxiliary=strip(clone.get_config()) == strip(config))
    worst = max((k for k in verdict.evidence if k.endswith("_vs_original")), key=lambda k: probes.ratio(verdict, k))
    verdict.conclude(ok, f"clone vs original, outputs in {'training' if training else 'inference and training'} mode "
                         f"and moving statistics after one step: worst {worst} {probes.within_text(verdict, worst)}")


@pytest.mark.claim("K14")
@pytest.mark.parametrize("model", ["functional", "sequential", "functional_hardcoded"])
def test_keras_file_round_trip(verdict, keras, rng, tmp_path, model):
    """A model saved as .keras and loaded vs the original, bitwise: weights, outputs, statistics after a step."""
    spec = ModelSpec(kind=model.split("_")[0], hardcoded_training=model.endswith("hardcoded"))
    original = compile_model(build(spec, keras), keras)
    probes.randomise_model_bn(original, rng)
    path = tmp_path / "model.keras"
    original.save(path)
    loaded = keras.models.load_model(path)
    # Original and loaded model run the same code on the same input, the same device and (checked
    # first) bitwise-equal weights: float32 evaluation of the same graph is deterministic, so their
    # outputs and moving statistics must be bitwise equal; any difference is a difference in behaviour.
    differ = []

    def same(name, a, b) -> bool:
        if not verdict.equal(name, a, b):
            differ.append(name)
        return name not in differ

    ok = len(original.weights) == len(loaded.weights)
    verdict.record(variables_original=len(original.weights), variables_loaded=len(loaded.weights))
    if ok:
        ok = same("weights", probes.flat(to_numpy(w) for w in original.weights),
                  probes.flat(to_numpy(w) for w in loaded.weights))
    else:
        differ.append("number of variables")
    x = rng.normal(0, 1, (10, 784)).astype(np.float32)
    layers = probes.mlp_reference_layers(original)
    ref, bound = reference.mlp_inference(x, layers)
    # power: a load that dropped the moving statistics (back to 0 and 1) would change the inference outputs
    reset = [dict(lyr, mean=np.zeros_like(lyr["mean"]), var=np.ones_like(lyr["var"])) if "gamma" in lyr else lyr
             for lyr in layers]
    verdict.power("lost_moving_statistics_alternative", reference.mlp_inference(x, reset)[0] - ref, bound)
    outs = {}
    for entry in ("call", "predict"):  # single examples: a hard-coded layer would collapse them
        a, b = (np.concatenate([probes.run_entry(m, entry, x[i : i + 1], None) for i in range(10)])
                for m in (original, loaded))
        ok &= same(f"{entry}_outputs", a, b)
        outs[entry] = a
        # auxiliary: how far apart the single-example logits are (about 0 when a hard-coded layer collapses them)
        verdict.record(**{f"{entry}_spread_original": float(np.max(np.ptp(finite(f"{entry} original", a), axis=0))),
                          f"{entry}_spread_loaded": float(np.max(np.ptp(finite(f"{entry} loaded", b), axis=0)))})
    if spec.hardcoded_training:
        # power: model(x) keeps the baked-in training=True, so a load that lost it would give the
        # inference outputs instead; the original's must differ from those beyond the rounding bound
        verdict.power("lost_hardcoded_flag_alternative", outs["call"] - ref, bound)
    # training mode on one batch of 10: outputs, and the moving statistics this step leaves behind
    ok &= same("training_outputs", to_numpy(original(x, training=True)), to_numpy(loaded(x, training=True)))
    # power: the step must have moved the statistics (bitwise), or comparing them after it shows nothing
    verdict.power("training_step_moves_moving_mean", probes.flat(to_numpy(lyr.moving_mean) for lyr in bn_layers(original))
                  - probes.flat(lyr["mean"] for lyr in layers if "gamma" in lyr), 0.0, measured=True)
    for name in ("moving_mean", "moving_variance"):
        ok &= same(f"{name}_after_training_step", probes.flat(to_numpy(getattr(lyr, name)) for lyr in bn_layers(original)),
                   probes.flat(to_numpy(getattr(lyr, name)) for lyr in bn_layers(loaded)))
    verdict.conclude(ok, f"{model}: weights, single-example model(x) and predict outputs, training-mode outputs and the "
                         f"moving statistics after one step " + (f"differ in {', '.join(differ)}" if differ
                                                                 else "bitwise equal after loading"))
