"""Practice and later literature, measured on the cached MNIST model: batch composition, frozen-BN
fine-tuning, PreciseBN (Wu & Johnson 2021) and the train-inference gap."""

import numpy as np
import pytest

from bnspec import popstats, probes, reference
from bnspec.model import bn_layers


@pytest.mark.claim("L01")
@pytest.mark.parametrize("training", [False, None, True])
def test_output_depends_on_batch_companions_only_in_training(verdict, trained, mnist, rng, training):
    model = trained.fresh()  # training=True moves the moving statistics
    targets = mnist.x_test[:20]
    others = mnist.x_test[1000:3000]
    _, bound = reference.mlp_inference(targets, probes.mlp_reference_layers(model))
    worst = 0.0
    for i, target in enumerate(targets):
        outs = []
        for _ in range(2):  # the same example with two different sets of 59 companions
            batch = np.concatenate([target[None], others[rng.choice(len(others), 59, replace=False)]])
            out = model(batch) if training is None else model(batch, training=training)
            outs.append(np.asarray(out, np.float64)[0])
        worst = max(worst, float((np.abs(outs[0] - outs[1]) / (2 * bound[i])).max()))
    depends = worst > 1.0  # beyond what float32 rounding of two evaluations can explain
    verdict.record(worst_diff_over_rounding_bound=worst, examples=len(targets))
    verdict.conclude(depends if training else not depends,
                     f"training={training}: changing the 59 companions moves an example's logits by up to "
                     f"{worst:.3g} x the float32 rounding bound")


def _fit_batches(model, mnist, first, n):
    x, y = mnist.x_train[first * 60 : (first + n) * 60], mnist.y_train[first * 60 : (first + n) * 60]
    model.fit(x, y, batch_size=60, epochs=1, verbose=0, shuffle=False)


@pytest.mark.claim("L02")
@pytest.mark.parametrize("freeze", ["before_compile", "after_fit_recompiled", "after_fit_no_recompile"])
def test_frozen_bn_fine_tuning(verdict, keras, trained, mnist, freeze):
    from bnspec.model import compile_model

    model = trained.fresh()
    if freeze == "before_compile":
        for layer in bn_layers(model):
            layer.trainable = False
        compile_model(model, keras)
    else:
        compile_model(model, keras)
        _fit_batches(model, mnist, 0, 2)  # builds the training function with BN trainable
        for layer in bn_layers(model):
            layer.trainable = False
        if freeze == "after_fit_recompiled":
            compile_model(model, keras)
    before = probes.snapshot(model)
    _fit_batches(model, mnist, 2, 5)
    delta = probes.grouped_changes(model, before, probes.snapshot(model))
    verdict.record(**{f"max_change_{k}": v for k, v in delta.items()})
    verdict.conclude(delta["moving"] == 0.0 and delta["gamma_beta"] == 0.0 and delta["kernels"] > 0,
                     f"{freeze}: fit() moved the statistics by {delta['moving']:.2e}, gamma/beta by "
                     f"{delta['gamma_beta']:.2e}, kernels by {delta['kernels']:.2e}")


def _losses(model, x, y):
    return reference.softmax_cross_entropy(np.asarray(model.predict(x, batch_size=1000, verbose=0)), y)


@pytest.mark.claim("L03")
def test_precise_bn_is_no_worse_than_ema(verdict, trained, mnist):
    model = trained.fresh()
    ema_loss = _losses(model, mnist.x_test, mnist.y_test)
    n = len(mnist.x_train) // 60 * 60
    info = popstats.recompute(model, (mnist.x_train[i : i + 60] for i in range(0, n, 60)), unbiased=True)
    precise_loss = _losses(model, mnist.x_test, mnist.y_test)
    d = precise_loss - ema_loss
    se = float(d.std(ddof=1) / np.sqrt(len(d)))
    acc = lambda m: float((np.asarray(m.predict(mnist.x_test, batch_size=1000, verbose=0)).argmax(1)  # noqa: E731
                           == mnist.y_test.argmax(1)).mean())
    verdict.record(ema_test_loss=ema_loss.mean(), precise_test_loss=precise_loss.mean(), mean_difference=d.mean(),
                   standard_error=se, batches=info["batches"], seconds=info["seconds"],
                   precise_test_accuracy=acc(model))
    verdict.conclude(d.mean() <= 2 * se,
                     f"test loss {ema_loss.mean():.5f} (EMA) vs {precise_loss.mean():.5f} (recomputed over "
                     f"{info['batches']} batches): difference {d.mean():+.1e} (2 s.e. = {2 * se:.1e})")


@pytest.mark.claim("L04")
def test_train_inference_gap_grows_as_batch_shrinks(verdict, tf, trained, mnist):
    model = trained.fresh()
    x, y = mnist.x_test[:2400], mnist.y_test[:2400]
    inference = reference.softmax_cross_entropy(np.asarray(model(x, training=False)), y)
    step = tf.function(lambda b: model(b, training=True), reduce_retracing=True)
    gaps, per_example = {}, {}
    for size in (600, 60, 8, 2):
        logits = np.concatenate([np.asarray(step(x[i : i + size])) for i in range(0, len(x), size)])
        per_example[size] = reference.softmax_cross_entropy(logits, y) - inference
        gaps[size] = float(per_example[size].mean())
    # each step down in batch size must widen the gap by more than 2 standard errors of the
    # paired per-example difference
    steps = []
    for big, small in ((600, 60), (60, 8), (8, 2)):
        d = per_example[small] - per_example[big]
        steps.append((float(d.mean()), float(2 * d.std(ddof=1) / np.sqrt(len(d)))))
    verdict.record(**{f"gap_batch_{k}": v for k, v in gaps.items()}, inference_loss=inference.mean(),
                   steps_and_2se=steps)
    verdict.conclude(all(mean > tol for mean, tol in steps),
                     "test-loss gap (batch statistics - moving statistics): "
                     + ", ".join(f"batch {k}: {v:+.4f}" for k, v in gaps.items()))
