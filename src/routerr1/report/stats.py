"""Numbers over the summary: paired-bootstrap intervals, AIQ per family, the display order.

`bootstrap_intervals` compares every method with the single models on the same resampled
questions (`routerr1.bootstrap`); `family_aiq` scores each family's cost-EM hull
(`routerr1.frontier.aiq`); `sort_summary` puts the routers first and the baselines in
`routerr1.methods.FAMILY_ORDER`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from routerr1.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, PairedBootstrap
from routerr1.frontier import aiq
from routerr1.methods import (
    AVERAGE,
    FAMILY_ORDER,
    NO_INTERVAL_FAMILIES,
    SINGLE_FAMILY,
    SINGLE_PREFIX,
)

__all__ = ["INTERVAL_COLUMNS", "bootstrap_intervals", "family_aiq", "sort_summary"]


def sort_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Routers by alpha first, then baselines in `FAMILY_ORDER`; "average" last per method."""
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    out = df.assign(
        _fam=df["family"].map(lambda f: rank.get(f, len(rank))),
        _avg=(df["benchmark"] == AVERAGE).astype(int),
    )
    out = out.sort_values(
        ["_fam", "family", "alpha", "method", "_avg", "benchmark"], na_position="last"
    )
    return out.drop(columns=["_fam", "_avg"]).reset_index(drop=True)


# --------------------------------------------------------------------------- intervals

INTERVAL_COLUMNS = [
    "method",
    "benchmark",
    "em_lo",
    "em_hi",
    "cost_lo",
    "cost_hi",
    "best_single",
    "d_em_best",
    "d_em_best_lo",
    "d_em_best_hi",
    "d_cost_best",
    "d_cost_best_lo",
    "d_cost_best_hi",
    "d_em_frontier",
    "d_em_frontier_lo",
    "d_em_frontier_hi",
    "seed_em_min",
    "seed_em_max",
]
_KEY = ["benchmark", "qid"]


def bootstrap_intervals(
    rows: pd.DataFrame,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> pd.DataFrame:
    """Paired-bootstrap intervals of every method against the single models, per page.

    ``rows``: evaluation rows (method, family, seed, benchmark, qid, em, cost). For each method
    (not a single model or the oracle) and page (each benchmark, and the macro "average" over the
    method's benchmarks), on the questions every single model answered too: the intervals of
    the method's EM and cost (whiskers in the Pareto plot), of EM and cost minus the best single
    model's (``best_single``, the highest EM on the page), and of EM minus the single-model
    frontier at the method's cost; see `routerr1.bootstrap`. A router's seeds are averaged per
    question; ``seed_em_min`` / ``seed_em_max`` give the spread of the seeds' own EM. EM in %,
    cost in $ per question. Empty when there are no single-model rows.
    """
    singles = rows[rows["family"] == SINGLE_FAMILY]
    if singles.empty:
        return pd.DataFrame(columns=INTERVAL_COLUMNS)
    s_em = singles.pivot_table(index=_KEY, columns="method", values="em", aggfunc="mean")
    s_cost = singles.pivot_table(index=_KEY, columns="method", values="cost", aggfunc="mean")
    known = s_em.index[s_em.notna().all(axis=1) & s_cost.notna().all(axis=1)]
    names = [m.removeprefix(SINGLE_PREFIX) for m in s_em.columns]
    cache: dict[tuple, PairedBootstrap] = {}
    out = []
    others = rows[~rows["family"].isin(NO_INTERVAL_FAMILIES)].assign(
        seed=lambda d: d["seed"].fillna(-1)
    )
    for method, mine in others.groupby("method", sort=False):
        em = mine.pivot_table(index=_KEY, columns="seed", values="em", aggfunc="mean")
        cost = mine.pivot_table(index=_KEY, columns="seed", values="cost", aggfunc="mean")
        # questions every seed of the method and every single model answered
        em = em[em.notna().all(axis=1) & cost.notna().all(axis=1)]
        em = em[em.index.isin(known)]
        cost = cost.loc[em.index]
        benchmarks = sorted(set(em.index.get_level_values("benchmark")))
        for page in [*benchmarks, AVERAGE]:
            part = em if page == AVERAGE else em.loc[[page]]
            if part.empty:
                continue
            q = part.index
            strata = q.get_level_values("benchmark").to_numpy()
            if tuple(q) not in cache:
                cache[tuple(q)] = PairedBootstrap(
                    s_em.loc[q].to_numpy(), s_cost.loc[q].to_numpy(), strata, n_resamples, seed,
                    level,
                )  # fmt: skip
            boot = cache[tuple(q)]
            best = boot.best_single()
            em_q, cost_q = part.to_numpy().T, cost.loc[q].to_numpy().T  # (seeds, questions)
            cmp = boot.compare(em_q, cost_q, best=best)
            per_seed = [100 * float(boot.macro_point(e)) for e in em_q]
            rec: dict[str, Any] = {"method": method, "benchmark": page}
            for name, scale in (("em", 100.0), ("cost", 1.0)):
                iv = cmp[name].scaled(scale)
                rec[f"{name}_lo"], rec[f"{name}_hi"] = iv.lo, iv.hi
            rec["best_single"] = names[best]
            for name, scale in (("d_em_best", 100), ("d_cost_best", 1), ("d_em_frontier", 100)):
                iv = cmp[name].scaled(scale)
                rec[name], rec[f"{name}_lo"], rec[f"{name}_hi"] = iv.estimate, iv.lo, iv.hi
            rec["seed_em_min"], rec["seed_em_max"] = min(per_seed), max(per_seed)
            out.append(rec)
    return pd.DataFrame(out, columns=INTERVAL_COLUMNS)


def family_aiq(summary: pd.DataFrame, benchmark: str = AVERAGE) -> pd.DataFrame:
    """AIQ per family over its methods' (cost, EM) points on one benchmark page.

    Costs are normalized by the min and max over all methods on that page, so the "single"
    family's AIQ is the quality of mixing pool models at random (RouterBench's zero router).
    """
    page = summary[summary["benchmark"] == benchmark]
    if page.empty:
        raise ValueError(f"no summary rows for benchmark {benchmark!r}")
    rng = (float(page["cost"].min()), float(page["cost"].max()))
    rows = []
    for fam, grp in sort_summary(page).groupby("family", sort=False):
        pts = list(zip(grp["cost"].astype(float), grp["em"].astype(float), strict=True))
        rows.append({"family": fam, "n_points": len(pts), "aiq": aiq(pts, rng)})
    return pd.DataFrame(rows, columns=["family", "n_points", "aiq"])
