"""A model without a BatchNormalization layer is answered at once (issue #24): no forward pass, live or from
a saved file (where Keras is not even imported to load it), with a note saying why. The old audit ran every
forward pass anyway: ConvNeXtTiny(weights=None, 32x32) took 10-11 s on 2 CPU cores."""

from __future__ import annotations

import time

import numpy as np
import pytest

import bnspec.audit
from bnspec.audit import check

# The audit itself, excluding model construction: the static checks of ConvNeXtTiny's 150 layers take
# ~0.1 s here; one forward pass of it takes longer than this on 2 CPU cores, so 2 s (the bound the issue
# asks for) fails any audit that runs one.
FAST_S = 2.0


@pytest.fixture
def forward_passes(monkeypatch):
    """install(model) -> a list that records every model(...) and model.predict(...) of that model while the
    test runs (the methods are patched where the model's class finds them, and put back after)."""
    calls = []

    def install(model):
        for name in ("__call__", "predict"):
            owner = next(c for c in type(model).__mro__ if name in c.__dict__)
            original = owner.__dict__[name]

            def counted(self, *args, _original=original, _name=name, **kwargs):
                if self is model:
                    calls.append(_name)
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(owner, name, counted)
        return calls

    return install


def test_convnext_without_bn_runs_no_forward_pass(keras, forward_passes):
    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3))
    data = np.random.default_rng(0).standard_normal((16, 32, 32, 3)).astype("float32")
    calls = forward_passes(model)
    model(data[:2])  # the counter sees a call (so that an empty count below means something)
    assert calls, "the counter does not see the model's calls"
    calls.clear()
    started = time.perf_counter()
    result = check(model, data=data)
    seconds = time.perf_counter() - started
    assert calls == [] and result.measured == {"forward_passes": 0, "bn_layers": 0}
    assert result.context["bn_layers"] == 0 and "data" not in result.context
    assert any("no BatchNormalization layer" in n for n in result.notes), result.notes
    assert seconds < FAST_S, seconds
    assert result.at_least("warning") == []


def test_saved_file_without_bn_is_not_even_loaded(keras, tmp_path, monkeypatch):
    inp = keras.Input((8,), name="x")
    h = keras.layers.LayerNormalization(name="ln")(keras.layers.Dense(8, name="dense")(inp))
    path = tmp_path / "no_bn.keras"
    keras.Model(inp, keras.layers.Dense(3, name="head")(h), name="m").save(path)

    def refuse(*args, **kwargs):
        raise AssertionError("the audit loaded a model that holds no BN layer")

    monkeypatch.setattr(bnspec.audit, "load_model", refuse)
    started = time.perf_counter()
    result = check(str(path), data=np.zeros((4, 8), "float32"))
    assert time.perf_counter() - started < FAST_S
    assert result.measured == {"forward_passes": 0, "bn_layers": 0}
    assert any("no BatchNormalization layer" in n for n in result.notes)


def test_a_model_with_bn_still_gets_its_forward_passes(keras, forward_passes):
    """The shortcut is for models without BN only (counted the same way)."""
    from tests.audit import gallery

    case = gallery.clean_functional(keras, np.random.default_rng(0))
    calls = forward_passes(case.model)
    result = check(case.model)
    assert result.measured["forward_passes"] >= 6 and len(calls) >= result.measured["forward_passes"]
