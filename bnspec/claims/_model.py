"""What a claim is: `Claim` (data) and `Expect` (an expected verdict for some flavours, versions and
cases), plus the source names the topic modules share. No TensorFlow.

A claim is a statement that is either true or false on a given Keras. Its tests measure, case by
case (one case per parametrisation), whether it holds, and record the numbers. `expected` says
what each case should observe, as an ordered list of `Expect` rules (the first that matches wins),
keyed by flavour, by a version range of that flavour's Keras, by backend, and by test parameters
(`case="entry=predict"`). A claim false on some flavour is *expected refuted* there, and the rule
names the mechanism that refutes it (`mechanism=`): the test must observe that mechanism, so a
refutation by any other deviation (or by NaN) is not taken as the expected one.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bnspec.flavours import FAMILY

HOLDS, REFUTED = "holds", "refuted"
VERDICTS = (HOLDS, REFUTED)


def _conditions(case: str) -> list[tuple[str, str]]:
    return [(n.strip(), v.strip()) for n, _, v in (c.partition("=") for c in case.split(",") if c.strip())]


@dataclass(frozen=True)
class Expect:
    verdict: str
    flavour: str | None = None  # keras3 (also matches keras-nightly) | keras-nightly | tfkeras | None (any)
    versions: str = ""  # PEP 440 specifier on the flavour's Keras version, e.g. ">=3.16"
    case: str = ""  # "param=value[,param=value]" limiting the rule to some parametrisations
    why: str = ""
    mechanism: str = ""  # REFUTED rules: the name of the check (verdict.mechanism) that confirms `why`
    backend: str | None = None  # tensorflow | jax | torch | None (any)
    change: str = ""  # with `versions`: the change (PR, commit) that starts this range, for the release timeline

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")
        if self.verdict == REFUTED and not (self.why and self.mechanism):
            raise ValueError(f"an expected refutation needs why= and mechanism= (the check that confirms it): {self}")
        SpecifierSet(self.versions)  # validate early
        if self.change and not self.versions:
            raise ValueError(f"change= names what starts a version range: it needs versions= ({self})")
        for name, value in _conditions(self.case):
            if not name or not value:
                raise ValueError(f"case {self.case!r}: write param=value[,param=value]")

    def matches(self, flavour: str, version: str | None, params: dict, backend: str = "tensorflow") -> bool:
        if self.flavour and self.flavour not in (flavour, FAMILY.get(flavour)):
            return False
        if self.backend and self.backend != backend:
            return False
        if self.versions and (version is None or Version(version) not in SpecifierSet(self.versions, prereleases=True)):
            return False
        return self.matches_case(params)

    def matches_case(self, params: dict) -> bool:
        """Whether a test case's parameters satisfy this rule's `case=` conditions."""
        return all(str(params.get(name)) == value for name, value in _conditions(self.case))


@dataclass(frozen=True)
class Claim:
    id: str
    title: str  # a few words for the verdict matrix
    statement: str
    source: str
    expected: tuple[Expect, ...] = (Expect(HOLDS),)
    note: str = ""  # shown with the claim's detail in the report: how to read the evidence
    advice: str = ""  # for a practitioner: what to do about it (report, "What surprised us")
    topic: str = ""  # the topic module (bnspec/claims/<topic>.py) = the test module tests/claims/test_<topic>.py

    def expectation(self, flavour: str, version: str | None, params: dict, backend: str = "tensorflow") -> Expect:
        for rule in self.expected:
            if rule.matches(flavour, version, params, backend):
                return rule
        raise LookupError(f"claim {self.id}: no expected verdict for {flavour} {version} {params}")

    def stale_cases(self, collected: list[dict]) -> list[str]:
        """Problems with this claim's `case=` conditions, given the parameters of every collected test
        case of the claim: a condition naming a parameter or value no case has is a rule that can
        never match (a typo would otherwise fall through to the next rule silently)."""
        problems = []
        values: dict[str, set[str]] = {}
        for params in collected:
            for k, v in params.items():
                values.setdefault(k, set()).add(str(v))
        for rule in self.expected:
            if not rule.case:
                continue
            conds = _conditions(rule.case)
            if any(rule.matches_case(p) for p in collected):
                continue
            hints = []
            for n, v in conds:
                if n not in values:
                    hints.append(f"no parameter {n!r} (parameters: {', '.join(sorted(values)) or 'none'})")
                elif v not in values[n]:
                    hints.append(f"{n}={v!r} is not a value of {n} ({', '.join(sorted(values[n]))})")
            problems.append(f"claim {self.id}: Expect(case={rule.case!r}) matches no collected test case: "
                            + ("; ".join(hints) or "no case has all of these values together"))
        return problems


NB = "study notebook"
KD = "Keras docs, BatchNormalization"
PAPER = "Ioffe & Szegedy 2015"
PRECISE = "Wu & Johnson 2021, 'Rethinking \"Batch\" in BatchNorm'"
TORCH = "PyTorch docs, torch.nn.BatchNorm1d"
KERAS316 = ">=3.16.0.dev0"
HARDCODED_KERAS316 = (
    "from Keras 3.16 (seen in keras-nightly 3.16.0.dev) a training argument passed explicitly to a layer "
    "while building a Functional model wins over the outer flag again, as in Keras 2"
)
FUSED_UNBIASED = (
    "tf_keras runs 4-D inputs through TensorFlow's fused batch-norm kernel, which normalises with the "
    "biased variance but feeds the Bessel-corrected (unbiased, m/(m-1)) batch variance into the moving "
    "variance"
)
HARDCODED_KERAS3_FUNCTIONAL = (
    "Keras 3's Functional model passes an explicit outer training flag (predict/evaluate pass False) "
    "to every layer, overriding the flag baked into the graph; only model(x) (training=None) keeps it"
)
