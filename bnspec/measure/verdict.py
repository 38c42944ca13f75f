"""The verdict vocabulary: how a claim test turns measurements into evidence and a verdict.

    ok = verdict.within("output_err", np.abs(y - ref), bound)   # recorded: max err, bound, ratio
    verdict.power("unbiased_alternative", np.abs(y_unbiased - ref), bound)  # else the test has no power
    verdict.conclude(ok, "max |y - ref| within its float32 bound")

The power rule lives in `Verdict.power` (see there): an alternative computed exactly must lie more than
twice the claim's bound away (`power(name, diff, bound)`), an alternative that is itself measured, or whose
own error `bound` already includes, more than once (`power(name, diff, bound, measured=True)`).

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

    # the power rule: how far an alternative must lie from the claim's prediction, in units of the claim's bound
    EXACT_FACTOR, MEASURED_FACTOR = 2.0, 1.0

    def power(self, name: str, alternative_diff, bound, *, measured: bool = False) -> None:
        """Require that the case can tell the claim from an alternative; otherwise it has no power here (an
        error of the test, NoPower). `alternative_diff` is the alternative (what the other mode, formula or
        implementation gives) minus the claim's prediction, `bound` the claim's own bound: the one its
        `within` allows the measurement for this quantity. The rule, in one place:

        - an alternative computed exactly (the default: a float64 reference of what another implementation
          would compute) must differ by more than 2 x `bound` somewhere. A float32 implementation of the
          alternative may itself sit one bound from its exact value and must still fail `within`;
        - `measured=True`: an alternative whose own error is already accounted for must differ by more than
          1 x `bound`. That is an alternative that is itself measured (a float32 computation of it, a
          variable left as a float32 step wrote it, another framework's output), a `bound` that already sums
          the claim's bound and the alternative's own (both computations' bounds), or a statistical threshold
          on measured quantities.

        Recorded as evidence `name` like `beyond`, with the bound the rule requires (2 x or 1 x `bound`), so
        that its ratio > 1 means "distinguishable"."""
        factor = self.MEASURED_FACTOR if measured else self.EXACT_FACTOR
        required = factor * np.asarray(finite(f"{name} bound", bound))
        if not self.beyond(name, alternative_diff, required):
            rule = "its own error already in the bound" if measured else "an exact alternative: 2 x the claim's bound"
            raise NoPower(f"{self.claim.id}: {name} = {self.evidence[name]['value']:.3g} does not exceed "
                          f"{self.evidence[name]['bound']:.3g} ({rule}): this case cannot tell the claim from its "
                          "alternative")

    def ratio(self, name: str) -> float:
        """The worst value/bound ratio recorded as evidence `name`, as a number (the record's "inf", a value
        over a zero bound, is float("inf"))."""
        r = self.evidence[name]["ratio"]
        return float("inf") if isinstance(r, str) else float(r)

    def quote(self, name: str, spec: str = ".3g", field: str = "ratio") -> str:
        """Evidence `name` for a summary line: its `field` ("ratio", "value" or "bound"; a plain record's
        value for "value") formatted with `spec`. A word (the record's "inf", verdict.equal's "shape
        differs", a recorded string) stays as it is."""
        v = self.evidence[name]
        if isinstance(v, dict):
            v = v[field]
        elif field != "value":
            raise KeyError(f"evidence {name!r} is a plain record, it has no {field!r}")
        return v if isinstance(v, str) else format(v, spec)

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

    def refusal(self, name: str, exc: BaseException, types, names=()) -> bool:
        """Whether the exception `exc` is the specific refusal a claim allows ("rejected with an error"): an
        instance of `types` whose message contains every one of `names` (a string, e.g. the refused argument,
        or a compiled regular expression that must match somewhere). Recorded as evidence `name` ("Type:
        message", first 300 characters) and `<name>_is_the_refusal`. The caller re-raises anything else: an
        unrelated exception (a junk file, a crash) is an error of the test, never the expected answer."""
        text = str(exc)
        specific = isinstance(exc, types) and all(n in text if isinstance(n, str) else n.search(text) is not None
                                                  for n in names)
        self.record(**{name: f"{type(exc).__name__}: {text[:300]}", f"{name}_is_the_refusal": specific})
        return specific

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
