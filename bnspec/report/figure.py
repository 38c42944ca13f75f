"""reports/verdict_matrix.png: the landing page's verdict matrix as an image, and `matrix_png`, the coloured
matrix it and the release timeline (history_timeline.png) are drawn with (matplotlib, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

from bnspec import claims
from bnspec.measure import status as st
from bnspec.report import verdicts as v

COLOURS = {st.HOLDS: "#4caf50", st.REFUTED: "#9e9e9e", st.MIXED: "#90caf9", st.UNEXPECTED: "#e53935",
           st.ERROR: "#ff9800", st.UNMEASURED: "#ffffff"}


def verdict_matrix(page: v.Page, target: Path) -> Path:
    """The landing page's matrix (one column per CPU run key) as a PNG."""
    cols = page.columns
    keys = [d.key for d in cols]
    rows = list(claims.CLAIMS)
    cells = [[(COLOURS[page.status(d, c.id).status], v.cell(page.status(d, c.id)), "black") for d in cols] for c in rows]
    return matrix_png(target, cells, keys, [f"{c.id} {c.title[:38]}" for c in rows], COLOURS,
                      figsize=(2.2 + 1.3 * len(keys), 0.22 * len(rows) + 1.4), xfont=8, yfont=6.5, ncol=3, dpi=130)


def matrix_png(target: Path, cells: list[list[tuple[str, str, str]]], xlabels: list[str], ylabels: list[str],
               legend: dict[str, str], *, figsize, xfont=8, yfont=7, xrotation=0, ncol=3, dpi=130) -> Path:
    """A coloured matrix (cells[row][column] = (face colour, text, text colour)) with its column labels on
    top, row labels on the left and a legend (name -> colour) below, written atomically to `target`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=figsize)
    for i, row in enumerate(cells):
        for j, (face, text, colour) in enumerate(row):
            ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=face, edgecolor="#bdbdbd", lw=0.5))
            ax.text(j + 0.5, i + 0.55, text, ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlim(0, len(xlabels))
    ax.set_ylim(max(len(cells), 1), 0)
    ax.set_xticks([j + 0.5 for j in range(len(xlabels))], xlabels, fontsize=xfont, rotation=xrotation,
                  ha="left" if xrotation else "center")
    ax.xaxis.tick_top()
    ax.set_yticks([i + 0.5 for i in range(len(ylabels))], ylabels, fontsize=yfont)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(handles=[Patch(facecolor=col, edgecolor="#bdbdbd", label=name) for name, col in legend.items()],
              loc="upper center", bbox_to_anchor=(0.5, -0.002), ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(target)
    return target
