"""The paper's MNIST experiment (§4.1, Figure 1), reproduced by bnspec.subjects.paper: 50,000 SGD steps with and
without BN, cached after the first run. Marked slow: `-m "not slow"` skips it.

The claims are orderings between single runs (same seed, same initial weights and batch order for
both networks), read from the cached results; they are compared through the verdict's helpers, so
that a NaN (a diverged run's percentiles, say) is an error of the test and never an ordering.
Accuracies are fractions of the 10,000 test images, so the orderings have no rounding tolerance:
"at least" is <=, "higher" / "less" is strict. A run whose test logits or tracked sigmoid inputs turn
NaN or infinite (it diverged) raises bnspec.subjects.paper.NonFiniteRun: an error, never an accuracy. TensorFlow
only (the experiment does not go through Keras): skipped on the JAX and PyTorch backends."""

import numpy as np
import pytest

from bnspec.measure.verdict import finite
from tests.claims import _kit as probes

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def runs(keras, backend_name):
    if backend_name != "tensorflow":
        # bnspec.subjects.paper writes both networks with TensorFlow ops and runs 1,000 SGD steps per call in one
        # tf.function (a graph loop): no Keras layer is involved, so KERAS_BACKEND has nothing to change
        pytest.skip(f"TensorFlow-specific: the paper's experiment (bnspec.subjects.paper) is a TensorFlow graph loop "
                    f"that does not go through Keras; the backend is {backend_name}")
    from bnspec.subjects import paper

    # read from the cache only: reports/paper/ is written by `bnspec paper`, never by a test run (a
    # history job under another TensorFlow would otherwise overwrite the committed experiment)
    res = paper.all_results()
    return res, paper.summary(res)


def _acc(run, name: str) -> np.ndarray:
    return finite(f"{name} test accuracy", [c["test_accuracy"] for c in run["checkpoints"]])


@pytest.mark.claim("P07")
def test_bn_network_is_at_least_as_accurate(verdict, runs):
    """Test accuracy with BN vs without (lr 0.1): no lower at any checkpoint from step 5,000, higher at the last."""
    res, _ = runs
    steps = np.array([c["step"] for c in res["baseline-lr0.1"]["checkpoints"]])
    base, bn = _acc(res["baseline-lr0.1"], "baseline-lr0.1"), _acc(res["bn-lr0.1"], "bn-lr0.1")
    late = steps >= 5000
    # baseline <= BN at every checkpoint from 5,000 steps (ratio = the largest baseline / BN), and
    # BN > baseline at the last one (ratio = BN / baseline)
    at_least = verdict.within("baseline_vs_bn_from_5000", base[late], bn[late])
    higher = verdict.beyond("final_bn_vs_baseline", bn[-1], base[-1])
    verdict.record(min_bn_minus_baseline_from_5000=float(np.min(bn[late] - base[late])), final_bn=bn[-1],
                   final_baseline=base[-1], checkpoints=int(late.sum()))
    verdict.conclude(at_least and higher,
                     f"BN - baseline test accuracy >= {np.min(bn[late] - base[late]):+.4f} over {int(late.sum())} "
                     f"checkpoints from step 5,000; final {bn[-1]:.4f} vs {base[-1]:.4f}")


@pytest.mark.claim("P08")
def test_bn_network_trains_faster(verdict, runs):
    """The first checkpoint where BN reaches the baseline's final test accuracy vs half the baseline's steps."""
    res, s = runs
    steps = np.array([c["step"] for c in res["baseline-lr0.1"]["checkpoints"]])
    base, bn = _acc(res["baseline-lr0.1"], "baseline-lr0.1"), _acc(res["bn-lr0.1"], "bn-lr0.1")
    total = int(steps[-1])
    reached = bn >= base[-1]
    reach = int(steps[np.argmax(reached)]) if reached.any() else None
    if reach != s["bn_steps_to_baseline_final"]:  # the summary the report shows must say the same
        raise AssertionError(f"bnspec.subjects.paper.summary says step {s['bn_steps_to_baseline_final']}, the checkpoints {reach}")
    verdict.record(bn_steps_to_baseline_final=reach, baseline_steps=total, baseline_final=base[-1])
    # steps are whole numbers: "fewer than half" is reach <= total/2 - 1
    ok = reach is not None and verdict.within("bn_steps_to_baseline_final", reach, total / 2 - 1)
    verdict.conclude(ok, f"BN reaches the baseline's final accuracy ({base[-1]:.4f}) at step {reach} of {total}")


@pytest.mark.claim("P09")
def test_sigmoid_inputs_are_more_stable_with_bn(verdict, runs):
    """Drift of a sigmoid input's median and 15-85 percentile spread over the checkpoints, without BN vs with."""
    res, _ = runs

    def drift(name):  # range over the checkpoints of the median, and of the 15-85 percentile spread
        p = finite(f"{name} percentiles", [c["percentiles"] for c in res[name]["checkpoints"]])
        return float(np.ptp(p[:, 1])), float(np.ptp(p[:, 2] - p[:, 0]))

    (md_base, sd_base), (md_bn, sd_bn) = drift("baseline-lr0.1"), drift("bn-lr0.1")
    # baseline drift > BN drift (ratio = how many times more the baseline drifts)
    median = verdict.beyond("median_drift_baseline_vs_bn", md_base, md_bn)
    spread = verdict.beyond("spread_drift_baseline_vs_bn", sd_base, sd_bn)
    verdict.record(median_drift_baseline=md_base, median_drift_bn=md_bn, spread_drift_baseline=sd_base,
                   spread_drift_bn=sd_bn)
    verdict.conclude(median and spread,
                     f"median drifts {md_base:.2f} without BN vs {md_bn:.2f} with "
                     f"({probes.ratio_text(verdict, 'median_drift_baseline_vs_bn', '.1f')}x); 15-85 spread {sd_base:.2f} "
                     f"vs {sd_bn:.2f} ({probes.ratio_text(verdict, 'spread_drift_baseline_vs_bn', '.1f')}x)")


@pytest.mark.claim("P10")
def test_higher_learning_rate(verdict, runs):
    """Final test accuracies: BN at lr 0.5 vs the baseline at lr 0.1, and vs the baseline at lr 0.5."""
    res, _ = runs
    fa = {k: float(_acc(v, k)[-1]) for k, v in res.items()}
    verdict.record(**{f"final_{k}": v for k, v in fa.items()})
    # BN at 5x ends at least as accurate as the baseline at 1x (baseline / BN <= 1), and the baseline
    # at 5x below BN at 5x (BN / baseline > 1)
    trains = verdict.within("baseline_lr0.1_vs_bn_lr0.5", fa["baseline-lr0.1"], fa["bn-lr0.5"])
    ahead = verdict.beyond("bn_lr0.5_vs_baseline_lr0.5", fa["bn-lr0.5"], fa["baseline-lr0.5"])
    verdict.conclude(trains and ahead,
                     f"lr 0.5: BN {fa['bn-lr0.5']:.4f}, baseline {fa['baseline-lr0.5']:.4f}; "
                     f"lr 0.1: BN {fa['bn-lr0.1']:.4f}, baseline {fa['baseline-lr0.1']:.4f}")
