"""bnspec.reference and bnspec.convert need numpy only: proven in a subprocess where importing
TensorFlow or Keras fails."""

from tests.helpers import BLOCK_TF, run_python

USE_REFERENCE = r'''
import numpy as np
from bnspec import convert, reference
rng = np.random.default_rng(0)
x = rng.normal(0, 1, (60, 5)); g = rng.uniform(0.5, 2, 5)
y, m, v = reference.bn_train(x, g, 0.0, 1e-3)
d = reference.bn_backward(rng.normal(0, 1, (60, 5)), x, g, 1e-3)
pm, pv = reference.population_stats([x[:30], x[30:]])
t = convert.keras_to_torch({"gamma": g, "beta": 0 * g, "mean": m, "var": v, "eps": 1e-3})
assert abs(y.mean()) < 1e-12 and d["x"].shape == x.shape and pv.shape == (5,)
print("ok", "tensorflow" in sys.modules)
'''


def test_reference_runs_without_tensorflow():
    out = run_python(BLOCK_TF + USE_REFERENCE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "False"]


def test_backward_formulas_match_finite_differences():
    import numpy as np

    from bnspec import reference

    rng = np.random.default_rng(1)
    x, g, b, dy = rng.normal(0, 2, (7, 3)), rng.uniform(0.5, 2, 3), rng.normal(0, 1, 3), rng.normal(0, 1, (7, 3))
    grads = reference.bn_backward(dy, x, g, 1e-3)
    h = 1e-6
    loss = lambda xx, gg, bb: float((reference.bn_train(xx, gg, bb, 1e-3)[0] * dy).sum())  # noqa: E731
    num_x = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        num_x[i] = (loss(x + e, g, b) - loss(x - e, g, b)) / (2 * h)
    num_g = np.array([(loss(x, g + h * np.eye(3)[j], b) - loss(x, g - h * np.eye(3)[j], b)) / (2 * h) for j in range(3)])
    # central differences: O(h^2 * f''') truncation plus O(eps64 / h) cancellation, ~1e-8 here
    assert np.abs(num_x - grads["x"]).max() < 1e-6
    assert np.abs(num_g - grads["gamma"]).max() < 1e-6
    assert np.allclose(grads["beta"], dy.sum(0), rtol=0, atol=1e-12)
