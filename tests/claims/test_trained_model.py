"""The notebook's model, trained once (cached) and reused."""

import numpy as np
import pytest

from bnspec import reference
from tests.claims import _kit as probes
from bnspec.measure.backend import to_numpy
from bnspec.measure.verdict import NoPower, finite


# --------------------------------------------------------------------------- helpers

# M04's threshold 0.96 (the claim's number), and why it is a fair one.
#   The notebook reports 0.9711 on the n = 10,000 test images. Two runs of the same procedure differ
#   by their seeds (initial kernels, shuffling, validation split) and library versions. We measured
#   that run-to-run variation on this test set: the notebook model trained here with seeds 100..106
#   (ModelSpec.seed = TrainSpec.seed) reached 0.9701, 0.9755, 0.9709, 0.9754, 0.9730, 0.9739, 0.9733:
#   mean 0.9732, sample standard deviation SIGMA_RUN = 0.0021 (keras3 3.15.1, TF 2.21 CPU, training
#   through tf.data as of commit b2cd366; the training code of 11cbf13 gives 0.9740 at seed 100). That is
#   close to the binomial standard deviation sqrt(p(1-p)/n) = sqrt(0.9711 * 0.0289 / 10,000) = 0.0017
#   (as expected when runs mostly differ in which borderline images they get right).
#   Our run and the notebook's are two such draws, so their difference has standard deviation
#   sqrt(2) * SIGMA_RUN = 0.0030, and 0.96 lies (0.9711 - 0.96) / 0.0030 = 3.7 of those below the
#   notebook's value (6.6 binomial standard deviations): a correct reproduction falls below it with
#   probability ~1e-4 (one-sided normal tail), while a model that lost 1.1 points of accuracy does not
#   pass. The test also measures a control that must fall below the threshold: the same network
#   untrained (its initial weights), evaluated the same way.
NOTEBOOK_ACCURACY = 0.9711
SIGMA_RUN = 0.0021  # measured over 7 seeds, see above
THRESHOLD = 0.96


def _accuracy(logits, onehot) -> float:
    logits = finite("logits", logits)  # argmax of NaN logits would silently read as class 0
    return float(np.mean(logits.argmax(1) == np.asarray(onehot).argmax(1)))


@pytest.mark.claim("M04")
def test_test_accuracy_after_ten_epochs(verdict, keras, trained, mnist):
    """The cached 10-epoch model's test accuracy (10,000 images) vs 0.96, with an untrained control below it."""
    from bnspec.subjects.model import ModelSpec, build

    # measured here from the model's predictions, not read from the cache's metrics
    acc = _accuracy(trained.model.predict(mnist.x_test, batch_size=600, verbose=0), mnist.y_test)
    n = len(mnist.x_test)
    z = (NOTEBOOK_ACCURACY - THRESHOLD) / (np.sqrt(2) * SIGMA_RUN)
    # control: the untrained network must fall below the threshold, or the threshold tells nothing apart
    control = _accuracy(build(ModelSpec(), keras).predict(mnist.x_test, batch_size=600, verbose=0), mnist.y_test)
    if not control < THRESHOLD:
        raise NoPower(f"M04: the untrained control reaches {control:.4f} >= {THRESHOLD}: the threshold separates nothing")
    verdict.record(test_accuracy=acc, test_examples=n, notebook=NOTEBOOK_ACCURACY, threshold=THRESHOLD,
                   sigma_run_to_run=SIGMA_RUN, sigma_binomial=float(np.sqrt(NOTEBOOK_ACCURACY * (1 - NOTEBOOK_ACCURACY) / n)),
                   threshold_in_run_difference_sds=float(z), control_untrained_accuracy=control,
                   epochs=len(trained.metrics["history"]["loss"]))
    verdict.conclude(acc >= THRESHOLD,
                     f"test accuracy {acc:.4f} on {n} images (notebook: {NOTEBOOK_ACCURACY}; threshold {THRESHOLD} = "
                     f"{z:.1f} run-to-run s.d. of a difference below it; untrained control {control:.4f})")


@pytest.mark.claim("M03")
@pytest.mark.parametrize("entry", ["predict", "call"])
@pytest.mark.parametrize("batch_size", [1, 2, 60])
def test_inference_does_not_depend_on_batch_size(verdict, trained, mnist, entry, batch_size):
    """Logits of 60 test images in batches of 1, 2 or 60 vs one batch of 600 and vs the inference reference."""
    x = mnist.x_test[:60]
    model = trained.model
    full = to_numpy(model.predict(mnist.x_test[:600], batch_size=600, verbose=0))[:60]
    if entry == "predict":
        out = to_numpy(model.predict(x, batch_size=batch_size, verbose=0))
    else:
        out = np.concatenate([to_numpy(model(x[i : i + batch_size])) for i in range(0, 60, batch_size)])
    layers = probes.mlp_reference_layers(model)
    ref, bound = reference.mlp_inference(x, layers)
    # power: batch statistics over these batches (training mode) would give other logits
    alt = np.concatenate([reference.mlp_training(x[i : i + batch_size], layers) for i in range(0, 60, batch_size)])
    verdict.power("batch_statistics_alternative", alt - ref, bound)
    # both runs are within `bound` of the exact inference result, so of each other within 2*bound;
    # the batch-size run is also held to the reference, so that a wrong mode in both cannot pass
    ok = verdict.within("batch_vs_600", out - full, 2 * bound)
    ok &= verdict.within("batch_vs_inference_reference", out - ref, bound)
    agree = float(np.mean(finite("logits", out).argmax(1) == finite("logits at 600", full).argmax(1)))
    verdict.record(label_agreement=agree)
    verdict.conclude(ok, f"batch {batch_size} vs 600: worst |logit diff| {probes.within_text(verdict, 'batch_vs_600')}, "
                         f"labels agree {agree:.0%}")
