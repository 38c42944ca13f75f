"""Whether a trap is live on the Keras under audit: the claim catalogue decides where it holds the claim
(findings.lookup); where it does not yet, the version range believed from the field-trap list
(../shared/field/TRAPS.md) is the fallback, and the finding says so."""

from __future__ import annotations

from bnspec.audit.findings import Target, lookup

# Where a claim is not in the catalogue yet, the range in which the trap is believed live.
FALLBACK_RANGES = {
    "C01": "fit() overrides a construction-time training=False on Keras 3.0-3.15 Functional models",
    "C02": "the default leaks on Keras 3.0-3.15; Resizing/CenterCrop from 3.6",
    "C06": "Keras 3 stores BN statistics in the 16-bit policy dtype; tf_keras keeps float32",
    "C09": "tf_keras clamps epsilon to 1.001e-5 for 4-D/5-D inputs (TRAPS.md; measured since: not on TF 2.21)",
}


def before(target: Target, version: tuple) -> bool:
    v = target.version_tuple()
    return True if v is None else v[: len(version)] < version


def at_least(target: Target, version: tuple) -> bool:
    v = target.version_tuple()
    return True if v is None else v[: len(version)] >= version


def keras3_before_316(target: Target) -> bool:
    return target.flavour in ("keras3", "keras-nightly") and before(target, (3, 16))


def is_keras3(target: Target) -> bool:
    return target.flavour in ("keras3", "keras-nightly")


def gate(claim_id: str, target: Target, cases: list[dict], trap_verdict: str, fallback: bool):
    """(is the trap live on this Keras, the catalogue's verdict). A claim in the catalogue decides;
    otherwise `fallback` (the believed range from TRAPS.md) does."""
    verdict = lookup(claim_id, target, cases)
    if verdict["known"] and verdict["verdict"] in ("holds", "refuted"):
        return verdict["verdict"] == trap_verdict, verdict
    if verdict["known"] and verdict["verdict"] == "mixed":
        return any(v == trap_verdict for v in verdict["cases"].values()), verdict
    verdict = dict(verdict)
    verdict["detail"] = (f"{verdict['detail']}; applied here from the believed range in the field-trap list "
                         f"({FALLBACK_RANGES.get(claim_id, 'see TRAPS.md')}) on {target.describe()}")
    return fallback, verdict
