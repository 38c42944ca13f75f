"""The notebook's model, trained once (cached) and reused."""

import numpy as np
import pytest

from bnspec import probes, reference


@pytest.mark.claim("M04")
def test_test_accuracy_after_ten_epochs(verdict, trained, mnist):
    # measured here from the model's predictions, not read from the cache's metrics
    logits = trained.model.predict(mnist.x_test, batch_size=600, verbose=0)
    acc = float((logits.argmax(1) == mnist.y_test.argmax(1)).mean())
    verdict.record(test_accuracy=acc, test_examples=len(logits), notebook=0.9711,
                   epochs=len(trained.metrics["history"]["loss"]))
    verdict.conclude(acc >= 0.96, f"test accuracy {acc:.4f} on {len(logits)} images (notebook: 0.9711)")


@pytest.mark.claim("M03")
@pytest.mark.parametrize("entry", ["predict", "call"])
@pytest.mark.parametrize("batch_size", [1, 2, 60])
def test_inference_does_not_depend_on_batch_size(verdict, trained, mnist, entry, batch_size):
    x = mnist.x_test[:60]
    model = trained.model
    full = np.asarray(model.predict(mnist.x_test[:600], batch_size=600, verbose=0))[:60]
    if entry == "predict":
        out = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    else:
        out = np.concatenate([np.asarray(model(x[i : i + batch_size])) for i in range(0, 60, batch_size)])
    _, bound = reference.mlp_inference(x, probes.mlp_reference_layers(model))
    diff = np.abs(out - full)
    agree = float((out.argmax(1) == full.argmax(1)).mean())
    # both runs are within `bound` of the exact result, so of each other within 2*bound
    verdict.record(max_abs_diff=diff.max(), bound=2 * bound.max(), label_agreement=agree)
    verdict.conclude(bool(np.all(diff <= 2 * bound)),
                     f"batch {batch_size} vs 600: max |logit diff| {diff.max():.2e} (bound {2 * bound.max():.1e}), "
                     f"labels agree {agree:.0%}")
