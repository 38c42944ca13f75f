"""bnspec.subjects.export without Keras or a runtime: the network bound (Keras' side is reference.mlp_inference's,
the export's side adds the folding's roundings), how a BN layer's numbers are recognised among a graph's
constants (kept, precomputed, folded; stale or epsilon-less numbers are not), and the refusal classifier."""

from __future__ import annotations

import numpy as np
import pytest

from bnspec import reference
from bnspec.subjects import export as ex

RNG = np.random.default_rng(20150211)


def _mlp(rng, sizes=(12, 8, 8, 3)):
    plan, layers = [], []
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        W, b = rng.normal(0, 0.4, (k, n)), rng.normal(0, 0.2, n)
        plan.append(ex.Step("dense", {"W": W, "b": b}))
        layers.append({"kernel": W, "bias": b})
        if i < len(sizes) - 2:
            st = {"gamma": rng.uniform(0.5, 2, n), "beta": rng.normal(0, 1, n), "mean": rng.normal(0, 1, n),
                  "var": rng.uniform(0.5, 3, n), "eps": 1e-3}
            plan += [ex.Step("bn", {**st, "axis": -1}), ex.Step("act", {"fn": "tanh"})]
            layers.append(st)
    return plan, layers


def test_keras_side_of_the_bound_is_reference_mlp_inference():
    plan, layers = _mlp(RNG)
    x = RNG.normal(0, 1, (5, 12))
    ref, b_keras, b_export = ex.network_bound(x, plan)
    ref2, b2 = reference.mlp_inference(x, layers)
    np.testing.assert_allclose(ref, ref2, rtol=1e-12)
    np.testing.assert_allclose(b_keras, b2, rtol=1e-12)
    assert np.all(b_export > b_keras)  # the folding's own roundings come on top


def test_a_float32_folded_evaluation_stays_within_the_export_bound():
    plan, _ = _mlp(RNG)
    x = RNG.normal(0, 1, (64, 12)).astype(np.float32)
    ref, _, b_export = ex.network_bound(x, plan)
    h = x
    i = 0
    while i < len(plan):  # BN folded into the Dense before it, all in float32
        s = plan[i]
        if s.kind == "dense" and i + 1 < len(plan) and plan[i + 1].kind == "bn":
            p = plan[i + 1].p
            a = (np.float32(p["gamma"]) / np.sqrt(np.float32(p["var"]) + np.float32(p["eps"]))).astype(np.float32)
            W = (s.p["W"].astype(np.float32) * a).astype(np.float32)
            b = (s.p["b"].astype(np.float32) * a + (np.float32(p["beta"]) - a * np.float32(p["mean"]))).astype(np.float32)
            h = h @ W + b
            i += 2
            continue
        h = np.tanh(h) if s.kind == "act" else h @ s.p["W"].astype(np.float32) + s.p["b"].astype(np.float32)
        i += 1
    assert np.all(np.abs(h - ref) <= b_export)


def test_a_bn_step_with_batch_statistics_is_training_mode():
    plan, _ = _mlp(RNG)
    x = RNG.normal(0, 1, (16, 12))
    tplan = ex.training_plan(x, plan)
    z = x @ plan[0].p["W"] + plan[0].p["b"]
    assert tplan[1].p["n_reduce"] == 16
    np.testing.assert_allclose(tplan[1].p["mean"], z.mean(0))
    np.testing.assert_allclose(tplan[1].p["var"], z.var(0))


def _state(rng, n=6):
    return {k: np.asarray(v, np.float32).astype(np.float64) for k, v in
            {"gamma": rng.uniform(0.5, 2, n), "beta": rng.normal(0, 1, n), "mean": rng.normal(0, 2, n),
             "var": rng.uniform(0.5, 4, n)}.items()} | {"eps": 1e-3}


def test_carried_recognises_kept_and_folded_bn_and_refuses_stale_or_epsilon_less_numbers():
    st = _state(RNG)
    W = RNG.normal(0, 0.3, (3, 3, 2, 6)).astype(np.float32).astype(np.float64)
    kept = [("m", st["mean"]), ("v", st["var"]), ("g", st["gamma"]), ("b", st["beta"]), ("e", np.float32(1e-3))]
    assert ex.carried(kept, st).form == "kept"
    a32 = (np.float32(st["gamma"]) / np.sqrt(np.float32(st["var"]) + np.float32(1e-3))).astype(np.float32)
    c32 = (np.float32(st["beta"]) - a32 * np.float32(st["mean"])).astype(np.float32)
    folded = [("k", (W.astype(np.float32) * a32).transpose(3, 2, 0, 1)), ("c", c32)]  # OIHW, as ONNX stores it
    carry = ex.carried(folded, st, W, None)
    assert carry.form == "folded into the kernel" and carry.eps_alternative > 1
    stale = dict(st, mean=st["mean"] + 0.01)
    assert ex.carried(folded, stale, W, None).form is None
    no_eps = [("k", (W * st["gamma"] / np.sqrt(st["var"])).astype(np.float32)), ("c", c32)]
    assert ex.carried(no_eps, st, W, None).form is None
    assert ex.kernel_found(folded, W, a32.astype(np.float64)) == "k"
    assert ex.kernel_found(folded, W) is None


@pytest.mark.parametrize("message, kind", [
    ("LiteRT export requires TensorFlow or PyTorch backend.", ex.NotApplicable),
    ("Torch export requires PyTorch backend.", ex.NotApplicable),
    ("Unsupported arguments for LiteRT export with the PyTorch backend: target_spec.", ex.NotApplicable),
    ("Model wasn't fully converted.", ex.ExportFailed),
])
def test_keras_refusals_are_not_applicable_and_other_errors_are_findings(message, kind):
    def fail():
        raise ValueError(message)

    with pytest.raises(kind):
        ex._call(fail, "x")


def test_a_missing_converter_is_a_missing_runtime():
    def fail():
        raise ImportError("No module named 'tf2onnx'")

    with pytest.raises(ex.RuntimeMissing):
        ex._call(fail, "tf2onnx")



class _OldKerasModel:
    """A stand-in for Keras 3.0-3.7's Model.export(filepath, format="tf_saved_model"): it takes `format` and
    writes a SavedModel whatever it is (and, like 3.0-3.5, has no `verbose`). `_model_backend` reads the
    module name: not tf_keras, with a format argument, so the Keras 3 path is taken."""

    __module__ = "keras.src.models.model"

    def export(self, filepath, format="tf_saved_model"):  # noqa: A002 - Keras' own argument name
        from pathlib import Path

        Path(filepath).mkdir(parents=True)
        (Path(filepath) / "saved_model.pb").write_bytes(b"")


def test_an_export_that_ignores_its_format_is_not_applicable(tmp_path, monkeypatch):
    """Keras before 3.8 ignores format='onnx' and writes a SavedModel: not applicable, said so (never served as
    ONNX); `verbose` is passed only where Model.export takes it. Power: the same model asked for
    tf_saved_model is exported."""
    monkeypatch.setattr(ex, "_model_backend", lambda model: "tensorflow")
    monkeypatch.setattr(ex, "_need", lambda *a, **k: None)  # no runtime needed to get that far
    with pytest.raises(ex.NotApplicable, match="ignores format='onnx'"):
        ex.export(_OldKerasModel(), "onnx", tmp_path / "a")
    art = ex.export(_OldKerasModel(), "tf_saved_model", tmp_path / "b")
    assert (art.path / "saved_model.pb").is_file()
