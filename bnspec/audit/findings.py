"""What an audit reports: `Finding` records, the `Findings` list, and each finding's claim verdict on
this Keras. No Keras, no TensorFlow.

A finding names the layer path (`outer/base/conv1_bn`), a severity, the measured or read evidence,
the claim behind it (an id of bnspec's catalogue, e.g. N05) with that claim's expected verdict on
the Keras that runs the model (flavour, version, backend), and the fix. A claim id that the
catalogue does not (yet) hold is still named; its verdict then reads "claim not in this catalogue".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SEVERITIES = ("info", "warning", "error")
RANK = {name: i for i, name in enumerate(SEVERITIES)}
NOT_IN_CATALOGUE = "claim not in this catalogue"
NO_CASE = "no expected verdict for this case"


@dataclass
class Finding:
    id: str  # the claim behind the finding (N05, C02, ...)
    check: str  # stable name of the check (hardcoded-training, ...)
    severity: str  # info | warning | error
    layer: str  # layer path from the root model, "/"-separated; the model's name for model-wide findings
    title: str  # one line: what is wrong
    evidence: dict = field(default_factory=dict)  # what was read or measured
    fix: str = ""
    verdict: str = ""  # the claim's expected verdict here: holds | refuted | NOT_IN_CATALOGUE | NO_CASE
    verdict_detail: str = ""  # per case, with the catalogue's reason
    claim: str = ""  # the claim's statement (empty when not in the catalogue)
    source: str = "static"  # static | dynamic
    confirmed: list = field(default_factory=list)  # dynamic measurements that show this finding's effect
    affects: list = field(default_factory=list)  # layer paths its effect reaches (measurements there attach to it)

    def __post_init__(self):
        if self.severity not in RANK:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


class Findings(list):
    """A list of `Finding` with the views a test or a CI gate needs:

        result = bnspec.audit.check(model)
        assert not result.errors, result.table()
    """

    def __init__(self, items=(), *, context: dict | None = None, notes: list | None = None,
                 measured: dict | None = None):
        super().__init__(items)
        self.context = dict(context or {})  # model, flavour, keras version, backend, data, mode
        self.notes = list(notes or [])  # what was skipped and why
        self.measured = dict(measured or {})  # dynamic measurements (also those that found nothing)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self if f.severity == "warning"]

    @property
    def infos(self) -> list[Finding]:
        return [f for f in self if f.severity == "info"]

    def at_least(self, severity: str) -> list[Finding]:
        return [f for f in self if RANK[f.severity] >= RANK[severity]]

    def ids(self, severity: str = "info") -> set[tuple[str, str]]:
        """{(claim id, layer path)} at or above `severity`: what the gallery tests compare."""
        return {(f.id, f.layer) for f in self.at_least(severity)}

    def to_json(self) -> dict:
        counts = {s: sum(f.severity == s for f in self) for s in SEVERITIES}
        return _jsonable({"context": self.context, "summary": counts, "findings": [f.to_dict() for f in self],
                          "notes": self.notes, "measured": self.measured})

    def table(self, max_group: int = 4) -> str:
        from bnspec.audit.render import table

        return table(self, self.context, self.notes, SEVERITIES, max_group=max_group)

    def __str__(self) -> str:
        return self.table()


def _jsonable(obj):
    """Plain JSON types (numpy scalars/arrays become floats/lists; NaN/inf become strings, so the
    JSON stays strict and a non-finite measurement is visible as such)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        if obj != obj:
            return "nan"
        if obj in (float("inf"), float("-inf")):
            return "inf" if obj > 0 else "-inf"
        return obj
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


# --------------------------------------------------------------------------- which Keras, which verdict


@dataclass(frozen=True)
class Target:
    """The Keras whose behaviour the verdicts describe: the installed flavour, or (nothing installed)
    the version that saved the file."""

    flavour: str
    version: str | None
    backend: str
    origin: str  # "installed" | "file metadata" | "unknown"

    def describe(self) -> str:
        return f"{self.flavour} {self.version or '(version unknown)'}, {self.backend} backend"

    def version_tuple(self) -> tuple[int, ...] | None:
        return _vtuple(self.version)


