"""The claim registry: every documented claim about Batch Normalization, as data. No TensorFlow.

One module per topic, `bnspec/claims/<topic>.py`, holds that topic's claims (`CLAIMS`), its title
(`TITLE`) and its place in the report (`ORDER`); the claims' tests live in the module of the same
name, `tests/claims/test_<topic>.py`. A claim's `topic` is that module's name. Modules are found
by themselves: adding a topic is adding the two files.

    from bnspec import claims
    claims.get("K01").expectation("keras3", "3.15.1", {"batch": 60})
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import replace

from bnspec.claims._model import HOLDS, REFUTED, VERDICTS, Claim, Expect  # noqa: F401


def _discover():
    topics, found = [], []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        topics.append((getattr(module, "ORDER", 1000), info.name, module))
    topics.sort(key=lambda t: (t[0], t[1]))
    for _, name, module in topics:
        found += [replace(c, topic=name) for c in module.CLAIMS]
    ids = [c.id for c in found]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"claim ids defined twice: {', '.join(dupes)}")
    return tuple(found), {name: module.TITLE for _, name, module in topics}


CLAIMS, TOPICS = _discover()  # TOPICS: topic module name -> title, in report order
BY_ID = {c.id: c for c in CLAIMS}


def get(claim_id: str) -> Claim:
    try:
        return BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim id {claim_id!r}; known: {', '.join(BY_ID)}") from None
