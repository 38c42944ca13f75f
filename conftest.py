"""Fixtures shared by every bnspec test: the run, its Keras and backend, devices, MNIST, and the trained model.

The run (bnspec.run.Run: flavour, backend, device, mutant) is made once by the plugin (bnspec.measure.plugin)
and reaches every fixture and test as the `run` fixture; nothing below reads the environment for it.
What a test needs is prepared by its fixtures, only when a selected test asks for it: the trained model
comes from bnspec.subjects.training's cache, where the first process that needs it trains it (under a file
lock, so N pytest-xdist workers train it once, with progress on the terminal) and every later test and run
reuses it; the paper's experiment likewise (tests/claims/test_paper_experiment.py).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["bnspec.measure.plugin"]

from bnspec import DEVICES  # noqa: E402

SEED = 20150211  # the paper's arXiv date: every test starts from this seed


@pytest.fixture(scope="session")
def flavour(run) -> str:
    return run.flavour


@pytest.fixture(scope="session")
def backend_name(run) -> str:
    return run.backend


@pytest.fixture(scope="session")
def keras(run):
    """The Keras module under test (keras or tf_keras) on the run's backend, with the run's mutant patched in
    (bnspec mutants only): tests never import Keras themselves. float32 matmuls are made float32 (no TF32)
    on every backend, and PyTorch uses one thread per process (bnspec.measure.backend.Backend.configure)."""
    from bnspec import BnspecError
    from bnspec.measure.backend import Backend
    from bnspec.subjects import keras_for

    try:
        module = keras_for(run)
    except BnspecError as exc:
        pytest.skip(str(exc))
    Backend(run.backend).configure()
    return module


@pytest.fixture(scope="session")
def B(run, keras):
    """The backend primitives of the run (bnspec.measure.backend.Backend): to_numpy, gradients, function, ..."""
    from bnspec.measure.backend import Backend

    return Backend(run.backend)


@pytest.fixture(autouse=True)
def _seeded(request):
    """Every test that uses Keras starts from the same seed, whatever ran before it in this process (which
    test a pytest-xdist worker ran first, or whether it trained a model with op determinism switched on):
    the same run twice measures the same numbers."""
    if "keras" in request.fixturenames:
        request.getfixturevalue("keras").utils.set_random_seed(SEED)


@pytest.fixture(scope="session")
def tf(keras, backend_name):
    """TensorFlow, for the claims about TensorFlow itself (tf.function graphs, the fused kernel,
    SavedModel): skipped with the reason on the JAX and PyTorch backends."""
    if backend_name != "tensorflow":
        pytest.skip(f"TensorFlow-specific: this case uses TensorFlow directly, and the backend is {backend_name}")
    import tensorflow

    return tensorflow


@pytest.fixture(scope="session")
def gpus(B) -> list:
    return B.gpus()


@pytest.fixture(params=DEVICES)
def device(request, keras, B, gpus):
    """Runs the test body on the device: CPU always, GPU when the backend sees one (else skipped)."""
    if request.param == "gpu" and not gpus:
        pytest.skip(f"no GPU visible to {B.name}")
    with B.device_scope(keras, request.param):
        yield request.param


@pytest.fixture(scope="session")
def mnist():
    """The study notebook's preprocessed splits (bnspec.subjects.data.Splits), from the verified MNIST."""
    from bnspec.subjects import data

    return data.preprocess(data.load_mnist())


@pytest.fixture(scope="session")
def train_seed(request) -> int | None:
    """The training seed of the trained models: None for the notebook's (100); `bnspec seeds` sets others."""
    return request.config.getoption("--bnspec-train-seed")


def _specs(bn: str, seed: int | None):
    from bnspec.subjects import training
    from bnspec.subjects.model import ModelSpec

    if seed is None:
        return ModelSpec(bn=bn), training.TrainSpec()
    return ModelSpec(bn=bn, seed=seed), training.TrainSpec(seed=seed)


@pytest.fixture(scope="session")
def trained(run, keras, train_seed):
    """The notebook's model trained for 10 epochs (bnspec.subjects.training.Trained), from the cache.
    `trained.model` is shared: tests that change it must use `trained.fresh()`."""
    from bnspec.subjects import training

    spec, train = _specs("keras", train_seed)
    return training.trained(run, spec, train, keras=keras)


@pytest.fixture(scope="session")
def trained_explicit(run, keras, train_seed):
    """The same model and training with bnspec.subjects.layers' ExplicitBatchNorm in place of Keras' layer."""
    from bnspec.subjects import training

    spec, train = _specs("explicit", train_seed)
    return training.trained(run, spec, train, keras=keras)


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

    return np.random.default_rng(SEED)