def _vtuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    out = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if not part.isdigit() else part
        if not part.isdigit():
            if digits and part.startswith(digits):
                out.append(int(digits))
            break
        out.append(int(part))
    return tuple(out) or None


def target(run=None, file_version: str | None = None, file_family: str | None = None) -> Target:
    """The Keras whose verdicts apply: the run's flavour at its installed version (package metadata only, no
    import) on the run's backend; where that flavour is not installed, the version a saved file names. `run`
    (a bnspec.run.Run) is None when the environment names no valid run: a static audit still reports."""
    from bnspec import flavours

    flavour = run.flavour if run is not None else "keras3"
    backend = run.backend if run is not None else "tensorflow"
    version = flavours.distribution_version(flavour)
    if version:
        return Target(flavour, version, backend, "installed")
    if file_version:
        fam = file_family or ("tfkeras" if file_version.startswith("2.") else "keras3")
        return Target(fam, file_version, "tensorflow" if fam == "tfkeras" else backend, "file metadata")
    return Target(flavour, None, backend, "unknown")


def lookup(claim_id: str, target: Target, cases: list[dict] | None = None) -> dict:
    """The catalogue's expectation for `claim_id` on `target`, per case (a dict of test parameters).

    Returns {"verdict", "detail", "statement", "known"}: verdict is "holds"/"refuted" when every case
    agrees, "mixed" when they differ, NOT_IN_CATALOGUE / NO_CASE otherwise. Never raises: the
    catalogue is data that other people edit, an audit must still report."""
    cases = cases or [{}]
    try:
        from bnspec import claims

        claim = claims.BY_ID.get(claim_id)
    except Exception as exc:  # noqa: BLE001
        return {"verdict": NOT_IN_CATALOGUE, "detail": f"the catalogue could not be read ({type(exc).__name__})",
                "statement": "", "known": False, "cases": {}}
    if claim is None:
        return {"verdict": NOT_IN_CATALOGUE, "detail": NOT_IN_CATALOGUE, "statement": "", "known": False,
                "cases": {}}
    per_case, parts = {}, []
    for params in cases:
        label = ",".join(f"{k}={v}" for k, v in params.items()) or "all cases"
        try:
            try:
                rule = claim.expectation(target.flavour, target.version, params, backend=target.backend)
            except TypeError:  # an older catalogue without backends
                rule = claim.expectation(target.flavour, target.version, params)
            per_case[label] = rule.verdict
            parts.append(f"{label}: {rule.verdict}" + (f" ({rule.why})" if getattr(rule, "why", "") else ""))
        except Exception:  # noqa: BLE001 - LookupError: no rule for this case
            per_case[label] = NO_CASE
            parts.append(f"{label}: {NO_CASE}")
    values = set(per_case.values())
    verdict = values.pop() if len(values) == 1 else "mixed"
    return {"verdict": verdict, "detail": f"{target.describe()}: " + "; ".join(parts), "statement": claim.statement,
            "known": True, "cases": per_case}


def make(claim_id: str, check: str, severity: str, layer: str, title: str, target: Target, *,
         cases: list[dict] | None = None, evidence: dict | None = None, fix: str = "", source: str = "static",
         verdict: dict | None = None) -> Finding:
    """A finding with its claim's verdict filled in from the catalogue."""
    v = verdict or lookup(claim_id, target, cases)
    return Finding(id=claim_id, check=check, severity=severity, layer=layer, title=title, evidence=evidence or {},
                   fix=fix, verdict=v["verdict"], verdict_detail=v["detail"], claim=v["statement"], source=source)


class UsageError(ValueError):
    """The audit cannot start: the model or the data cannot be read (the CLI exits 2)."""
