"""Load every evaluation parquet into DuckDB, check it, summarize it, and write the outputs.

`aggregate` writes the DuckDB file (tables ``eval_rows``, ``summary``, ``intervals``),
summary.csv and summary.md; see `routerr1.report` for what they hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from routerr1.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from routerr1.io import atomic_path
from routerr1.methods import AVERAGE, SUMMARY_COLUMNS, SWEEP_FAMILIES
from routerr1.report.markdown import render_markdown
from routerr1.report.stats import bootstrap_intervals, sort_summary

__all__ = ["aggregate"]

_NOT_NULL = tuple(c for c in SUMMARY_COLUMNS if c != "alpha")


def _check_columns(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"evaluation file not found: {path}")
        names = set(pq.read_schema(path).names)
        missing = [c for c in SUMMARY_COLUMNS if c not in names]
        if missing:
            raise ValueError(f"{path}: missing required column(s) {', '.join(missing)}")


_LOAD_SQL = """
CREATE TABLE eval_rows AS
SELECT * REPLACE (
    CAST(method AS VARCHAR) AS method,
    CAST(family AS VARCHAR) AS family,
    CAST(alpha AS DOUBLE) AS alpha,
    CAST(benchmark AS VARCHAR) AS benchmark,
    CAST(qid AS VARCHAR) AS qid,
    CAST(em AS DOUBLE) AS em,
    CAST(f1 AS DOUBLE) AS f1,
    CAST(cost AS DOUBLE) AS cost,
    CAST(pool_calls AS BIGINT) AS pool_calls,
    CAST(invalid_actions AS BIGINT) AS invalid_actions,
    CAST(pool_errors AS BIGINT) AS pool_errors
)
FROM read_parquet($files, union_by_name = true, filename = 'source_file')
"""

# n counts questions; a router trained with several seeds has one row per question and seed,
# and its means average over seeds (every seed answers the same questions)
_SUMMARY_SQL = f"""
CREATE TABLE summary AS
WITH per_benchmark AS (
    SELECT method, family, alpha, benchmark,
           count(DISTINCT qid) AS n,
           greatest(count(DISTINCT seed), 1) AS n_seeds,
           CAST(1 AS BIGINT) AS n_benchmarks,
           100 * avg(em) AS em,
           100 * avg(f1) AS f1,
           avg(cost) AS cost,
           avg(pool_calls) AS pool_calls,
           avg(invalid_actions) AS invalid_actions,
           CAST(sum(pool_errors) AS BIGINT) AS pool_errors,
           avg(unseen_calls) AS unseen_calls
    FROM eval_rows
    GROUP BY method, family, alpha, benchmark
),
macro AS (
    -- unweighted over benchmarks, so a large benchmark does not dominate (as in the paper)
    SELECT method, family, alpha, '{AVERAGE}' AS benchmark,
           CAST(sum(n) AS BIGINT) AS n,
           max(n_seeds) AS n_seeds,
           count(*) AS n_benchmarks,
           avg(em) AS em,
           avg(f1) AS f1,
           avg(cost) AS cost,
           avg(pool_calls) AS pool_calls,
           avg(invalid_actions) AS invalid_actions,
           CAST(sum(pool_errors) AS BIGINT) AS pool_errors,
           avg(unseen_calls) AS unseen_calls
    FROM per_benchmark
    GROUP BY method, family, alpha
)
SELECT * FROM per_benchmark
UNION ALL BY NAME
SELECT * FROM macro
"""


def _validate_rows(con: duckdb.DuckDBPyConnection) -> None:
    """Reject rows that would silently bias the means; messages name column, value and file."""
    for col in _NOT_NULL:
        hit = con.execute(
            f"SELECT count(*), any_value(source_file) FROM eval_rows WHERE {col} IS NULL"
        ).fetchone()
        if hit and hit[0]:
            raise ValueError(f"column {col!r} has {hit[0]} null value(s), e.g. in {hit[1]}")
    checks = {
        "em": "em < 0 OR em > 1",
        "f1": "f1 < 0 OR f1 > 1",
        "cost": "cost < 0 OR isnan(cost) OR isinf(cost)",
        "pool_calls": "pool_calls < 0",
        "invalid_actions": "invalid_actions < 0",
        "pool_errors": "pool_errors < 0",
    }
    for col, cond in checks.items():
        hit = con.execute(
            f"SELECT count(*), any_value({col}), any_value(source_file) FROM eval_rows WHERE {cond}"
        ).fetchone()
        if hit and hit[0]:
            raise ValueError(
                f"column {col!r} has {hit[0]} out-of-range value(s) (e.g. {hit[1]!r} in {hit[2]}); "
                "em and f1 must be fractions in [0, 1], counts and cost non-negative"
            )
    hit = con.execute(
        "SELECT count(*), any_value(source_file) FROM eval_rows WHERE benchmark = $b",
        {"b": AVERAGE},
    ).fetchone()
    if hit and hit[0]:
        raise ValueError(f"benchmark name {AVERAGE!r} is reserved for the macro average ({hit[1]})")

    # one row per method, training seed and question (seed is null outside seeded routers)
    dups = con.execute(
        "SELECT method, benchmark, qid, count(*) AS k, list(DISTINCT source_file) AS files "
        "FROM eval_rows GROUP BY method, seed, benchmark, qid HAVING count(*) > 1 "
        "ORDER BY method, benchmark, qid"
    ).fetchall()
    if dups:
        shown = "; ".join(
            f"({m!r}, {b!r}, qid={q!r}) x{k} in {sorted(Path(f).name for f in files)}"
            for m, b, q, k, files in dups[:5]
        )
        more = f" and {len(dups) - 5} more" if len(dups) > 5 else ""
        raise ValueError(f"duplicate (method, benchmark, qid) rows: {shown}{more}")

    ids = con.execute("SELECT DISTINCT method, family, alpha FROM eval_rows").df()
    clash = ids[ids["method"].duplicated(keep=False)]
    if not clash.empty:
        m = clash["method"].iloc[0]
        variants = clash[clash["method"] == m][["family", "alpha"]].to_dict("records")
        raise ValueError(f"method {m!r} appears with different family/alpha: {variants}")
    bad = ids[ids["family"].isin(SWEEP_FAMILIES) & ids["alpha"].isna()]
    if not bad.empty:
        r = bad.iloc[0]
        raise ValueError(f"method {r['method']!r}: family {r['family']!r} needs alpha")


def aggregate(
    eval_paths: Sequence[Path],
    duckdb_path: Path,
    csv_path: Path,
    md_path: Path,
    manifest: Mapping[str, Any] | None = None,
    decoding: Mapping[str, Any] | None = None,
    base_seed: int | None = None,
    headroom: pd.DataFrame | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> pd.DataFrame:
    """Load every evaluation parquet into DuckDB, summarize, and write csv and markdown.

    ``manifest`` (the data stage's eval_manifest.json) and ``decoding`` (the router's evaluation
    decoding, ``EvalConfig.decoding``) go into the markdown header; see `render_markdown`.
    ``base_seed``: the training seed of router rows without a ``seed`` column (the top-level
    seed; it also seeds the bootstrap). ``headroom``: the rows of ``results/headroom.csv``, to
    place the routers against. Every method but the single models and the oracle gets
    paired-bootstrap intervals against the single models (`bootstrap_intervals`), merged into
    the summary and stored as the DuckDB table ``intervals``.
    Returns the summary (one row per method and benchmark plus the "average" rows), sorted
    routers-first. Raises ValueError on missing columns, nulls, out-of-range scores, or duplicate
    (method, seed, benchmark, qid) rows; FileNotFoundError if an input is absent.
    """
    paths = [Path(p) for p in eval_paths]
    if not paths:
        raise ValueError("eval_paths is empty: nothing to aggregate")
    _check_columns(paths)

    # Built beside the target and renamed over it only once complete (CHECKPOINT: no WAL left).
    with atomic_path(duckdb_path) as tmp:
        tmp.unlink()  # DuckDB creates its database file itself
        try:
            with duckdb.connect(str(tmp)) as con:
                con.execute(_LOAD_SQL, {"files": [str(p) for p in paths]})
                # the training seed of router rows; files of the one-seed layout have none
                con.execute("ALTER TABLE eval_rows ADD COLUMN IF NOT EXISTS seed BIGINT")
                if base_seed is not None:
                    con.execute(
                        "UPDATE eval_rows SET seed = $s WHERE seed IS NULL AND family IN $f",
                        {"s": int(base_seed), "f": list(SWEEP_FAMILIES)},
                    )
                _validate_rows(con)
                # only unseen-model evaluations count calls to unseen models; null elsewhere
                con.execute("ALTER TABLE eval_rows ADD COLUMN IF NOT EXISTS unseen_calls BIGINT")
                con.execute(_SUMMARY_SQL)
                rows = con.execute(
                    "SELECT method, family, seed, benchmark, qid, em, cost FROM eval_rows"
                ).df()
                intervals = bootstrap_intervals(
                    rows, n_resamples=n_resamples, seed=int(base_seed or 0), level=level
                )
                con.register("intervals_df", intervals)
                con.execute("CREATE TABLE intervals AS SELECT * FROM intervals_df")
                con.unregister("intervals_df")
                summary = con.execute("SELECT * FROM summary").df()
                summary = sort_summary(
                    summary.merge(intervals, on=["method", "benchmark"], how="left")
                )
                con.execute("CHECKPOINT")
        finally:
            tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)

    with atomic_path(csv_path) as tmp:
        tmp.write_text(summary.to_csv(index=False), encoding="utf-8")
    text = render_markdown(summary, manifest, decoding, headroom=headroom, level=level)
    with atomic_path(md_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return summary
