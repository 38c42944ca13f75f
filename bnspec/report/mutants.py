"""The report's section on the mutation harness, from reports/mutants/results.json (written by
`bnspec mutants`). No TensorFlow: the harness itself is bnspec.mutants."""

from __future__ import annotations

import json
from pathlib import Path

from bnspec import BnspecError


def load(out_dir: Path) -> dict | None:
    path = Path(out_dir) / "mutants" / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BnspecError(f"{path}: unreadable mutation-harness results ({exc}); run bnspec mutants again") from exc


def section(doc: dict) -> list[str]:
    from bnspec import mutants  # the catalogue and the kill-matrix rendering live with the harness

    return mutants.render_section(doc)
