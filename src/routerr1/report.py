"""Aggregate evaluation results into summary tables, a Pareto plot and AIQ scores.

Input: one parquet file per (method, benchmark), one row per question, as written by
`routerr1.evaluate` (columns `method`, `family`, `alpha`, `benchmark`, `qid`, `em`, `f1`,
`cost`, `pool_calls`, `invalid_actions`, `pool_errors`, plus the question, answers, prediction,
token counts and latency, which are kept in `eval_rows` but not summarized).

Outputs:
- a DuckDB file with `eval_rows` (every row, plus `source_file`), `summary` (one row per
  method and benchmark, plus an "average" pseudo-benchmark: the unweighted mean over the
  method's benchmarks, the paper's macro average) and `intervals` (paired-bootstrap intervals
  of every method against the single models, `bootstrap_intervals`);
- `summary.csv` (the summary with the interval columns) and `summary.md` (Table-1 style EM / F1
  grid, the Router-R1 alpha/cost sweep, the intervals with the claims they support, the routers
  placed against the pool's headroom, family AIQ, mean pool calls per method);
- a multipage PDF of EM against mean dollar cost per question, one page per benchmark.

A router trained with several seeds (``train.seeds``) has one row per question and seed; its
summary averages over the seeds (``n_seeds``), and ``n`` counts questions.

Units: `em` and `f1` in the summary are percentages; `cost` is mean dollars per question.
`unseen_calls` (calls to `pool_unseen` models per question) is set for unseen-model
evaluations only.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from routerr1.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, PairedBootstrap
from routerr1.frontier import aiq, frontier_at, pareto_frontier

__all__ = [
    "AVERAGE",
    "FAMILY_ORDER",
    "INTERVAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "aggregate",
    "aiq",
    "bootstrap_intervals",
    "decoding_text",
    "family_aiq",
    "pareto_frontier",
    "plot_pareto",
    "render_markdown",
]

AVERAGE = "average"
ROUTER_FAMILY = "router-r1"
UNSEEN_FAMILY = "router-r1-unseen"  # the same routers, pool extended by models never trained on
ORACLE_FAMILY = "oracle"
# Families whose methods are one router per alpha: they need alpha and are drawn as a sweep.
_SWEEP_FAMILIES = (ROUTER_FAMILY, UNSEEN_FAMILY)
# Columns the summary needs; the other evaluation columns are optional and kept as they come.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "method",
    "family",
    "alpha",
    "benchmark",
    "qid",
    "em",
    "f1",
    "cost",
    "pool_calls",
    "invalid_actions",
    "pool_errors",
)
_NOT_NULL = tuple(c for c in REQUIRED_COLUMNS if c != "alpha")
# Display order of families: the router first, then baselines from weakest idea to upper bound.
FAMILY_ORDER = (
    ROUTER_FAMILY,
    UNSEEN_FAMILY,
    "prompt-router",
    "knn",
    "random",
    "single",
    "largest",
    ORACLE_FAMILY,
)
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


# --------------------------------------------------------------------------- file helpers


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_columns(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"evaluation file not found: {path}")
        names = set(pq.read_schema(path).names)
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise ValueError(f"{path}: missing required column(s) {', '.join(missing)}")


# --------------------------------------------------------------------------- aggregation

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
    bad = ids[ids["family"].isin(_SWEEP_FAMILIES) & ids["alpha"].isna()]
    if not bad.empty:
        r = bad.iloc[0]
        raise ValueError(f"method {r['method']!r}: family {r['family']!r} needs alpha")


def _sort_summary(df: pd.DataFrame) -> pd.DataFrame:
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

    duckdb_path = Path(duckdb_path)
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target so os.replace is an atomic rename on the same filesystem.
    tmp = duckdb_path.with_name(f".{duckdb_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with duckdb.connect(str(tmp)) as con:
            con.execute(_LOAD_SQL, {"files": [str(p) for p in paths]})
            # the training seed of router rows; files of the one-seed layout have none
            con.execute("ALTER TABLE eval_rows ADD COLUMN IF NOT EXISTS seed BIGINT")
            if base_seed is not None:
                con.execute(
                    "UPDATE eval_rows SET seed = $s WHERE seed IS NULL AND family IN $f",
                    {"s": int(base_seed), "f": list(_SWEEP_FAMILIES)},
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
            summary = _sort_summary(
                summary.merge(intervals, on=["method", "benchmark"], how="left")
            )
            con.execute("CHECKPOINT")
        os.replace(tmp, duckdb_path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)

    _atomic_write_text(Path(csv_path), summary.to_csv(index=False))
    text = render_markdown(summary, manifest, decoding, headroom=headroom, level=level)
    _atomic_write_text(Path(md_path), text)
    return summary


# --------------------------------------------------------------------------- intervals

# Not compared with the single models: the single models themselves ("largest" is one of them)
# and the oracle, which reads the gold answers.
_NO_INTERVALS = ("single", "largest", ORACLE_FAMILY)
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
    singles = rows[rows["family"] == "single"]
    if singles.empty:
        return pd.DataFrame(columns=INTERVAL_COLUMNS)
    s_em = singles.pivot_table(index=_KEY, columns="method", values="em", aggfunc="mean")
    s_cost = singles.pivot_table(index=_KEY, columns="method", values="cost", aggfunc="mean")
    known = s_em.index[s_em.notna().all(axis=1) & s_cost.notna().all(axis=1)]
    names = [m.removeprefix("single:") for m in s_em.columns]
    cache: dict[tuple, PairedBootstrap] = {}
    out = []
    others = rows[~rows["family"].isin(_NO_INTERVALS)].assign(seed=lambda d: d["seed"].fillna(-1))
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


# --------------------------------------------------------------------------- frontier and AIQ


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
    for fam, grp in _sort_summary(page).groupby("family", sort=False):
        pts = list(zip(grp["cost"].astype(float), grp["em"].astype(float), strict=True))
        rows.append({"family": fam, "n_points": len(pts), "aiq": aiq(pts, rng)})
    return pd.DataFrame(rows, columns=["family", "n_points", "aiq"])


# --------------------------------------------------------------------------- markdown


def _fmt_cost(c: float) -> str:
    return "$0" if c == 0 else f"${c:.2e}"


def _md_cell(s: object) -> str:
    return str(s).replace("|", r"\|")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return lines


def _grid(
    summary: pd.DataFrame, methods: list[str], benchmarks: list[str], cell
) -> tuple[list[list[str]], bool]:
    """Rows of cells per method; flags averages taken over fewer than all benchmarks."""
    idx = summary.set_index(["method", "benchmark"])
    rows, partial = [], False
    for m in methods:
        row = []
        for b in [*benchmarks, AVERAGE]:
            if (m, b) not in idx.index:
                row.append("–")
                continue
            r = idx.loc[(m, b)]
            text = cell(r)
            if b == AVERAGE and int(r["n_benchmarks"]) < len(benchmarks):
                text += " †"
                partial = True
            row.append(text)
        rows.append(row)
    return rows, partial


# One line per method family present, under the EM / F1 table.
_FAMILY_NOTES = {
    UNSEEN_FAMILY: "router-r1+unseen: the same trained routers, pool extended by `pool_unseen`",
    "prompt-router": "prompt-router: the untrained policy, prompted to route",
    "knn": "knn: per question the pool model with the best mean F1 on its k nearest training "
    "and profiling questions (MiniLM embeddings; ties to the cheaper), answering alone",
    "random": "random: per question a pool model drawn uniformly (seeded), answering alone",
    "largest": "largest: the largest pool model alone (same answers as its single row)",
    "oracle": "oracle: per question the cheapest pool model that answers correctly; it reads the "
    "gold answers, so it is an upper bound and stays off the Pareto frontier",
}


def _unseen_section(summary: pd.DataFrame) -> list[str]:
    """Each router on the training pool beside the same router with unseen models added."""
    page = summary[summary["benchmark"] == AVERAGE]
    unseen = page[page["family"] == UNSEEN_FAMILY].sort_values(["alpha", "method"])
    if unseen.empty:
        return []
    base = {r.alpha: r for r in page[page["family"] == ROUTER_FAMILY].itertuples(index=False)}
    rows = []
    for r in unseen.itertuples(index=False):
        b = base.get(r.alpha)
        calls = getattr(r, "unseen_calls", float("nan"))
        rows.append(
            [
                f"{r.alpha:g}",
                "–" if b is None else f"{b.em:.1f} / {_fmt_cost(b.cost)}",
                f"{r.em:.1f} / {_fmt_cost(r.cost)}",
                "–" if b is None else f"{r.em - b.em:+.1f}",
                f"{r.pool_calls:.2f}",
                "–" if pd.isna(calls) else f"{calls:.2f}",
            ]
        )
    header = ["α", "training pool", "+ unseen models", "Δ EM", "pool calls", "calls to unseen"]
    return [
        "## Unseen models (EM % / mean cost per question, macro average)",
        "",
        *_md_table(header, rows),
        "",
        "Same trained router; the pool is extended by `pool_unseen`, known to the router only "
        "through their descriptors (no retraining). Calls are per question.",
        "",
    ]


def _ci(est: float, lo: float, hi: float, fmt: str = "{:+.1f}") -> str:
    return f"{fmt.format(est)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _claims(r) -> str:
    """The comparisons whose interval excludes zero: only these count as claims."""
    out = []
    if r.d_em_best_lo > 0:
        out.append(f"EM above {r.best_single}")
    elif r.d_em_best_hi < 0:
        out.append(f"EM below {r.best_single}")
    if r.d_cost_best_hi < 0:
        out.append(f"cheaper than {r.best_single}")
    elif r.d_cost_best_lo > 0:
        out.append(f"dearer than {r.best_single}")
    if r.d_em_frontier_lo > 0:
        out.append("above the frontier")
    elif r.d_em_frontier_hi < 0:
        out.append("below the frontier")
    return "; ".join(out) or "none"


def _intervals_section(summary: pd.DataFrame, level: float) -> list[str]:
    """Every method against the single models, on the average page, with bootstrap intervals."""
    if "d_em_best" not in summary.columns:
        return []
    page = summary[(summary["benchmark"] == AVERAGE) & summary["d_em_best"].notna()]
    if page.empty:
        return []
    ci = f"{100 * level:g}%"
    rows = []
    for r in page.itertuples(index=False):
        seeds = int(getattr(r, "n_seeds", 1) or 1)
        spread = f" (EM {r.seed_em_min:.1f}–{r.seed_em_max:.1f})" if seeds > 1 else ""
        rows.append(
            [
                r.method,
                f"{seeds}{spread}",
                _ci(r.em, r.em_lo, r.em_hi, "{:.1f}"),
                _ci(r.cost, r.cost_lo, r.cost_hi, "{:.2e}"),
                _ci(r.d_em_best, r.d_em_best_lo, r.d_em_best_hi),
                _ci(r.d_cost_best, r.d_cost_best_lo, r.d_cost_best_hi, "{:+.2e}"),
                _ci(r.d_em_frontier, r.d_em_frontier_lo, r.d_em_frontier_hi),
                _claims(r),
            ]
        )
    best = ", ".join(sorted(set(page["best_single"])))
    header = [
        "method",
        "seeds",
        "EM %",
        "$ / question",
        "Δ EM vs best single",
        "Δ $ vs best single",
        "Δ EM vs frontier at same cost",
        "claims",
    ]
    return [
        f"## Against the single models ({ci} paired-bootstrap intervals, macro average)",
        "",
        *_md_table(header, rows),
        "",
        f"Best single model (highest EM on these questions): {best}. Frontier: the best EM a "
        "random mix of single models reaches at the method's cost (their upper cost-EM hull). "
        "Intervals resample the questions within each benchmark, with every method scored on "
        "the same draws; a router's training seeds are averaged per question (the seeds' own "
        "EM range is shown beside their count). **A claim counts only where its interval "
        "excludes zero**; per-benchmark intervals are in summary.csv.",
        "",
    ]


# the headroom strategies placed beside the routers (see routerr1.headroom)
_HEADROOM_MAIN = ("oracle", "best cascade", "best vote", "vote of all", "pre-route (text)")


def _headroom_section(summary: pd.DataFrame, headroom: pd.DataFrame | None) -> list[str]:
    """Routers and the pool's headroom strategies on one cost-sorted table (average page)."""
    if headroom is None or headroom.empty:
        return []
    hr = headroom[headroom["benchmark"] == AVERAGE]
    entries = []
    for r in hr[hr["strategy"].isin(_HEADROOM_MAIN)].itertuples(index=False):
        note = "upper bound (reads gold)" if r.strategy == "oracle" else "held out"
        delta = _ci(r.d_frontier, r.d_frontier_lo, r.d_frontier_hi)
        entries.append(
            (r.cost, [f"headroom: {r.strategy}", f"{r.em:.1f}", _fmt_cost(r.cost), delta, note])
        )
    page = summary[(summary["benchmark"] == AVERAGE) & summary["family"].isin(_SWEEP_FAMILIES)]
    for r in page.itertuples(index=False):
        have = "d_em_frontier" in page.columns and pd.notna(r.d_em_frontier)
        delta = _ci(r.d_em_frontier, r.d_em_frontier_lo, r.d_em_frontier_hi) if have else "–"
        entries.append((r.cost, [r.method, f"{r.em:.1f}", _fmt_cost(r.cost), delta, "router"]))
    if not entries:
        return []
    entries.sort(key=lambda e: e[0])
    return [
        "## Routers against the pool's headroom (macro average)",
        "",
        *_md_table(
            ["method", "EM %", "$ / question", "Δ EM vs frontier [CI]", ""], [e[1] for e in entries]
        ),
        "",
        "Headroom strategies use only the single models' answers, with every learned choice "
        "made on training folds (results/headroom.md). A router below a headroom strategy at a "
        "similar cost leaves gain a simple rule already gets.",
        "",
    ]


