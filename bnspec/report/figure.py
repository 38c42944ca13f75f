"""reports/verdict_matrix.png: the landing page's verdict matrix as an image (matplotlib, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

from bnspec import claims
from bnspec.report import verdicts as v

COLOURS = {v.HOLDS: "#4caf50", v.REFUTED: "#9e9e9e", v.MIXED: "#90caf9", v.UNEXPECTED: "#e53935",
           v.ERROR: "#ff9800", v.UNMEASURED: "#ffffff"}


def verdict_matrix(docs: list[dict], target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from bnspec import provenance

    fp = provenance.fingerprint()
    keys = [v.run_label(d) for d in docs]
    sums = {v.run_label(d): v.summarise(d, fp) for d in docs}
    rows = list(claims.CLAIMS)
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * len(keys), 0.22 * len(rows) + 1.4))
    for i, c in enumerate(rows):
        for j, k in enumerate(keys):
            s = sums[k][c.id]
            ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=COLOURS[s["status"]], edgecolor="#bdbdbd", lw=0.5))
            ax.text(j + 0.5, i + 0.55, v.cell(s), ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(keys))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([j + 0.5 for j in range(len(keys))], keys, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([i + 0.5 for i in range(len(rows))], [f"{c.id} {c.title[:38]}" for c in rows], fontsize=6.5)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(handles=[Patch(facecolor=col, edgecolor="#bdbdbd", label=name) for name, col in COLOURS.items()],
              loc="upper center", bbox_to_anchor=(0.5, -0.002), ncol=3, fontsize=7, frameon=False)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(target)
    return target
