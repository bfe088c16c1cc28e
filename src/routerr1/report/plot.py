"""pareto.pdf: EM against mean dollar cost per question, one page per benchmark.

`plot_pareto` draws a summary as returned by `routerr1.report.aggregate.aggregate`: the
Router-R1 sweeps with their bootstrap whiskers, every baseline, the Pareto frontier, the
single-model mixing frontier and the pool's headroom strategies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from routerr1.frontier import frontier_at, pareto_frontier
from routerr1.io import atomic_path
from routerr1.methods import (
    AVERAGE,
    ORACLE_FAMILY,
    ROUTER_FAMILY,
    SINGLE_FAMILY,
    SWEEP_FAMILIES,
    UNSEEN_FAMILY,
)
from routerr1.report.stats import sort_summary

__all__ = ["plot_pareto"]

# Where zero-cost points are drawn on the log axis when no positive cost gives a scale.
_ZERO_COST_FLOOR = 1e-9
# "*", "X", "D" and the hollow "o" are kept for the oracle, random, knn and largest baselines.
_MARKERS = ("s", "^", "v", "P", "h", "<", ">", "p", "d", "H", "8")
# (family, legend label, line style, alpha-label offset in points)
_SWEEPS = (
    (ROUTER_FAMILY, "Router-R1", {"linestyle": "-", "marker": "o"}, (-5, 5)),
    (
        UNSEEN_FAMILY,
        "Router-R1 + unseen models",
        {"linestyle": "--", "marker": "o", "markerfacecolor": "white"},
        (6, -12),
    ),
)
# Baselines that need telling apart at a glance; "largest" is hollow and larger because it sits
# exactly on its own single-model point.
_BASELINE_STYLE: dict[str, dict] = {
    "oracle": {"marker": "*", "ms": 14},
    "largest": {"marker": "o", "ms": 15, "markerfacecolor": "none", "markeredgewidth": 1.6},
    "random": {"marker": "X", "ms": 9},
    "knn": {"marker": "D", "ms": 8},
}


def _cost_floor(costs: np.ndarray) -> float:
    """Where to draw zero costs on a log axis: a decade below the cheapest positive cost."""
    pos = costs[costs > 0]
    return float(pos.min()) / 10.0 if pos.size else _ZERO_COST_FLOOR


# headroom strategies drawn on the Pareto pages: hollow grey markers
_HEADROOM_MARKERS = {
    "best cascade": "v",
    "best vote": "p",
    "vote of all": "h",
    "pre-route (text)": "d",
    "oracle": "*",
}


def _whiskers(ax, rows: pd.DataFrame, floor: float) -> None:
    """Bootstrap intervals of a sweep's EM (vertical) and cost (horizontal)."""
    if "em_lo" not in rows.columns:
        return
    rows = rows[rows["em_lo"].notna()]
    if rows.empty:
        return
    x, y = rows["x"].to_numpy(float), rows["em"].to_numpy(float)
    lo_x = np.maximum(rows["cost_lo"].to_numpy(float), floor)
    hi_x = np.maximum(rows["cost_hi"].to_numpy(float), floor)
    ax.errorbar(
        x,
        y,
        yerr=[np.maximum(y - rows["em_lo"], 0), np.maximum(rows["em_hi"] - y, 0)],
        xerr=[np.maximum(x - lo_x, 0), np.maximum(hi_x - x, 0)],
        fmt="none",
        ecolor="C0",
        elinewidth=0.9,
        capsize=2.5,
        alpha=0.6,
    )


def _headroom_points(ax, page: pd.DataFrame, headroom: pd.DataFrame, floor: float) -> None:
    """The pool's headroom strategies on this page, and the single-model mixing frontier."""
    singles = page[page["family"] == SINGLE_FAMILY]
    if not singles.empty:
        pts = list(zip(singles["cost"].astype(float), singles["em"].astype(float), strict=True))
        xs = np.geomspace(max(floor, 1e-300), max(float(page["x"].max()), floor), 200)
        ax.plot(xs, frontier_at(pts, xs), ":", color="0.55", lw=1.2, label="single-model mixes")
    if headroom is None or headroom.empty:
        return
    has_oracle = bool((page["family"] == ORACLE_FAMILY).any())
    part = headroom[headroom["benchmark"] == page["benchmark"].iloc[0]]
    for r in part.itertuples(index=False):
        marker = _HEADROOM_MARKERS.get(r.strategy)
        if marker is None or (r.strategy == "oracle" and has_oracle):
            continue
        ax.plot(
            [max(float(r.cost), floor)],
            [r.em],
            linestyle="none",
            marker=marker,
            ms=10 if marker == "*" else 8,
            color="0.3",
            markerfacecolor="none",
            markeredgewidth=1.3,
            label=f"headroom: {r.strategy}",
        )


