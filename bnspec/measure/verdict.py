"""The verdict vocabulary: how a claim test turns measurements into evidence and a verdict.

    ok = verdict.within("output_err", np.abs(y - ref), bound)   # recorded: max err, bound, ratio
    verdict.power("unbiased_alternative", np.abs(y_unbiased - ref), bound)  # else the test has no power
    verdict.conclude(ok, "max |y - ref| within its float32 bound")

The helpers reduce with NaN-propagating operations and turn any non-finite measurement into an *error* of the
test (`NonFiniteMeasurement`), never a verdict. `conclude` compares the observed verdict with the claim's
expected one for this run (flavour, Keras version, backend) and case, and fails the test when they differ; an
expected refutation must also be confirmed by the mechanism its rule names (`verdict.mechanism(name,
confirmed)`), or the refutation is not the expected one. The evidence travels to the controller process in
the test item's `user_properties` (bnspec.measure.plugin collects it).
"""

from __future__ import annotations

import numpy as np
import pytest

from bnspec import claims, results

PROP = "bnspec"


class NonFiniteMeasurement(Exception):
    """A measurement was NaN or infinite: an error of the test, never evidence for a verdict."""


class NoPower(Exception):
    """The test cannot tell the claim from its alternative on these inputs: its verdict would mean nothing."""


