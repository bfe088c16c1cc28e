"""Tests for routerr1.report: DuckDB aggregation, markdown, Pareto frontier, AIQ and the PDF."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerr1.frontier import aiq, frontier_at, frontier_values, pareto_frontier
from routerr1.methods import AVERAGE
from routerr1.report.aggregate import aggregate
from routerr1.report.markdown import render_markdown
from routerr1.report.plot import plot_pareto
from routerr1.report.stats import family_aiq

# --------------------------------------------------------------------------- fixtures


def _rows(
    method: str,
    family: str,
    alpha: float | None,
    benchmark: str,
    em: list[float],
    f1: list[float] | None = None,
    cost: list[float] | float = 0.0,
    calls: list[int] | int = 1,
    invalid: list[int] | int = 0,
    errors: list[int] | int = 0,
) -> list[dict]:
    n = len(em)

    def per_q(v):
        return v if isinstance(v, list) else [v] * n

    return [
        {
            "method": method,
            "family": family,
            "alpha": alpha,
            "benchmark": benchmark,
            "qid": f"{benchmark}-{i}",
            "question": f"question {i}?",
            "golden_answers": [f"gold {i}"],
            "prediction": None if i == 0 else f"pred {i}",
            "em": float(em[i]),
            "f1": float((f1 or em)[i]),
            "pool_calls": per_q(calls)[i],
            "invalid_actions": per_q(invalid)[i],
            "pool_errors": per_q(errors)[i],
            "in_tokens": 100,
            "out_tokens": 10,
            "cost": float(per_q(cost)[i]),
            "latency_s": 0.5,
        }
        for i in range(n)
    ]


def _routers() -> pd.DataFrame:
    rows = _rows(
        "router-r1@a0.5", "router-r1", 0.5, "nq",
        em=[1, 0, 1, 1], f1=[1, 0.5, 1, 0.5], cost=[1e-5, 2e-5, 3e-5, 2e-5],
        calls=[1, 2, 1, 0], invalid=[0, 1, 0, 0], errors=[0, 0, 1, 1],
    )  # fmt: skip
    rows += _rows(
        "router-r1@a0.5", "router-r1", 0.5, "hotpotqa",
        em=[0, 1], f1=[0.2, 1.0], cost=[4e-5, 6e-5], calls=[2, 2], errors=[0, 1],
    )  # fmt: skip
    for alpha, em_nq, em_hp, c in [
        (0.0, [1, 1, 1, 1], [1, 1], 1e-4),
        (0.9, [0, 0, 1, 0], [0, 0], 1e-6),
    ]:
        m = f"router-r1@a{alpha:g}"
        rows += _rows(m, "router-r1", alpha, "nq", em=em_nq, cost=c, calls=2)
        rows += _rows(m, "router-r1", alpha, "hotpotqa", em=em_hp, cost=c, calls=2)
    return pd.DataFrame(rows)


def _singles() -> pd.DataFrame:
    rows = _rows("single:A", "single", None, "nq", em=[1, 0, 0, 0], cost=0.0)
    rows += _rows("single:A", "single", None, "hotpotqa", em=[0, 0], cost=0.0)
    rows += _rows("single:B", "single", None, "nq", em=[1, 1, 1, 0], cost=2e-4)
    rows += _rows("single:B", "single", None, "hotpotqa", em=[1, 0], cost=2e-4)
    return pd.DataFrame(rows)


def _prompt_router() -> pd.DataFrame:
    rows = _rows("prompt-router", "prompt-router", None, "nq", em=[0, 1, 0, 0], cost=5e-5)
    rows += _rows("prompt-router", "prompt-router", None, "hotpotqa", em=[0, 1], cost=5e-5)
    # Optional columns may be absent from a file; union_by_name fills them with nulls.
    return pd.DataFrame(rows).drop(columns=["question", "latency_s"])


@pytest.fixture
def eval_files(tmp_path: Path) -> list[Path]:
    paths = []
    for name, df in [
        ("routers", _routers()),
        ("singles", _singles()),
        ("prompt", _prompt_router()),
    ]:
        p = tmp_path / "eval" / f"{name}.parquet"
        p.parent.mkdir(exist_ok=True)
        df.to_parquet(p)
        paths.append(p)
    return paths


def _outputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    out = tmp_path / "results"
    return out / "summary.duckdb", out / "summary.csv", out / "summary.md"


@pytest.fixture
def summary(eval_files: list[Path], tmp_path: Path) -> pd.DataFrame:
    return aggregate(eval_files, *_outputs(tmp_path))


def _row(summary: pd.DataFrame, method: str, benchmark: str) -> pd.Series:
    hit = summary[(summary["method"] == method) & (summary["benchmark"] == benchmark)]
    assert len(hit) == 1
    return hit.iloc[0]


# --------------------------------------------------------------------------- aggregate


def test_per_benchmark_means_match_hand_computation(summary: pd.DataFrame) -> None:
    r = _row(summary, "router-r1@a0.5", "nq")
    assert r["n"] == 4 and r["n_benchmarks"] == 1
    assert r["family"] == "router-r1" and r["alpha"] == 0.5
    assert r["em"] == pytest.approx(75.0)
    assert r["f1"] == pytest.approx(75.0)
    assert r["cost"] == pytest.approx(2e-5)
    assert r["pool_calls"] == pytest.approx(1.0)
    assert r["invalid_actions"] == pytest.approx(0.25)
    assert r["pool_errors"] == 2

    r = _row(summary, "router-r1@a0.5", "hotpotqa")
    assert (r["n"], r["em"], r["f1"]) == (2, pytest.approx(50.0), pytest.approx(60.0))
    assert r["cost"] == pytest.approx(5e-5) and r["pool_errors"] == 1

    r = _row(summary, "single:A", "nq")
    assert pd.isna(r["alpha"]) and r["em"] == pytest.approx(25.0) and r["cost"] == 0.0


def test_average_row_is_macro_mean_over_benchmarks(summary: pd.DataFrame) -> None:
    r = _row(summary, "router-r1@a0.5", AVERAGE)
    # Macro: (75 + 50) / 2 = 62.5, not the pooled 4/6 = 66.7.
    assert r["em"] == pytest.approx(62.5)
    assert r["f1"] == pytest.approx(67.5)
    assert r["cost"] == pytest.approx(3.5e-5)
    assert r["pool_calls"] == pytest.approx(1.5)
    assert r["invalid_actions"] == pytest.approx(0.125)
    assert r["pool_errors"] == 3
    assert r["n"] == 6 and r["n_benchmarks"] == 2
    assert len(summary) == 6 * 3  # 6 methods x (2 benchmarks + average)


def test_summary_order_routers_by_alpha_then_baselines(summary: pd.DataFrame) -> None:
    methods = list(dict.fromkeys(summary["method"]))
    assert methods == [
        "router-r1@a0",
        "router-r1@a0.5",
        "router-r1@a0.9",
        "prompt-router",
        "single:A",
        "single:B",
    ]
    per_method = summary.groupby("method", sort=False)["benchmark"].apply(list)
    assert all(b[-1] == AVERAGE for b in per_method)


def test_duckdb_file_has_both_tables_and_csv_matches(summary: pd.DataFrame, tmp_path: Path) -> None:
    db, csv, _ = _outputs(tmp_path)
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {t for (t,) in con.execute("SHOW TABLES").fetchall()}
        assert {"eval_rows", "summary"} <= tables
        assert con.execute("SELECT count(*) FROM eval_rows").fetchone() == (36,)
        assert con.execute("SELECT count(*) FROM summary").fetchone() == (18,)
        # Columns absent from one file come back as nulls for its rows.
        assert con.execute(
            "SELECT count(*) FROM eval_rows WHERE method = 'prompt-router' AND question IS NULL"
        ).fetchone() == (6,)
        files = {Path(f).name for (f,) in con.execute("SELECT DISTINCT source_file FROM eval_rows")
                 .fetchall()}  # fmt: skip
        assert files == {"routers.parquet", "singles.parquet", "prompt.parquet"}
    # Atomic build leaves no temp or WAL file behind.
    assert sorted(p.name for p in db.parent.iterdir()) == [
        "summary.csv", "summary.duckdb", "summary.md"
    ]  # fmt: skip
    back = pd.read_csv(csv)
    assert len(back) == len(summary)
    assert back["em"].tolist() == pytest.approx(summary["em"].tolist())


def test_markdown_contains_expected_cells(summary: pd.DataFrame, tmp_path: Path) -> None:
    md = _outputs(tmp_path)[2].read_text()
    assert md == render_markdown(summary)
    # Benchmarks are sorted: hotpotqa, nq, then avg.
    assert "| method | hotpotqa | nq | avg |" in md
    assert "| router-r1@a0.5 | 50.0 / 60.0 | 75.0 / 75.0 | 62.5 / 67.5 |" in md
    assert "| single:A | 0.0 / 0.0 | 25.0 / 25.0 | 12.5 / 12.5 |" in md
    # Cost grid: router rows in alpha order with EM and mean cost.
    assert "| 0.5 | router-r1@a0.5 | 50.0 / $5.00e-05 | 75.0 / $2.00e-05 | 62.5 / $3.50e-05 |" in md
    sweep = md.split("## Router-R1 cost sweep")[1].split("## AIQ")[0]
    assert sweep.index("| 0 |") < sweep.index("| 0.5 |") < sweep.index("| 0.9 |")
    assert "single:A" not in sweep
    assert "- router-r1@a0.5: 1.50 pool calls, 0.12 invalid actions, 3 pool errors" in md
    assert re.search(r"\| router-r1 \| 3 \| \d+\.\d \|", md)
    assert "†" not in md


def test_partial_average_is_flagged(eval_files: list[Path], tmp_path: Path) -> None:
    extra = tmp_path / "eval" / "knn.parquet"
    pd.DataFrame(_rows("knn", "knn", None, "nq", em=[1, 0])).to_parquet(extra)
    summary = aggregate([*eval_files, extra], *_outputs(tmp_path))
    assert _row(summary, "knn", AVERAGE)["n_benchmarks"] == 1
    md = render_markdown(summary)
    assert "| knn | – | 50.0 / 50.0 | 50.0 / 50.0 † |" in md
    assert "† averaged over only" in md


# --------------------------------------------------------------------------- bad input


def test_duplicate_rows_are_rejected(eval_files: list[Path], tmp_path: Path) -> None:
    rerun = tmp_path / "eval" / "rerun.parquet"
    _routers().query("method == 'router-r1@a0.5' and benchmark == 'nq'").head(2).to_parquet(rerun)
    db, csv, md = _outputs(tmp_path)
    with pytest.raises(ValueError, match=r"duplicate.*router-r1@a0\.5.*'nq'.*qid='nq-0'"):
        aggregate([*eval_files, rerun], db, csv, md)
    # Nothing half-written.
    assert not db.parent.exists() or list(db.parent.iterdir()) == []


def test_missing_column_names_column_and_file(eval_files: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "eval" / "bad.parquet"
    _singles().drop(columns=["cost"]).to_parquet(bad)
    with pytest.raises(ValueError, match=r"bad\.parquet.*cost"):
        aggregate([*eval_files, bad], *_outputs(tmp_path))


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"em": 100.0}, r"'em'.*out-of-range"),
        ({"cost": None}, r"'cost'.*null"),
        ({"benchmark": AVERAGE}, "reserved"),
    ],
)
def test_bad_values_are_rejected(tmp_path: Path, change: dict, pattern: str) -> None:
    p = tmp_path / "x.parquet"
    _singles().assign(**change).to_parquet(p)
    with pytest.raises(ValueError, match=pattern):
        aggregate([p], *_outputs(tmp_path))


def test_inconsistent_method_identity_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "x.parquet"
    df = _routers()
    df.loc[df["benchmark"] == "nq", "alpha"] = df.loc[df["benchmark"] == "nq", "alpha"] + 0.01
    df.to_parquet(p)
    with pytest.raises(ValueError, match="different family/alpha"):
        aggregate([p], *_outputs(tmp_path))


def test_empty_and_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        aggregate([], *_outputs(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        aggregate([tmp_path / "nope.parquet"], *_outputs(tmp_path))


# --------------------------------------------------------------------------- frontier and AIQ


def test_pareto_frontier_hand_example() -> None:
    pts = [(1.0, 10.0), (2.0, 5.0), (2.0, 20.0), (3.0, 20.0), (0.5, 1.0), (4.0, 30.0)]
    # (2, 5) loses to (1, 10); (3, 20) loses to (2, 20).
    assert pareto_frontier(pts) == [4, 0, 2, 5]
    assert pareto_frontier([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]
    assert pareto_frontier([(0.0, 3.0)]) == [0]
    assert pareto_frontier([]) == []
    with pytest.raises(ValueError, match="finite"):
        pareto_frontier([(float("nan"), 1.0)])


def test_aiq_simple_cases() -> None:
    # One point and no range: its own quality.
    assert aiq([(3e-5, 42.0)]) == pytest.approx(42.0)
    assert aiq([(0.0, 0.0), (1.0, 1.0)]) == pytest.approx(0.5)
    assert aiq([(0.0, 1.0), (1.0, 1.0)]) == pytest.approx(1.0)
    # Past the best point the hull stays flat: 0.5 * 0.5 + 0.5 * 1.
    assert aiq([(0.0, 0.0), (0.5, 1.0), (1.0, 0.0)]) == pytest.approx(0.75)
    # A point under the chord does not count.
    assert aiq([(0.0, 0.0), (0.5, 0.2), (1.0, 1.0)]) == pytest.approx(0.5)
    # Below its cheapest point a family only mixes with free abstention (0, 0):
    # the line 0 -> 40 over [0, 5], then flat 40 over [5, 10]: (100 + 200) / 10.
    assert aiq([(5.0, 40.0)], cost_range=(0.0, 10.0)) == pytest.approx(30.0)
    # (2, 10) lies under the chord from (0, 0) to (4, 30); mean of 15 -> 30 over [2, 4].
    assert aiq([(2.0, 10.0), (4.0, 30.0)]) == pytest.approx(22.5)
    # Only relative cost matters: dollars per question or per million questions.
    assert aiq([(2e-6, 10.0), (4e-6, 30.0)]) == pytest.approx(22.5)
    assert aiq([(1.0, 10.0), (1.0, 30.0)]) == pytest.approx(30.0)
    with pytest.raises(ValueError, match="at least one"):
        aiq([])
    with pytest.raises(ValueError, match="cost_range"):
        aiq([(1.0, 1.0)], cost_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="costs must be >= 0"):
        aiq([(-1.0, 1.0)])


_pt = st.tuples(st.floats(0.0, 1.0, allow_nan=False), st.floats(0.0, 100.0, allow_nan=False))


@given(st.lists(_pt, min_size=1, max_size=8), _pt)
def test_aiq_is_bounded_and_monotone_in_points(points, extra) -> None:
    rng = (0.0, 1.0)
    base = aiq(points, rng)
    assert -1e-9 <= base <= max(q for _, q in points) + 1e-9
    # Offering one more operating point never lowers a family's AIQ.
    assert aiq([*points, extra], rng) >= base - 1e-9


@given(st.lists(_pt, min_size=1, max_size=6), st.floats(0.0, 1.5, allow_nan=False))
def test_vectorized_frontier_matches_the_hull(points, budget) -> None:
    costs = np.array([[c for c, _ in points]])
    quality = np.array([[q for _, q in points]])
    fast = frontier_values(costs, quality, np.array([budget]))[0]
    assert fast == pytest.approx(float(frontier_at(points, budget)), abs=1e-9)


def test_family_aiq_on_average_page(summary: pd.DataFrame) -> None:
    fam = family_aiq(summary).set_index("family")
    assert list(fam.index) == ["router-r1", "prompt-router", "single"]
    assert fam.loc["router-r1", "n_points"] == 3
    page = summary[summary["benchmark"] == AVERAGE]
    rng = (page["cost"].min(), page["cost"].max())
    singles = page[page["family"] == "single"]
    expected = aiq(list(zip(singles["cost"], singles["em"], strict=True)), rng)
    assert fam.loc["single", "aiq"] == pytest.approx(expected)


# --------------------------------------------------------------------------- PDF


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def test_plot_pareto_writes_one_page_per_benchmark_plus_average(
    summary: pd.DataFrame, tmp_path: Path
) -> None:
    pdf = tmp_path / "plots" / "pareto.pdf"
    plot_pareto(summary, pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert _pdf_pages(pdf) == 3
    assert [p.name for p in pdf.parent.iterdir()] == ["pareto.pdf"]
    again = tmp_path / "plots" / "again.pdf"
    plot_pareto(summary, again)
    assert again.read_bytes() == pdf.read_bytes()  # reproducible: no creation date


def test_plot_pareto_one_method_and_all_zero_costs(summary: pd.DataFrame, tmp_path: Path) -> None:
    one = summary[summary["method"] == "router-r1@a0.5"]
    plot_pareto(one, tmp_path / "one.pdf")
    assert _pdf_pages(tmp_path / "one.pdf") == 3
    free = summary.assign(cost=0.0)
    plot_pareto(free, tmp_path / "free.pdf")
    assert _pdf_pages(tmp_path / "free.pdf") == 3
    oracle_only = one.assign(family="oracle", alpha=None)
    plot_pareto(oracle_only, tmp_path / "oracle.pdf")
    assert _pdf_pages(tmp_path / "oracle.pdf") == 3
    with pytest.raises(ValueError, match="cost"):
        plot_pareto(summary.drop(columns=["cost"]), tmp_path / "x.pdf")
