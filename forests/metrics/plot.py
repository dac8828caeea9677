"""The beam-search plot: accuracy against N (log2 axis) with its 95% interval, one line per search report, and the
baselines as horizontal lines. Pure: no Django. Uses matplotlib's object API (no pyplot state), so it is safe in a
threaded server.

Several reports on one plot stay readable: each report has its own colour, marker and dash, and its points are
shifted a little along N (on the log axis), so lines that coincide are still seen side by side. A baseline with the
same accuracy in every report (random rollout, majority vote, oracle: they do not depend on the value function) is
drawn once; one that differs (best-of-N picks by the value function) is drawn per report, in the report's colour.
The legend sits outside the axes, right of the data. Texts are drawn as paths (matplotlib's default
``svg.fonttype``), so an SVG holds no text element and no script.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from forests.metrics.search import BASELINE_TITLES

PLOT_FORMATS = ("svg", "png")
NO_ROLLOUTS = "no tree with rollouts yet"
_BASELINE_STYLES = {
    "random_rollout": ("tab:gray", ":"),
    "majority_vote": ("tab:green", "--"),
    "best_of_n": ("tab:orange", "-."),
    "weighted_best_of_n": ("tab:purple", "--"),
    "oracle": ("black", ":"),
}
_LINE_COLOURS = ("tab:blue", "tab:red", "tab:olive", "tab:cyan", "tab:brown", "tab:pink", "navy", "darkgoldenrod")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DASHES = ("-", "--", "-.", ":")
_SHIFT_LOG2 = 0.06  # how far apart, in log2(N), the points of successive reports sit
_SAME = 1e-9


def report_label(report: Mapping[str, Any]) -> str:
    """How a report is named in a legend: its value function and aggregation (and its number, when it has one)."""
    label = f"{report.get('value_function_option', '')}, {report.get('aggregation', '')}"
    return f"#{report['id']} {label}" if report.get("id") is not None else label


def _rows(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        row
        for row in report.get("results") or []
        if isinstance(row, Mapping) and isinstance(row.get("num_beams"), int) and row.get("accuracy") is not None
    ]


def _baselines(reports: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Each baseline's accuracy by report index, in the order the reports name them."""
    found: dict[str, list[tuple[int, float]]] = {}
    for index, report in enumerate(reports):
        for name, baseline in (report.get("baselines") or {}).items():
            if isinstance(baseline, Mapping) and isinstance(baseline.get("accuracy"), int | float):
                found.setdefault(name, []).append((index, float(baseline["accuracy"])))
    return found


def search_plot(reports: Sequence[Mapping[str, Any]], *, fmt: str = "svg", title: str = "") -> bytes:
    """``SearchReport.as_dict()``s drawn on one plot, as SVG (or PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (deferred: matplotlib is heavy)
    from matplotlib.figure import Figure  # noqa: PLC0415 (deferred: matplotlib is heavy)

    if fmt not in PLOT_FORMATS:
        raise ValueError(f"a plot is drawn as {' or '.join(PLOT_FORMATS)}, not {fmt!r}")
    figure = Figure(figsize=(9, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    beams: set[int] = set()
    many = len(reports) > 1
    for index, report in enumerate(reports):
        rows = _rows(report)
        if not rows:
            continue
        shift = 2 ** ((index - (len(reports) - 1) / 2) * _SHIFT_LOG2) if many else 1.0
        beams.update(row["num_beams"] for row in rows)
        axes.errorbar(
            [row["num_beams"] * shift for row in rows],
            [row["accuracy"] for row in rows],
            yerr=[row.get("ci95") or 0.0 for row in rows],
            marker=_MARKERS[index % len(_MARKERS)],
            markersize=6,
            markerfacecolor="none" if index % 2 else None,
            linestyle=_DASHES[index % len(_DASHES)],
            capsize=3,
            color=_LINE_COLOURS[index % len(_LINE_COLOURS)],
            label=f"beam search: {report_label(report)}" if many else "beam search",
        )
    for name, values in _baselines(reports).items():
        colour, style = _BASELINE_STYLES.get(name, ("tab:red", "--"))
        title_of = BASELINE_TITLES.get(name, name)
        first = values[0][1]
        if len(values) == len(reports) and all(abs(value - first) <= _SAME for _, value in values):
            axes.axhline(first, color=colour, linestyle=style, linewidth=1.2, label=title_of)
            continue
        for index, value in values:
            axes.axhline(
                value,
                color=_LINE_COLOURS[index % len(_LINE_COLOURS)],
                linestyle=style,
                linewidth=1.0,
                alpha=0.8,
                label=f"{title_of}: {report_label(reports[index])}",
            )
    axes.set_xscale("log", base=2)
    if beams:
        ticks = sorted(beams)
        axes.set_xticks(ticks, [str(b) for b in ticks])
        axes.minorticks_off()
        low, high = min(ticks), max(ticks)
        axes.set_xlim(low / 2**0.5, high * 2**0.5)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("N (beams, log2 scale)")
    trees = sorted({report.get("num_trees", 0) for report in reports})
    axes.set_ylabel(f"accuracy over {' / '.join(str(t) for t in trees) or 0} trees")
    if not title and len(reports) == 1:
        title = f"{reports[0].get('forest_name', '')}: {report_label(reports[0])}"
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    else:
        axes.text(0.5, 0.5, NO_ROLLOUTS, ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {}
    figure.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()
