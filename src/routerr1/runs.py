"""`routerr1 runs`: compare evaluation runs straight from the MLflow tracking store.

Evaluation runs (tag ``stage=evaluate``) log ``<benchmark>.em``, ``.f1``, ``.cost`` and
``.pool_calls`` and carry the tags ``method``, ``family``, ``alpha``, ``benchmarks`` and
``pool_hash``. This command fetches them with ``mlflow.search_runs``, reshapes the per-benchmark
metrics with DuckDB SQL (UNPIVOT, then one column per metric), adds the macro average over each
run's benchmarks, and prints one row per (method, benchmark). When a job was rerun, only the
latest finished run of each ``routerr1.key`` is shown.

    routerr1 runs                              # sqlite:///results/mlflow.db, every benchmark
    routerr1 runs --benchmark average --format markdown
"""

from __future__ import annotations

import argparse
import sys

import duckdb
import pandas as pd

from routerr1.methods import AVERAGE, FAMILY_ORDER
from routerr1.tracking import RUN_KEY_TAG, add_store_arguments, missing_store

METRICS = ("em", "f1", "cost", "pool_calls")
COLUMNS = ["method", "family", "alpha", "benchmark", "em", "f1", "cost", "pool_calls", "pool_hash"]

_TABLE_SQL = """
WITH latest AS (
    SELECT * FROM runs
    QUALIFY row_number() OVER (PARTITION BY run_key ORDER BY start_time DESC, run_id) = 1
),
long AS (
    UNPIVOT (SELECT run_key, COLUMNS('^metrics\\.') FROM latest)
    ON COLUMNS('^metrics\\.') INTO NAME metric VALUE value
),
parts AS (
    SELECT run_key, value,
           regexp_extract(metric, '^metrics\\.(.+)\\.(em|f1|cost|pool_calls)$', ['bench', 'name'])
               AS m
    FROM long
),
per_benchmark AS (
    SELECT run_key, m.bench AS benchmark,
           max(value) FILTER (WHERE m.name = 'em') AS em,
           max(value) FILTER (WHERE m.name = 'f1') AS f1,
           max(value) FILTER (WHERE m.name = 'cost') AS cost,
           max(value) FILTER (WHERE m.name = 'pool_calls') AS pool_calls
    FROM parts
    WHERE m.bench <> ''
    GROUP BY ALL
),
with_average AS (
    SELECT * FROM per_benchmark
    UNION ALL
    -- unweighted over benchmarks, as in the report's "average" page
    SELECT run_key, $average, avg(em), avg(f1), avg(cost), avg(pool_calls)
    FROM per_benchmark GROUP BY run_key
)
SELECT l.method, l.family, TRY_CAST(nullif(l.alpha, '') AS DOUBLE) AS alpha, w.benchmark,
       w.em, w.f1, w.cost, w.pool_calls, left(l.pool_hash, 12) AS pool_hash
FROM with_average w JOIN latest l USING (run_key)
WHERE $benchmark IS NULL OR w.benchmark = $benchmark
ORDER BY coalesce(list_position($families, l.family), 999), l.family, alpha NULLS LAST,
         l.method, w.benchmark = $average, w.benchmark
"""


def _tag(runs: pd.DataFrame, name: str) -> pd.Series:
    col = f"tags.{name}"
    return runs[col] if col in runs.columns else pd.Series([None] * len(runs), index=runs.index)


def comparison_table(runs: pd.DataFrame, benchmark: str | None = None) -> pd.DataFrame:
    """One row per (method, benchmark) from ``mlflow.search_runs`` output; see module docstring.

    Only finished evaluation runs count. Runs without a ``routerr1.key`` tag are keyed by id.
    """
    empty = pd.DataFrame(columns=COLUMNS)
    if runs.empty:
        return empty
    runs = runs[(_tag(runs, "stage") == "evaluate") & (runs["status"] == "FINISHED")]
    metric_cols = [
        c
        for c in runs.columns
        if c.startswith("metrics.") and c.rsplit(".", 1)[-1] in METRICS and c.count(".") >= 2
    ]
    if runs.empty or not metric_cols:
        return empty
    run_key = _tag(runs, RUN_KEY_TAG).fillna(runs["run_id"])
    # a router of another training seed evaluates under "eval/<method>/seed~S": keep it apart
    seed_level = run_key.str.extract(r"(/seed~\d+)$", expand=False).fillna("")
    frame = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "start_time": runs["start_time"],
            "run_key": run_key,
            "method": _tag(runs, "method").fillna("") + seed_level,
            "family": _tag(runs, "family").fillna(""),
            "alpha": _tag(runs, "alpha").fillna(""),
            "pool_hash": _tag(runs, "pool_hash").fillna(""),
            **{c: runs[c].astype(float) for c in metric_cols},
        }
    )
    con = duckdb.connect()
    try:
        con.register("runs", frame)
        params = {"average": AVERAGE, "benchmark": benchmark, "families": list(FAMILY_ORDER)}
        return con.execute(_TABLE_SQL, params).df()[COLUMNS]
    finally:
        con.close()


def _format(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    shown = table.assign(
        alpha=table["alpha"].map(lambda a: "" if pd.isna(a) else f"{a:g}"),
        em=table["em"].map("{:.1f}".format),
        f1=table["f1"].map("{:.1f}".format),
        cost=table["cost"].map("{:.3e}".format),
        pool_calls=table["pool_calls"].map("{:.2f}".format),
    )
    if fmt == "markdown":
        lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in shown.itertuples(index=False)]
        return "\n".join(lines) + "\n"
    return shown.to_string(index=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="routerr1 runs",
        description="Compare evaluation runs (EM and F1 in %, cost in $ per question).",
    )
    add_store_arguments(parser)
    parser.add_argument("--benchmark", help=f"one benchmark, or {AVERAGE!r} (default: all)")
    parser.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    args = parser.parse_args(argv)

    if error := missing_store(args.tracking_uri):
        print(error, file=sys.stderr)
        return 2
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    if mlflow.get_experiment_by_name(args.experiment) is None:
        print(f"--experiment: no experiment named {args.experiment!r}", file=sys.stderr)
        return 2
    runs = mlflow.search_runs(
        experiment_names=[args.experiment],
        filter_string="tags.stage = 'evaluate'",
        output_format="pandas",
    )
    table = comparison_table(runs, args.benchmark)
    if table.empty:
        print("no finished evaluation runs", file=sys.stderr)
        return 1
    sys.stdout.write(_format(table, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
