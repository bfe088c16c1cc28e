"""Did the trained routers route? The routing issue's figures, read from a finished run.

    python benchmarks/routing_claims.py --results results

Reads what the pipeline wrote (nothing is recomputed from the models):

* ``summary.duckdb``: the ``summary`` table (EM, cost per method and page) and ``intervals``
  (paired-bootstrap 95% intervals against the best single model and the frontier);
* ``headroom.csv``: the best learnable strategy (cascades, votes, text pre-routing, routing by
  benchmark) per page;
* ``routing.csv``: each router's share of first calls per model and benchmark;
* ``learning_curves.csv``: the GRPO reward per step, seed and alpha.

and prints, per router, each figure with the test it has to pass:

1. EM minus the best single model (interval above zero), and the share of the gap to the best
   learnable strategy it closes (>= 50%);
2. EM within the interval of the best single model's at <= 50% of its mean cost;
3. the routers' AIQ against the single models' (>= 1.15x);
4. models that each take >= 15% of first calls, and first calls per benchmark;
5. the reward of the last 10 GRPO steps against the first 10, and the seed spread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import pandas as pd

from routerr1.curves import learning_gain
from routerr1.methods import AVERAGE, ROUTER_FAMILY, SINGLE_FAMILY, SINGLE_PREFIX
from routerr1.report.stats import family_aiq
from routerr1.routing import ALL, NO_CALL

MIN_GAP_CLOSED = 0.5
MAX_COST_SHARE = 0.5
MIN_AIQ_RATIO = 1.15
MIN_FIRST_SHARE = 0.15


def read_tables(results: Path) -> dict[str, pd.DataFrame]:
    db = results / "summary.duckdb"
    if not db.is_file():
        raise SystemExit(f"--results: no {db}; run the pipeline's aggregate rule first")
    with duckdb.connect(str(db), read_only=True) as con:
        summary = con.execute("SELECT * FROM summary").df()
        intervals = con.execute("SELECT * FROM intervals").df()
    tables = {"summary": summary, "intervals": intervals}
    for name in ("headroom", "routing", "learning_curves"):
        path = results / f"{name}.csv"
        tables[name] = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    return tables


def _ci(est: float, lo: float, hi: float) -> str:
    return f"{est:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def quality_rows(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Figures 1 and 2 per router, on the average page, against the single model each router's
    intervals were computed against (``intervals.best_single``)."""
    summary, intervals, headroom = tables["summary"], tables["intervals"], tables["headroom"]
    page = summary[summary["benchmark"] == AVERAGE]
    singles = page[page["family"] == SINGLE_FAMILY].set_index("method")
    learnable = headroom[(headroom["benchmark"] == AVERAGE) & headroom["learned"].astype(bool)]
    best_learnable = learnable.sort_values("em", ascending=False).head(1)
    learnable_em = float(best_learnable["em"].iloc[0]) if len(best_learnable) else None
    rows, best_names = [], set()
    routers = page[page["family"] == ROUTER_FAMILY].sort_values("alpha")
    for r in routers.itertuples(index=False):
        iv = intervals[(intervals["method"] == r.method) & (intervals["benchmark"] == AVERAGE)]
        if iv.empty:
            continue
        iv = iv.iloc[0]
        best = singles.loc[SINGLE_PREFIX + iv.best_single]
        best_names.add(f"{iv.best_single} (EM {best.em:.1f}, ${best.cost:.3g}/q)")
        gap = learnable_em - float(best.em) if learnable_em is not None else 0.0
        rows.append(
            {
                "router": r.method,
                "em": float(r.em),
                "cost": float(r.cost),
                "d_em_best": _ci(iv.d_em_best, iv.d_em_best_lo, iv.d_em_best_hi),
                "beats_best": bool(iv.d_em_best_lo > 0),
                "gap_closed": float(iv.d_em_best) / gap if gap > 0 else float("nan"),
                "cost_share": float(r.cost) / float(best.cost),
                "matches_at_half_cost": bool(
                    iv.d_em_best_hi >= 0 and float(r.cost) <= MAX_COST_SHARE * float(best.cost)
                ),
                "d_em_frontier": _ci(iv.d_em_frontier, iv.d_em_frontier_lo, iv.d_em_frontier_hi),
                "seed_em": f"{iv.seed_em_min:.1f}..{iv.seed_em_max:.1f}",
            }
        )
    header = {
        "best_single": ", ".join(sorted(best_names)) or "no router with intervals",
        "best_learnable": (
            f"{best_learnable['strategy'].iloc[0]} (EM {learnable_em:.1f})"
            if learnable_em is not None
            else "none in headroom.csv"
        ),
    }
    return pd.DataFrame(rows), header


def routing_rows(routing: pd.DataFrame) -> pd.DataFrame:
    """Figure 4: first-call shares per router and benchmark."""
    if routing.empty:
        return routing
    first = [c for c in routing.columns if c.startswith("first:")]
    keep = routing[routing["family"] == ROUTER_FAMILY][["method", "benchmark", *first]]
    return keep.rename(columns={c: c.removeprefix("first:") for c in first})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="the run's results folder")
    args = ap.parse_args(argv)
    tables = read_tables(Path(args.results))

    quality, header = quality_rows(tables)
    print(f"best single model: {header['best_single']}")
    print(f"best learnable strategy (headroom): {header['best_learnable']}\n")
    print("## 1-2. EM and cost against the best single model (average page, 95% paired bootstrap)")
    print(quality.to_markdown(index=False, floatfmt=".3g"))

    aiq = family_aiq(tables["summary"], AVERAGE).set_index("family")["aiq"]
    if ROUTER_FAMILY in aiq and SINGLE_FAMILY in aiq and aiq[SINGLE_FAMILY] > 0:
        ratio = aiq[ROUTER_FAMILY] / aiq[SINGLE_FAMILY]
        verdict = "meets" if ratio >= MIN_AIQ_RATIO else "misses"
        print(
            f"\n## 3. AIQ: routers {aiq[ROUTER_FAMILY]:.2f}, single models "
            f"{aiq[SINGLE_FAMILY]:.2f}: {ratio:.2f}x ({verdict} {MIN_AIQ_RATIO}x)"
        )

    shares = routing_rows(tables["routing"])
    if not shares.empty:
        print("\n## 4. Share of first calls per model")
        print(shares.to_markdown(index=False, floatfmt=".2f"))
        models = [c for c in shares.columns if c not in ("method", "benchmark", NO_CALL)]
        for r in shares[shares["benchmark"] == ALL].itertuples(index=False):
            row = shares[(shares["method"] == r.method) & (shares["benchmark"] == ALL)]
            taken = [m for m in models if float(row[m].iloc[0]) >= MIN_FIRST_SHARE]
            print(f"- {r.method}: {len(taken)} model(s) with >= 15% of first calls: {taken}")

    if not tables["learning_curves"].empty:
        gain = learning_gain(tables["learning_curves"])
        print("\n## 5. Reward: first vs last 10 GRPO steps (mean over seeds), seed spread")
        print(gain.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