def decoding_text(decoding: Mapping[str, Any] | None) -> str:
    """One line for the summary header: how the routers decoded at evaluation."""
    if not decoding or decoding.get("decoding", "greedy") == "greedy":
        return "greedy"
    return (
        f"sampled (temperature {float(decoding['temperature']):g}, "
        f"top_p {float(decoding.get('top_p', 1.0)):g}, seed {decoding.get('sample_seed')})"
    )


def _data_section(manifest: Mapping[str, Any]) -> list[str]:
    """The evaluation sets actually used, then every configured benchmark that was skipped."""
    entries = list(manifest.get("benchmarks", []))
    used = [e for e in entries if e.get("status") == "ok"]
    skipped = [e for e in entries if e.get("status") != "ok"]
    out = []
    if used:
        rows = [
            [
                str(e["benchmark"]),
                str(e.get("split", "")),
                str(e.get("n", "")),
                str(e.get("requested", "")),
                str(e.get("available", "")),
            ]
            for e in used
        ]
        out += ["## Benchmarks", ""]
        out += _md_table(["benchmark", "split", "questions", "asked", "in split"], rows)
        short = [e["benchmark"] for e in used if int(e.get("n", 0)) < int(e.get("requested", 0))]
        if short:
            out += ["", f"Evaluated on every question it has: {', '.join(short)}."]
        out += [""]
    out += ["## Skipped benchmarks", ""]
    if skipped:
        out += [f"- **{e['benchmark']}**: {e.get('reason', 'no reason given')}" for e in skipped]
        out += ["", "These are in the config but not in the data source; no method ran on them."]
    else:
        out += ["None: every configured evaluation benchmark was found."]
    return out + [""]


