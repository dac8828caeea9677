"""The beam-search plot: accuracy against N with its 95% interval, and the baselines as horizontal lines.
Pure: no Django. Uses matplotlib's object API (no pyplot state), so it is safe in a threaded server."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from forests.metrics.search import BASELINE_TITLES

_STYLES = {
    "random_rollout": ("tab:gray", ":"),
    "majority_vote": ("tab:green", "--"),
    "best_of_n": ("tab:orange", "-."),
    "weighted_best_of_n": ("tab:purple", "--"),
    "oracle": ("black", ":"),
}


def search_plot_png(report: Mapping[str, Any]) -> bytes:
    """A ``SearchReport.as_dict()`` drawn as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (deferred: matplotlib is heavy)
    from matplotlib.figure import Figure  # noqa: PLC0415 (deferred: matplotlib is heavy)

    figure = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    rows = [row for row in report.get("results", []) if row.get("accuracy") is not None]
    if rows:
        beams = [row["num_beams"] for row in rows]
        axes.errorbar(
            beams,
            [row["accuracy"] for row in rows],
            yerr=[row["ci95"] or 0.0 for row in rows],
            marker="o",
            capsize=4,
            color="tab:blue",
            label="beam search",
        )
        axes.set_xticks(beams)
        if len(beams) > 1 and max(beams) / max(min(beams), 1) >= 16:
            axes.set_xscale("log", base=2)
            axes.set_xticks(beams, [str(b) for b in beams])
    for name, baseline in (report.get("baselines") or {}).items():
        if baseline.get("accuracy") is None:
            continue
        color, style = _STYLES.get(name, ("tab:red", "--"))
        axes.axhline(baseline["accuracy"], color=color, linestyle=style, label=BASELINE_TITLES.get(name, name))
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("N (beams)")
    axes.set_ylabel(f"accuracy over {report.get('num_trees', 0)} trees")
    axes.set_title(
        f"{report.get('forest_name', '')}: {report.get('value_function_option', '')}, {report.get('aggregation', '')}",
        fontsize=10,
    )
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="lower right")
    else:
        axes.text(0.5, 0.5, "no tree with rollouts yet", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
