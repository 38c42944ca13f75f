"""The paper's MNIST experiment (§4.1, Figure 1), reproduced by bnspec.paper: 50,000 SGD steps with and
without BN, cached after the first run. Marked slow: `-m "not slow"` skips it."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(keras, request):
    from bnspec import paper

    res = paper.all_results()
    # the figure and the checkpoint table go where `bnspec report` finds them
    paper.write_outputs(res, request.config.rootpath / "reports")
    return res, paper.summary(res)


def _acc(run):
    return np.array([c["test_accuracy"] for c in run["checkpoints"]])


@pytest.mark.claim("P07")
def test_bn_network_is_at_least_as_accurate(verdict, runs):
    res, s = runs
    steps = np.array([c["step"] for c in res["baseline-lr0.1"]["checkpoints"]])
    diff = _acc(res["bn-lr0.1"]) - _acc(res["baseline-lr0.1"])
    late = diff[steps >= 5000]
    verdict.record(min_bn_minus_baseline_from_5000=late.min(), final_bn=s["final_accuracy"]["bn-lr0.1"],
                   final_baseline=s["final_accuracy"]["baseline-lr0.1"], checkpoints=len(late))
    verdict.conclude(bool(np.all(late >= 0) and diff[-1] > 0),
                     f"BN - baseline test accuracy >= {late.min():+.4f} over {len(late)} checkpoints from step 5,000; "
                     f"final {s['final_accuracy']['bn-lr0.1']:.4f} vs {s['final_accuracy']['baseline-lr0.1']:.4f}")


@pytest.mark.claim("P08")
def test_bn_network_trains_faster(verdict, runs):
    res, s = runs
    reach, total = s["bn_steps_to_baseline_final"], s["baseline_steps"]
    verdict.record(bn_steps_to_baseline_final=reach, baseline_steps=total)
    verdict.conclude(reach is not None and reach < total / 2,
                     f"BN reaches the baseline's final accuracy ({s['final_accuracy']['baseline-lr0.1']:.4f}) at step "
                     f"{reach} of {total}")


@pytest.mark.claim("P09")
def test_sigmoid_inputs_are_more_stable_with_bn(verdict, runs):
    _, s = runs
    md, sd = s["median_drift"], s["spread_drift"]
    verdict.record(median_drift_baseline=md["baseline"], median_drift_bn=md["bn"], spread_drift_baseline=sd["baseline"],
                   spread_drift_bn=sd["bn"], median_factor=md["baseline"] / md["bn"], spread_factor=sd["baseline"] / sd["bn"])
    verdict.conclude(md["bn"] < md["baseline"] and sd["bn"] < sd["baseline"],
                     f"median drifts {md['baseline']:.2f} without BN vs {md['bn']:.2f} with ({md['baseline'] / md['bn']:.1f}x); "
                     f"15-85 spread {sd['baseline']:.2f} vs {sd['bn']:.2f} ({sd['baseline'] / sd['bn']:.1f}x)")


@pytest.mark.claim("P10")
def test_higher_learning_rate(verdict, runs):
    _, s = runs
    fa = s["final_accuracy"]
    verdict.record(**{f"final_{k}": v for k, v in fa.items()})
    verdict.conclude(fa["bn-lr0.5"] >= fa["baseline-lr0.1"] and fa["baseline-lr0.5"] < fa["bn-lr0.5"],
                     f"lr 0.5: BN {fa['bn-lr0.5']:.4f}, baseline {fa['baseline-lr0.5']:.4f}; "
                     f"lr 0.1: BN {fa['bn-lr0.1']:.4f}, baseline {fa['baseline-lr0.1']:.4f}")
