"""Meta-tests of the verdict helpers' rules (bnspec.measure.verdict.Verdict): the power rule in one place
(`power`: an exact alternative must lie beyond 2x the claim's bound, a measured one beyond 1x), the evidence
readers (`ratio`, `quote`) and the specific-refusal check (`refusal`). Direct calls on a bare Verdict, no
pytest child and no TensorFlow."""

import re

import numpy as np
import pytest

from bnspec.measure import verdict as vd


def _bare_verdict():
    """A Verdict without a pytest item or claim: only its comparison helpers are exercised."""
    v = vd.Verdict.__new__(vd.Verdict)
    v.item, v.evidence, v.mechanisms, v.observed, v.summary = None, {}, {}, None, ""
    v.claim, v.params, v.expect = type("C", (), {"id": "K01"}), {}, None
    v._publish = lambda: None
    return v


# --------------------------------------------------------------------------- the power rule


@pytest.mark.parametrize("times", [1.0, 1.5, 2.0])
def test_an_exact_alternative_within_twice_the_bound_has_no_power(times):
    """A float64 alternative 1x..2x the claim's bound away: a float32 implementation of it could sit one bound
    nearer and pass `within`, so the case cannot tell them apart (the old helper accepted anything past 1x)."""
    v = _bare_verdict()
    with pytest.raises(vd.NoPower, match="2 x the claim's bound"):
        v.power("alt", np.array([times * 1e-6, 0.0]), 1e-6)
    assert v.evidence["alt"]["bound"] == pytest.approx(2e-6)  # the separation the rule requires


def test_an_exact_alternative_beyond_twice_the_bound_has_power():
    v = _bare_verdict()
    v.power("alt", np.array([0.0, 2.5e-6]), 1e-6)
    assert v.evidence["alt"] == {"value": 2.5e-6, "bound": 2e-6, "ratio": pytest.approx(1.25)}


@pytest.mark.parametrize("times, ok", [(0.5, False), (1.0, False), (1.5, True)])
def test_a_measured_alternative_needs_only_the_bound(times, ok):
    """measured=True: the alternative's own error is in the value (or in the bound passed): 1x."""
    v = _bare_verdict()
    if ok:
        v.power("alt", times * 1e-6, 1e-6, measured=True)
        assert v.evidence["alt"]["bound"] == 1e-6
    else:
        with pytest.raises(vd.NoPower, match="already in the bound"):
            v.power("alt", times * 1e-6, 1e-6, measured=True)


def test_the_rule_applies_elementwise_with_broadcast_bounds():
    """Per-element bounds: power needs one element past *its own* doubled bound, not past the largest bound."""
    v = _bare_verdict()
    v.power("alt", np.array([3.0, 1.0]), np.array([1.0, 100.0]))  # element 0: 3 > 2 x 1
    assert v.evidence["alt"] == {"value": 3.0, "bound": 2.0, "ratio": 1.5}
    with pytest.raises(vd.NoPower):
        v.power("alt2", np.array([1.9, 150.0]), np.array([1.0, 100.0]))


def test_power_is_keyword_only_for_measured():
    """`measured` must be spelled out at the call site: a positional True cannot slip in as a factor."""
    v = _bare_verdict()
    with pytest.raises(TypeError):
        v.power("alt", 5.0, 1.0, True)


def test_a_zero_bound_power_needs_any_change_either_way():
    """The bitwise "it moved" checks (bound 0): any non-zero difference, exact or measured."""
    v = _bare_verdict()
    v.power("moved", np.array([0.0, 1e-30]), 0.0, measured=True)
    v.power("moved_exact", np.array([0.0, 1e-30]), 0.0)
    with pytest.raises(vd.NoPower):
        v.power("still", np.zeros(3), 0.0, measured=True)


@pytest.mark.parametrize("bad", [np.array([np.nan]), np.array([np.inf])])
def test_power_on_non_finite_values_or_bounds_is_an_error(bad):
    v = _bare_verdict()
    with pytest.raises(vd.NonFiniteMeasurement):
        v.power("alt", bad, 1.0)
    with pytest.raises(vd.NonFiniteMeasurement):
        v.power("alt", 1.0, bad, measured=True)


# --------------------------------------------------------------------------- reading evidence back


def test_ratio_and_quote_read_the_recorded_evidence():
    v = _bare_verdict()
    v.within("err", np.array([1e-7, 3e-7]), 1e-6)
    v.within("zero", 1e-9, 0.0)
    v.record(traces=1, word="loaded")
    assert v.ratio("err") == pytest.approx(0.3) and v.ratio("zero") == float("inf")
    assert v.quote("err") == "0.3" and v.quote("zero") == "inf"  # "inf" stays the word
    assert v.quote("err", ".1e", "value") == "3.0e-07" and v.quote("err", ".1e", "bound") == "1.0e-06"
    assert v.quote("traces", "d", "value") == "1" and v.quote("word", ".2e", "value") == "loaded"
    with pytest.raises(KeyError):
        v.quote("traces")  # a plain record has no ratio


# --------------------------------------------------------------------------- the specific refusal


def test_refusal_requires_the_type_and_every_name_in_the_message():
    v = _bare_verdict()
    exc = ValueError("Unrecognized keyword arguments passed to BatchNormalization: {'fused': False}")
    assert v.refusal("error", exc, ValueError, ("Unrecognized keyword arguments", "'fused'"))
    assert v.evidence["error"].startswith("ValueError: Unrecognized") and v.evidence["error_is_the_refusal"] is True
    assert not v.refusal("e2", exc, TypeError, ("'fused'",))  # the wrong type
    assert not v.refusal("e3", exc, ValueError, ("'virtual_batch_size'",))  # does not name the argument
    assert v.evidence["e3_is_the_refusal"] is False


def test_a_junk_file_is_not_a_refusal():
    """The C12 trap: a load that fails for any reason (here: not an HDF5 file at all) is not the refusal of a
    multi-axis BN layer."""
    v = _bare_verdict()
    junk = OSError("Unable to synchronously open file (file signature not found)")
    assert not v.refusal("error", junk, ValueError, ("Shape mismatch", "bn"))


def test_refusal_names_may_be_patterns():
    """A refusal whose wording is not known in advance (C07: an empty batch) is matched by a pattern."""
    v = _bare_verdict()
    empty = re.compile(r"empty|\b0\b", re.IGNORECASE)
    assert v.refusal("e", ValueError("Cannot normalise an empty batch"), ValueError, (empty,))
    assert v.refusal("e", ValueError("batch size 0 is not supported"), ValueError, (empty,))
    assert not v.refusal("e", ValueError("Input 0 of layer 'bn' is incompatible: expected axis -1 ..."), ValueError,
                         (re.compile("empty", re.IGNORECASE),))
