"""The report's section on the trained-model claims across trainings, from reports/seeds/results.json
(written by `bnspec seeds`). No TensorFlow."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from bnspec import BnspecError


def load(out_dir: Path) -> dict | None:
    """reports/seeds/results.json, or None when `bnspec seeds` has not been run."""
    path = Path(out_dir) / "seeds" / "results.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        doc["seeds"], doc["cases"], doc["claims"], doc["code"]["fingerprint"]  # noqa: B018  (shape check)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BnspecError(f"{path}: not bnspec seeds' results ({exc}); run bnspec seeds again") from exc
    return doc


def _worst_ratio(evidence: dict) -> float | None:
    """The comparison nearest to (or furthest past) its bound, as a ratio (1 = at the bound)."""
    ratios = [v["ratio"] for v in evidence.values() if isinstance(v, dict) and set(v) == {"value", "bound", "ratio"}
              and isinstance(v["ratio"], (int, float))]
    return max(ratios) if ratios else None


def section(doc: dict, fingerprint: str) -> list[str]:
    seeds = doc["seeds"]
    by_claim: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for seed in seeds:
        for nodeid, c in doc["cases"].get(seed, {}).items():
            by_claim[c["claim"]][nodeid].append((seed, c))
    stale = doc["code"]["fingerprint"] != fingerprint
    lines = ["## Across trainings", ""]
    rows, unstable = [], 0
    for cid in sorted(by_claim):
        cases = by_claim[cid]
        changing = [n for n, per in cases.items() if len({(c["outcome"], c["observed"]) for _, c in per}) > 1
                    or len(per) < len(seeds)]
        unstable += len(changing)
        verdicts = sorted({c["observed"] or c["outcome"] for per in cases.values() for _, c in per})
        worst = [(r, s) for per in cases.values() for s, c in per for r in [_worst_ratio(c["evidence"])] if r is not None]
        margin = ""
        if worst:
            r, s = max(worst)
            margin = f"; the comparison nearest its bound: ratio {r:.2g} (seed {s})"
        rows.append(f"- {cid}: {len(cases)} case{'s' * (len(cases) != 1)}, "
                    + (f"**verdict changes with the seed** in {len(changing)}" if changing else f"{'/'.join(verdicts)} on every seed")
                    + margin)
    total = sum(len(c) for c in by_claim.values())
    lines.append(f"**The claims measured on a trained model keep their verdict on {total - unstable} of {total} cases "
                 f"across {len(seeds)} trainings** (seeds {', '.join(seeds)}; `bnspec seeds`, {doc['run']}, "
                 f"{doc['seconds']} s" + (f"; measured by older code `{doc['code']['fingerprint']}` †" if stale else "")
                 + "). A verdict that changed with the seed would rest on one training's luck.")
    return lines + [""] + rows + [""]
