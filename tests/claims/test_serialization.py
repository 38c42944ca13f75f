"""Configuration and saved-model round trips keep what BN has learned and how it behaves."""

import numpy as np
import pytest

from bnspec import probes, reference
from bnspec.model import ModelSpec, bn_layers, build, compile_model


@pytest.mark.claim("K13")
@pytest.mark.parametrize("training", [True, False])
def test_config_round_trip(verdict, keras, rng, training):
    kwargs = {"axis": -1, "momentum": 0.9, "epsilon": 1e-2, "center": True, "scale": True}
    layer = probes.make_bn(keras, 20, rng, **kwargs)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone.build((None, 20))
    clone.set_weights(layer.get_weights())
    x = (rng.normal(0, 2, (60, 20)) + 1).astype(np.float32)
    s = probes.bn_state(layer)
    y1, y2 = (np.asarray(lyr(x, training=training), np.float64) for lyr in (layer, clone))
    mean, var = reference.batch_stats(x) if training else (s["mean"], s["var"])
    bound = reference.bn_bound(x, s["gamma"], s["beta"], mean, var, s["eps"], n_reduce=60 if training else 0)
    diff = np.abs(y1 - y2)
    strip = lambda c: {k: v for k, v in c.items() if k != "name"}  # noqa: E731  (names are unique by design)
    same_config = strip(clone.get_config()) == strip(config)
    verdict.record(same_config=same_config, max_output_diff=diff.max(), bound=2 * bound.max())
    verdict.conclude(same_config and bool(np.all(diff <= 2 * bound)),
                     f"config equal: {same_config}; outputs differ by {diff.max():.2e} (bound {2 * bound.max():.1e})")


@pytest.mark.claim("K14")
@pytest.mark.parametrize("model", ["functional", "sequential", "functional_hardcoded"])
def test_keras_file_round_trip(verdict, keras, rng, tmp_path, model):
    spec = ModelSpec(kind=model.split("_")[0], hardcoded_training=model.endswith("hardcoded"))
    original = compile_model(build(spec, keras), keras)
    probes.randomise_model_bn(original, rng)
    path = tmp_path / "model.keras"
    original.save(path)
    loaded = keras.models.load_model(path)

    weights_equal = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(original.weights, loaded.weights)) \
        and len(original.weights) == len(loaded.weights)
    x = rng.normal(0, 1, (10, 784)).astype(np.float32)
    _, bound = reference.mlp_inference(x, probes.mlp_reference_layers(original))
    evidence, ok = {"weights_bitwise_equal": weights_equal}, weights_equal
    for entry in ("call", "predict"):  # single examples: a hard-coded layer would collapse them
        a = np.concatenate([probes.run_entry(original, entry, x[i : i + 1], None) for i in range(10)])
        b = np.concatenate([probes.run_entry(loaded, entry, x[i : i + 1], None) for i in range(10)])
        diff = float(np.abs(a - b).max())
        evidence[f"{entry}_max_diff"] = diff
        evidence[f"{entry}_spread_original"] = float(np.ptp(a, axis=0).max())
        evidence[f"{entry}_spread_loaded"] = float(np.ptp(b, axis=0).max())
        ok = ok and diff <= 2 * bound.max()  # both within the rounding bound of one exact result
    moving_same = all(np.array_equal(p.moving_mean.numpy(), q.moving_mean.numpy())
                      for p, q in zip(bn_layers(original), bn_layers(loaded)))
    verdict.record(bound=2 * bound.max(), moving_statistics_equal=moving_same, **evidence)
    verdict.conclude(ok and moving_same,
                     f"{model}: weights equal {weights_equal}; model(x) differs by {evidence['call_max_diff']:.1e}, "
                     f"predict by {evidence['predict_max_diff']:.1e} (bound {2 * bound.max():.1e}); single-example "
                     f"logit spread {evidence['call_spread_original']:.2e} before, {evidence['call_spread_loaded']:.2e} after")