def _clean(value, name: str = "value"):
    """A JSON-able copy of an evidence value; a non-finite number is an error."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # also numpy.float64, a float subclass execnet cannot send
        value = float(value)
        if value != value or abs(value) == float("inf"):
            raise NonFiniteMeasurement(f"measurement {name!r} is {value}: a non-finite number is never evidence")
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, name) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist(), name)
    try:  # numpy scalars
        return _clean(value.item(), name)
    except (AttributeError, ValueError):
        return str(value)


def case_params(item) -> dict:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return {}
    out = {}
    for k, v in callspec.params.items():
        out[k] = v if isinstance(v, (bool, int, str, type(None))) else float(v) if isinstance(v, float) else str(v)
    return out


def not_applicable(reason: str):
    """Skip a case whose API does not exist on this Keras (a release before it was added): the claim
    is *not applicable* there, which is neither a verdict nor a failure."""
    pytest.skip(results.NOT_APPLICABLE + reason)


def finite(name: str, values) -> np.ndarray:
    """`values` as a float64 array; raises NonFiniteMeasurement if any element is NaN or infinite."""
    arr = np.asarray(values, dtype=np.float64)
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise NonFiniteMeasurement(f"measurement {name!r} has {bad} non-finite value(s) of {np.size(arr)}: "
                                   "a NaN or inf is never evidence for a verdict")
    if arr.size == 0:
        raise NonFiniteMeasurement(f"measurement {name!r} is empty")
    return arr


class Verdict:
    """Collects evidence for one test case and checks the observed verdict against the claim's.

    The comparison helpers share one spelling: each records `evidence[name] = {"value", "bound",
    "ratio"}` for the element whose value/bound ratio is largest (the nearest to its bound, or the
    furthest past it): ratio <= 1 means within. Each returns the comparison's outcome."""

    def __init__(self, item, claim: claims.Claim, run, version: str | None):
        self.item = item
        self.claim = claim
        self.params = case_params(item)
        self.flavour, self.backend, self.version = run.flavour, run.backend, version
        self.expect = claim.expectation(self.flavour, self.version, self.params, self.backend)
        self.evidence: dict = {}
        self.mechanisms: dict[str, dict] = {}
        self.observed: str | None = None
        self.summary = ""

    # ------------------------------------------------------------------ comparisons
    def _compare(self, name: str, value, bound) -> tuple[np.ndarray, np.ndarray, float]:
        v = np.abs(finite(name, value))
        b = finite(f"{name} bound", bound)
        if np.any(b < 0):
            raise ValueError(f"{name}: a bound must be >= 0")
        v, b = np.broadcast_arrays(v, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(b > 0, v / np.where(b > 0, b, 1.0), np.where(v > 0, np.inf, 0.0))
        # value and bound of the same element: the one nearest to (or furthest past) its bound; among
        # ties (several infinite ratios: a zero bound), the largest value
        worst = int(np.lexsort((v.ravel(), ratio.ravel()))[-1])
        self.evidence[name] = {"value": float(v.flat[worst]), "bound": float(b.flat[worst]),
                               "ratio": float(ratio.flat[worst]) if np.isfinite(ratio.flat[worst]) else "inf"}
        self._publish()
        return v, b, float(ratio.flat[worst])

    def within(self, name: str, err, bound) -> bool:
        """Every |err| <= its bound (elementwise, broadcast)."""
        v, b, _ = self._compare(name, err, bound)
        return bool(np.all(v <= b))

    def beyond(self, name: str, value, bound) -> bool:
        """Some |value| exceeds its bound: the measured quantity is outside what rounding explains."""
        v, b, _ = self._compare(name, value, bound)
        return bool(np.any(v > b))

    def power(self, name: str, alternative_diff, bound) -> None:
        """Require that the alternative (what the other mode/formula would give) differs from the claim's
        prediction by more than the bound somewhere; otherwise the test has no power here (an error)."""
        if not self.beyond(name, alternative_diff, bound):
            raise NoPower(f"{self.claim.id}: {name} = {self.evidence[name]['value']:.3g} does not exceed the bound "
                          f"{self.evidence[name]['bound']:.3g}: this case cannot tell the claim from its alternative")

    def equal(self, name: str, a, b) -> bool:
        """Bitwise equality of two finite arrays (e.g. a variable before and after a call)."""
        a, b = finite(name, a), finite(f"{name} (second)", b)
        same = a.shape == b.shape and bool(np.array_equal(a, b))
        diff = float(np.abs(a - b).max()) if a.shape == b.shape else "shape differs"
        self.evidence[name] = {"value": diff, "bound": 0.0, "ratio": 0.0 if same else "inf"}
        self._publish()
        return same

    def count_nonfinite(self, name: str, values) -> int:
        """How many elements are NaN/inf, recorded as a count: for claims *about* non-finite values
        (a NaN example poisoning a batch); the count itself is finite evidence."""
        arr = np.asarray(values, dtype=np.float64)
        n = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        self.record(**{name: n})
        return n

    def mechanism(self, name: str, confirmed: bool, detail: str = "") -> bool:
        """Record whether the mechanism `name` (named by an expected refutation's rule) was observed."""
        self.mechanisms[name] = {"confirmed": bool(confirmed), "detail": detail}
        self._publish()
        return bool(confirmed)

    def record(self, **numbers) -> None:
        self.evidence.update({k: _clean(v, k) for k, v in numbers.items()})
        self._publish()

    # ------------------------------------------------------------------ the verdict
    def conclude(self, holds: bool, summary: str) -> None:
        if self.observed is not None:
            raise RuntimeError("conclude() called twice in one test")
        self.observed = claims.HOLDS if bool(holds) else claims.REFUTED
        self.summary = summary
        self._publish()
        where = f"{self.flavour} {self.version} ({self.backend})"
        if self.observed != self.expect.verdict:
            pytest.fail(
                f"claim {self.claim.id} was expected to be {self.expect.verdict} on {where} "
                f"({self.expect.why or 'see bnspec/claims/'}) but is {self.observed}: {summary}",
                pytrace=False,
            )
        if self.observed == claims.REFUTED:
            m = self.mechanisms.get(self.expect.mechanism)
            if not (m and m["confirmed"]):
                self.mechanism_failed = True
                self._publish()
                pytest.fail(
                    f"claim {self.claim.id} is refuted on {where} as expected, but not by the mechanism the "
                    f"expectation names ({self.expect.mechanism!r}: "
                    f"{(m or {}).get('detail') or 'not confirmed by the test'}): {summary}",
                    pytrace=False,
                )

    def _publish(self) -> None:
        record = {
            "claim": self.claim.id, "params": self.params, "expected": self.expect.verdict,
            "observed": self.observed, "summary": self.summary, "evidence": self.evidence,
            "mechanisms": self.mechanisms, "mechanism": self.expect.mechanism or None,
        }
        if getattr(self, "mechanism_failed", False):
            record["mechanism_failed"] = True
        props = [p for p in self.item.user_properties if p[0] != PROP]
        self.item.user_properties[:] = props + [(PROP, record)]
