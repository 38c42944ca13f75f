"""BN state between Keras' and PyTorch's conventions (numbers only: neither framework is imported).

                      Keras (BatchNormalization)          PyTorch (nn.BatchNorm1d/2d)
  momentum            weight of the OLD value: 0.99       weight of the NEW value: 0.1
                      moving = m*moving + (1-m)*batch     running = (1-p)*running + p*batch
  variance tracked    biased batch variance (1/n)         unbiased batch variance (1/(n-1))
  epsilon             1e-3                                1e-5
  weights             gamma, beta, moving_mean,           weight, bias, running_mean,
                      moving_variance                     running_var

So Keras momentum k is PyTorch momentum 1-k. Inference computes (x - mean)/sqrt(var + eps), so a
state moves between frameworks with the same outputs if var + eps is kept: var' = var + eps - eps'.

What conversion cannot carry over (measured by claim X04 against torch.nn itself): training-mode
outputs use the batch variance plus each framework's own eps, and from the first training step on
PyTorch feeds the unbiased batch variance into running_var, so after a step the converted-back
variance exceeds Keras' by (1-k) * (var_B/(m-1) - (eps_keras - eps_torch)).

`torch_inference` and `torch_update` transcribe PyTorch's formulas in numpy for documentation and
quick experiments; the claim tests take their expected values from torch.nn itself, never from them.
"""

from __future__ import annotations

import numpy as np

KERAS_EPS, TORCH_EPS = 1e-3, 1e-5
KERAS_MOMENTUM, TORCH_MOMENTUM = 0.99, 0.1

STATE_KERAS = ("gamma", "beta", "mean", "var")  # + "eps"
STATE_TORCH = ("weight", "bias", "running_mean", "running_var")  # + "eps"


def momentum_keras_to_torch(momentum: float) -> float:
    return 1.0 - momentum


def momentum_torch_to_keras(momentum: float) -> float:
    return 1.0 - momentum


def keras_to_torch(state: dict, torch_eps: float = TORCH_EPS) -> dict:
    """{gamma, beta, mean, var, eps} (Keras) -> {weight, bias, running_mean, running_var, eps}
    (PyTorch) with identical inference outputs (float64 arrays; var + eps is kept)."""
    var = np.asarray(state["var"], np.float64) + state["eps"] - torch_eps
    if np.any(var < 0):
        raise ValueError("moving variance + Keras eps is below the PyTorch eps: no equivalent state")
    return {"weight": np.asarray(state["gamma"], np.float64), "bias": np.asarray(state["beta"], np.float64),
            "running_mean": np.asarray(state["mean"], np.float64), "running_var": var, "eps": float(torch_eps)}


def torch_to_keras(state: dict, keras_eps: float = KERAS_EPS) -> dict:
    """The inverse of keras_to_torch."""
    var = np.asarray(state["running_var"], np.float64) + state["eps"] - keras_eps
    if np.any(var < 0):
        raise ValueError(f"running_var + eps is below the Keras eps {keras_eps}: pass keras_eps=<PyTorch eps> "
                         "to the Keras layer instead")
    return {"gamma": np.asarray(state["weight"], np.float64), "beta": np.asarray(state["bias"], np.float64),
            "mean": np.asarray(state["running_mean"], np.float64), "var": var, "eps": float(keras_eps)}


def torch_inference(x, state: dict) -> np.ndarray:
    """PyTorch's eval-mode formula, float64, channels on axis 1 (N, C) or (N, C, ...).
    A transcription for reading, not an oracle: tests compare with torch.nn itself."""
    x = np.asarray(x, np.float64)
    shape = [1, -1] + [1] * (x.ndim - 2)
    r = lambda v: np.asarray(v, np.float64).reshape(shape)  # noqa: E731
    return r(state["weight"]) * (x - r(state["running_mean"])) / np.sqrt(r(state["running_var"]) + state["eps"]) + r(state["bias"])


def torch_update(running_mean, running_var, batch, momentum: float = TORCH_MOMENTUM):
    """PyTorch's training-mode running-statistics update on a (N, C, ...) batch (unbiased variance),
    float64. A transcription for reading, not an oracle: tests compare with torch.nn itself."""
    batch = np.asarray(batch, np.float64)
    axes = tuple(i for i in range(batch.ndim) if i != 1)
    n = batch.size // batch.shape[1]
    mean, var = batch.mean(axes), batch.var(axes) * n / (n - 1)
    return (1 - momentum) * np.asarray(running_mean, np.float64) + momentum * mean, \
        (1 - momentum) * np.asarray(running_var, np.float64) + momentum * var