def render_markdown(
    summary: pd.DataFrame,
    manifest: Mapping[str, Any] | None = None,
    decoding: Mapping[str, Any] | None = None,
    headroom: pd.DataFrame | None = None,
    level: float = DEFAULT_LEVEL,
) -> str:
    """Markdown report from a summary as returned by `aggregate`.

    With ``decoding`` the header says how the routers decoded; with ``manifest`` (the data
    stage's eval_manifest.json) it lists the evaluation sets and, under "Skipped benchmarks",
    each configured benchmark the data source lacked, with the reason. Summaries with interval
    columns (`bootstrap_intervals`) get the comparison with the single models; with
    ``headroom`` (results/headroom.csv) the routers are placed against the pool's headroom.
    """
    summary = _sort_summary(summary)
    benchmarks = sorted(b for b in summary["benchmark"].unique() if b != AVERAGE)
    methods = list(dict.fromkeys(summary["method"]))
    footnote = "† averaged over only the benchmarks this method was evaluated on."
    out = ["# Evaluation summary", ""]
    if decoding is not None:
        out += [
            f"Router decoding at evaluation: {decoding_text(decoding)}. "
            "Pool models decode as configured (greedy locally).",
            "",
        ]
    if manifest is not None:
        out += _data_section(manifest)

    out += ["## EM / F1 (%)", ""]
    rows, partial = _grid(summary, methods, benchmarks, lambda r: f"{r.em:.1f} / {r.f1:.1f}")
    out += _md_table(
        ["method", *benchmarks, "avg"], [[m, *r] for m, r in zip(methods, rows, strict=True)]
    )
    out += ["", "avg = unweighted mean over benchmarks (macro average).", ""]
    notes = [_FAMILY_NOTES[f] for f in dict.fromkeys(summary["family"]) if f in _FAMILY_NOTES]
    if notes:
        out += [f"- {n}" for n in notes] + [""]
    if partial:
        out += [footnote, ""]

    out += ["## Router-R1 cost sweep (EM % / mean cost per question)", ""]
    routers = summary[(summary["family"] == ROUTER_FAMILY) & (summary["benchmark"] == AVERAGE)]
    routers = routers.sort_values(["alpha", "method"])
    if routers.empty:
        out += ["(no router-r1 rows)", ""]
    else:
        r_methods = list(routers["method"])
        rows, partial = _grid(
            summary, r_methods, benchmarks, lambda r: f"{r.em:.1f} / {_fmt_cost(r.cost)}"
        )
        table = [
            [f"{a:g}", m, *r] for a, m, r in zip(routers["alpha"], r_methods, rows, strict=True)
        ]
        out += _md_table(["α", "method", *benchmarks, "avg"], table) + [""]
        if partial:
            out += [footnote, ""]

    out += _intervals_section(summary, level)
    out += _headroom_section(summary, headroom)
    out += _unseen_section(summary)

    out += ["## AIQ per family (average page)", ""]
    fam = family_aiq(summary, AVERAGE)
    out += _md_table(
        ["family", "points", "aiq"],
        [[f, str(n), f"{a:.1f}"] for f, n, a in fam.itertuples(index=False)],
    )
    out += [
        "",
        "aiq = mean EM % of the family's non-decreasing upper cost-EM hull (with free abstention "
        "at cost 0) over the min..max mean cost of all methods; see `routerr1.report.aiq`.",
        "",
    ]

    out += ["## Pool calls per question (macro average)", ""]
    for r in summary[summary["benchmark"] == AVERAGE].itertuples(index=False):
        out.append(
            f"- {r.method}: {r.pool_calls:.2f} pool calls, "
            f"{r.invalid_actions:.2f} invalid actions, {int(r.pool_errors)} pool errors in total"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plotting


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
    singles = page[page["family"] == "single"]
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
    page = _sort_summary(summary[summary["benchmark"] == benchmark])
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
    baselines = page[~page["family"].isin(_SWEEP_FAMILIES)]
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

    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=pdf_path.parent, prefix=f".{pdf_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # No CreationDate: the same summary gives a byte-identical PDF.
        with PdfPages(tmp, metadata={"CreationDate": None}) as pdf:
            for b in pages:
                pdf.savefig(_page_figure(summary, b, headroom))
        os.replace(tmp, pdf_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
