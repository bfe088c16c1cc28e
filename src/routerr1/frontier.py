"""Cost-quality frontiers: Pareto points, the mixing hull, and AIQ.

Pure numpy, so the report, the headroom analysis and the bootstrap share one definition:

- `pareto_frontier`: the non-dominated (cost, quality) points;
- `hull_curve` / `frontier_at`: the best quality reachable at a cost budget by randomly mixing
  operating points (or abstaining for free), i.e. the non-decreasing upper concave hull of the
  points plus (0, 0);
- `aiq`: the mean of that hull over a cost range (RouterBench's Average Improvement in Quality).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["aiq", "frontier_at", "frontier_values", "hull_curve", "pareto_frontier"]


def _as_points(points: Sequence[tuple[float, float]]) -> np.ndarray:
    arr = np.asarray(points, dtype=float).reshape(-1, 2) if len(points) else np.empty((0, 2))
    if not np.isfinite(arr).all():
        raise ValueError(f"points must be finite (cost, quality) pairs, got {list(points)!r}")
    return arr


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (cost, quality) points, sorted by cost (then quality desc).

    A point is dominated when another is no more expensive and no worse, and strictly better on
    one of the two. Identical points do not dominate each other, so both are kept.
    """
    arr = _as_points(points)
    keep = []
    for i, (c, q) in enumerate(arr):
        no_worse = (arr[:, 0] <= c) & (arr[:, 1] >= q)
        better = (arr[:, 0] < c) | (arr[:, 1] > q)
        if not (no_worse & better).any():
            keep.append(i)
    return sorted(keep, key=lambda i: (arr[i, 0], -arr[i, 1], i))


def _upper_hull(xy: np.ndarray) -> np.ndarray:
    """Upper concave hull of points with distinct, increasing x (monotone chain)."""
    hull: list[np.ndarray] = []
    for p in xy:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Drop the middle point when it lies on or below the chord to p.
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return np.array(hull)


def hull_curve(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (costs, qualities) of the best-quality-per-budget curve of ``points``.

    The points plus the free abstention point (0, 0), their upper concave hull (any point on it
    is a random mix of two operating points), cut at its peak: past the best-quality point the
    curve stays flat (budget left unspent). Read it with ``np.interp`` (which clamps).
    """
    arr = _as_points(points)
    if len(arr) == 0:
        raise ValueError("hull_curve needs at least one (cost, quality) point")
    if (arr[:, 0] < 0).any():
        raise ValueError(f"costs must be >= 0, got {arr[:, 0].min()!r}")
    pts = np.vstack([[0.0, 0.0], arr])
    # one point per cost: the best quality there (np.unique sorts the costs)
    costs, inverse = np.unique(pts[:, 0], return_inverse=True)
    best = np.full(len(costs), -np.inf)
    np.maximum.at(best, inverse, pts[:, 1])
    hull = _upper_hull(np.column_stack([costs, best]))
    hull = hull[: int(np.argmax(hull[:, 1])) + 1]  # concave, so rising up to its peak
    return hull[:, 0], hull[:, 1]


def frontier_at(points: Sequence[tuple[float, float]], cost: float | np.ndarray) -> np.ndarray:
    """Best quality reachable at ``cost`` by mixing ``points`` (see `hull_curve`).

    A method scoring above this at its own cost does something no mix of the given points can;
    below it, a random mix of them would do better for the same money.
    """
    hx, hy = hull_curve(points)
    return np.interp(np.asarray(cost, dtype=float), hx, hy)


def frontier_values(costs: np.ndarray, quality: np.ndarray, at: np.ndarray) -> np.ndarray:
    """`frontier_at` for many point sets at once (the bootstrap's resamples), vectorized.

    Row b of ``costs`` / ``quality`` (sets, points) is one set of points, read at ``at[b]``.
    Same value as `hull_curve`: the best mix of two points (abstention at (0, 0) included)
    whose costs bracket the budget, or the best single point within it (the flat part).
    """
    c = np.column_stack([np.zeros(len(costs)), np.asarray(costs, dtype=float)])
    q = np.column_stack([np.zeros(len(quality)), np.asarray(quality, dtype=float)])
    x = np.asarray(at, dtype=float)[:, None, None]
    ci, cj = c[:, :, None], c[:, None, :]
    qi, qj = q[:, :, None], q[:, None, :]
    bracket = (ci <= x) & (x <= cj) & (ci < cj)
    # pairs that do not bracket the budget may divide by ~0; np.where drops their values
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mix = np.where(bracket, qi + (qj - qi) * (x - ci) / (cj - ci), -np.inf)
    within = np.where(c <= x[:, :, 0], q, -np.inf)  # x[:, :, 0] has shape (sets, 1)
    return np.maximum(mix.max(axis=(1, 2)), within.max(axis=1))


def aiq(
    points: Sequence[tuple[float, float]], cost_range: tuple[float, float] | None = None
) -> float:
    """Average Improvement in Quality (after RouterBench): mean of the cost-quality hull.

    Definition implemented here, on linear (not log) dollar cost:
    1. Take the family's (cost, quality) points plus the free abstention point (0, 0): never
       answering costs nothing and scores nothing.
    2. Build their upper concave hull. Any point on it is reached by randomly mixing two
       operating points (or one with abstaining), so it is the best quality per cost budget.
    3. Make it non-decreasing: past the best-quality point it stays flat (budget left unspent).
    4. Average it over `cost_range` = (lo, hi), i.e. integrate over the cost normalized linearly
       to [0, 1]. The report passes the min and max cost over *all* methods on the page, so
       families are comparable; without it the points' own min and max are used.

    Properties: 0 <= aiq <= max quality; adding a point never lowers it (a family is not
    punished for offering a cheaper operating point); multiplying all costs and the range by a
    constant leaves it unchanged. If lo == hi (e.g. one point and no range) the hull's value at
    that cost is returned, so a single point scores its own quality. A family whose cheapest
    point costs more than lo is charged for it: below that cost it only reaches the abstention
    mix. Result is in the quality's units (EM % in the report).
    """
    arr = _as_points(points)
    if len(arr) == 0:
        raise ValueError("aiq needs at least one (cost, quality) point")
    if (arr[:, 0] < 0).any():
        raise ValueError(f"costs must be >= 0, got {arr[:, 0].min()!r}")
    lo, hi = cost_range if cost_range is not None else (arr[:, 0].min(), arr[:, 0].max())
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or not 0 <= lo <= hi:
        raise ValueError(f"cost_range must be finite with 0 <= lo <= hi, got {(lo, hi)!r}")
    hx, hy = hull_curve(arr)
    if hi == lo:
        return float(np.interp(lo, hx, hy))
    # Piecewise linear, flat past the last hull point (np.interp clamps), starts at cost 0.
    xs = np.unique(np.concatenate([[lo, hi], hx[(hx > lo) & (hx < hi)]]))
    ys = np.interp(xs, hx, hy)
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / (hi - lo)