def _page_figure(
    summary: pd.DataFrame, benchmark: str, headroom: pd.DataFrame | None = None
) -> Figure:
    """One Pareto page: EM against mean cost, routers joined in alpha order, frontier dashed."""
    page = sort_summary(summary[summary["benchmark"] == benchmark])
    costs = page["cost"].to_numpy(dtype=float)
    floor = _cost_floor(costs)
    clipped = bool((costs <= 0).any())
    page = page.assign(x=np.maximum(costs, floor))

    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for family, label, style, offset in _SWEEPS:
        routers = page[page["family"] == family].sort_values("alpha")
        if routers.empty:
            continue
        ax.plot(routers["x"], routers["em"], color="C0", lw=1.8, ms=7, label=label, **style)
        _whiskers(ax, routers, floor)
        for r in routers.itertuples(index=False):
            ax.annotate(
                f"α={r.alpha:g}",
                (r.x, r.em),
                textcoords="offset points",
                # Upper left stays clear of a sweep that rises with cost; the unseen sweep
                # labels below so the two sweeps' labels do not overprint.
                xytext=offset,
                ha="right" if offset[0] < 0 else "left",
                fontsize=8,
                color="C0",
            )
    baselines = page[~page["family"].isin(SWEEP_FAMILIES)]
    for i, r in enumerate(baselines.itertuples(index=False)):
        style = {"marker": _MARKERS[i % len(_MARKERS)], "ms": 8}
        style.update(_BASELINE_STYLE.get(r.family, {}))
        ax.plot(
            [r.x], [r.em], linestyle="none", color=f"C{1 + i % 9}", label=f"{r.method}", **style
        )

    # The oracle reads the gold answers, so it bounds the frontier rather than being on it.
    deployable = page[page["family"] != ORACLE_FAMILY]
    if not deployable.empty:
        front = pareto_frontier(list(zip(deployable["cost"], deployable["em"], strict=True)))
        fx = deployable["x"].to_numpy()[front]
        fy = deployable["em"].to_numpy()[front]
        # Extend to the most expensive point so the step reads "best EM within this budget".
        fx = np.append(fx, page["x"].max())
        fy = np.append(fy, fy[-1])
        label = "Pareto frontier" + (" (excl. oracle)" if len(deployable) < len(page) else "")
        ax.plot(fx, fy, "--", color="0.4", lw=1.2, drawstyle="steps-post", label=label)
    _headroom_points(ax, page, headroom, floor)

    ax.set_xscale("log")
    xlabel = "mean cost per question ($, log scale)"
    if clipped:
        xlabel += f"; zero cost drawn at {floor:.0e}"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("EM (%)")
    n_bench = int(page["n_benchmarks"].max()) if benchmark == AVERAGE else 1
    title = f"{benchmark}: EM vs cost"
    if benchmark == AVERAGE:
        title += f" (macro average over {n_bench} benchmark{'s' if n_bench != 1 else ''})"
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return fig


def plot_pareto(
    summary: pd.DataFrame, pdf_path: Path, headroom: pd.DataFrame | None = None
) -> None:
    """Write a multipage PDF: page 1 the "average", then one page per benchmark (sorted).

    Each page plots mean EM against mean dollar cost per question on a log axis; zero costs are
    drawn a decade below the cheapest positive cost (or at 1e-9 if all are zero), as the axis
    label says. Router-R1 points are joined in alpha order, with whiskers for their bootstrap
    intervals of EM and cost when the summary has them (`bootstrap_intervals`); the dashed step
    line is the Pareto frontier of every method except the oracle (an upper bound that reads
    the gold answers); the dotted line is the best EM a random mix of single models reaches at
    each cost. With ``headroom`` (results/headroom.csv) the pool's headroom strategies are drawn
    as hollow grey markers.
    """
    needed = {"method", "family", "alpha", "benchmark", "em", "cost", "n_benchmarks"}
    missing = sorted(needed - set(summary.columns))
    if missing:
        raise ValueError(f"summary is missing column(s) {', '.join(missing)}")
    if summary.empty:
        raise ValueError("summary is empty: nothing to plot")
    benchmarks = sorted(b for b in summary["benchmark"].unique() if b != AVERAGE)
    pages = ([AVERAGE] if (summary["benchmark"] == AVERAGE).any() else []) + benchmarks

    with atomic_path(pdf_path) as tmp:
        # No CreationDate: the same summary gives a byte-identical PDF.
        with PdfPages(tmp, metadata={"CreationDate": None}) as pdf:
            for b in pages:
                pdf.savefig(_page_figure(summary, b, headroom))
