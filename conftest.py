"""Fixtures shared by every bnspec test: the Keras flavour, devices, MNIST, and the trained model.

What a test needs is prepared by its fixtures, only when a selected test asks for it: the trained
model comes from bnspec.training's cache, where the first process that needs it trains it (under a
file lock, so N pytest-xdist workers train it once, with progress on the terminal) and every later
test and run reuses it; the paper's experiment likewise (tests/claims/test_paper_experiment.py).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["bnspec.plugin"]

from bnspec import DEVICES


@pytest.fixture(scope="session")
def flavour() -> str:
    from bnspec import flavours

    return flavours.current()


@pytest.fixture(scope="session")
def keras(flavour):
    """The Keras module under test (keras or tf_keras) on the backend under test (KERAS_BACKEND):
    tests never import Keras themselves. float32 matmuls are made float32 (no TF32) on every backend,
    and PyTorch uses one thread per process (bnspec.backend.configure)."""
    from bnspec import BnspecError, backend, flavours

    try:
        module = flavours.keras_module(flavour)
    except BnspecError as exc:
        pytest.skip(str(exc))
    backend.configure()
    return module


@pytest.fixture(scope="session")
def backend_name(flavour) -> str:
    from bnspec import flavours

    return flavours.backend(flavour)


@pytest.fixture(scope="session")
def tf(keras, backend_name):
    """TensorFlow, for the claims about TensorFlow itself (tf.function graphs, the fused kernel,
    SavedModel): skipped with the reason on the JAX and PyTorch backends."""
    if backend_name != "tensorflow":
        pytest.skip(f"TensorFlow-specific: this case uses TensorFlow directly, and the backend is {backend_name}")
    import tensorflow

    return tensorflow


@pytest.fixture(scope="session")
def gpus(keras) -> list:
    from bnspec import backend

    return backend.gpus()


@pytest.fixture(params=DEVICES)
def device(request, keras, gpus):
    """Runs the test body on the device: CPU always, GPU when the backend sees one (else skipped)."""
    from bnspec import backend

    if request.param == "gpu" and not gpus:
        pytest.skip(f"no GPU visible to {backend.name()}")
    with backend.device_scope(keras, request.param):
        yield request.param


@pytest.fixture(scope="session")
def mnist():
    """The study notebook's preprocessed splits (bnspec.data.Splits), from the verified MNIST."""
    from bnspec import data

    return data.preprocess(data.load_mnist())


@pytest.fixture(scope="session")
def trained(keras):
    """The notebook's model trained for 10 epochs (bnspec.training.Trained), from the cache.
    `trained.model` is shared: tests that change it must use `trained.fresh()`."""
    from bnspec import training

    return training.trained()


@pytest.fixture(scope="session")
def trained_explicit(keras):
    """The same model and training with bnspec.layers.ExplicitBatchNorm in place of Keras' layer."""
    from bnspec import training
    from bnspec.model import ModelSpec

    return training.trained(ModelSpec(bn="explicit"))


@pytest.fixture(autouse=True)
def _record_model_cache(request):
    """Tell the results file whether this run trained the model or reused the cache."""
    yield
    if "trained" in request.fixturenames:
        t = request.getfixturevalue("trained")
        request.node.user_properties.append(("bnspec_model", {
            "entry": t.path.name, "created": t.created, "train_seconds": t.metrics.get("train_seconds"),
            "test_accuracy": t.metrics.get("test_accuracy")}))


@pytest.fixture
def rng():
    """A fixed-seed generator: the same run twice measures the same numbers."""
    import numpy as np

    return np.random.default_rng(20150211)
