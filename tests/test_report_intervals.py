"""summary.md and pareto.pdf with seeds, bootstrap intervals and the pool's headroom."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from routerr1.headroom import headroom
from routerr1.methods import AVERAGE
from routerr1.report.aggregate import aggregate
from routerr1.report.plot import plot_pareto
from routerr1.report.stats import bootstrap_intervals

N = {"nq": 40, "hotpotqa": 20}
RNG = np.random.default_rng(7)
# single models: A is free and weak, B dear and strong, every question drawn at random
EM_A = {b: (RNG.random(n) < 0.2).astype(float) for b, n in N.items()}
EM_B = {b: (RNG.random(n) < 0.6).astype(float) for b, n in N.items()}
ALL_RIGHT = {b: np.ones(n) for b, n in N.items()}
ALL_WRONG = {b: np.zeros(n) for b, n in N.items()}


def _frame(method, family, alpha, em: dict, cost: float, seed=None) -> pd.DataFrame:
    rows = []
    for bench, values in em.items():
        for i, v in enumerate(values):
            rows.append(
                {
                    "method": method,
                    "family": family,
                    "alpha": alpha,
                    "benchmark": bench,
                    "qid": str(i),
                    "question": f"{bench} question {i}?",
                    "golden_answers": ["g"],
                    "prediction": "g" if v else "x",
                    "em": float(v),
                    "f1": float(v),
                    "cost": cost,
                    "pool_calls": 1,
                    "invalid_actions": 0,
                    "pool_errors": 0,
                }
            )
    out = pd.DataFrame(rows)
    return out if seed is None else out.assign(seed=seed)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    frames = {
        "single_A": _frame("single:A", "single", None, EM_A, 0.0),
        "single_B": _frame("single:B", "single", None, EM_B, 2e-4),
        # alpha 0: B's answers at half B's price (written without a seed column: seed 0)
        "router_0": _frame("router-r1@a0", "router-r1", 0.0, EM_B, 1e-4),
        # alpha 0.9: seed 0 always right, seed 1 always wrong -> 50% on average, cheap
        "router_9": _frame("router-r1@a0.9", "router-r1", 0.9, ALL_RIGHT, 1e-6),
        "router_9_s1": _frame("router-r1@a0.9", "router-r1", 0.9, ALL_WRONG, 1e-6, seed=1),
    }
    paths = []
    for name, df in frames.items():
        path = tmp_path / "eval" / f"{name}.parquet"
        path.parent.mkdir(exist_ok=True)
        df.to_parquet(path)
        paths.append(path)
    return paths


def _outputs(tmp_path: Path):
    out = tmp_path / "results"
    return out / "summary.duckdb", out / "summary.csv", out / "summary.md"


def _headroom(files: list[Path]) -> pd.DataFrame:
    single = pd.concat([pd.read_parquet(p) for p in files if "single" in p.name])
    return headroom(single, folds=4, seed=0, n_resamples=200).rows


def test_seeds_are_averaged_and_intervals_merged(files, tmp_path):
    summary = aggregate(files, *_outputs(tmp_path), base_seed=0, n_resamples=500)
    r9 = summary[(summary["method"] == "router-r1@a0.9") & (summary["benchmark"] == AVERAGE)]
    r9 = r9.iloc[0]
    assert (r9["n_seeds"], r9["n"], r9["em"]) == (2, 60, pytest.approx(50.0))
    # every question is answered right by one seed and wrong by the other: no sampling spread
    assert (r9["em_lo"], r9["em_hi"]) == (pytest.approx(50.0), pytest.approx(50.0))
    assert (r9["seed_em_min"], r9["seed_em_max"]) == (0.0, 100.0)
    r0 = summary[(summary["method"] == "router-r1@a0") & (summary["benchmark"] == AVERAGE)]
    r0 = r0.iloc[0]
    assert r0["n_seeds"] == 1 and r0["best_single"] == "B"
    # B's answers at half its price: EM exactly B's, cost exactly 1e-4 lower in every resample
    assert (r0["d_em_best"], r0["d_em_best_lo"], r0["d_em_best_hi"]) == (0.0, 0.0, 0.0)
    assert r0["d_cost_best_hi"] == pytest.approx(-1e-4)
    singles = summary[summary["family"] == "single"]
    assert singles["d_em_best"].isna().all()  # single models are the reference, not compared
    with duckdb.connect(str(tmp_path / "results" / "summary.duckdb"), read_only=True) as con:
        n = con.execute("SELECT count(*) FROM intervals WHERE method = 'router-r1@a0'").fetchone()
    assert n == (3,)  # nq, hotpotqa, average


def test_markdown_marks_only_claims_whose_interval_excludes_zero(files, tmp_path):
    aggregate(files, *_outputs(tmp_path), base_seed=0, n_resamples=500, headroom=_headroom(files))
    md = (tmp_path / "results" / "summary.md").read_text()
    section = md.split("## Against the single models")[1].split("\n## ")[0]
    line = next(x for x in section.splitlines() if x.startswith("| router-r1@a0 |"))
    # B's EM at half B's price: no EM claim against B, but cheaper, and above the mixes of
    # A and B (which reach B's EM only at B's price)
    assert line.rstrip(" |").endswith("| cheaper than B; above the frontier")
    line9 = next(x for x in section.splitlines() if x.startswith("| router-r1@a0.9 |"))
    assert "| 2 (EM 0.0–100.0) |" in line9
    placed = md.split("## Routers against the pool's headroom")[1].split("\n## ")[0]
    names = [x.split("|")[1].strip() for x in placed.splitlines() if x.startswith("| ")][1:]
    assert {"router-r1@a0", "router-r1@a0.9", "headroom: oracle", "headroom: best cascade"} <= set(
        names
    )
    costs = [float(c.strip().lstrip("$")) for c in re.findall(r"\| (\$[0-9.e+-]+) \|", placed)]
    assert costs == sorted(costs)  # one table, cheapest first


def test_duplicate_rows_of_one_seed_are_refused(files, tmp_path):
    again = tmp_path / "eval" / "again.parquet"
    pd.read_parquet(files[-1]).to_parquet(again)
    with pytest.raises(ValueError, match="duplicate"):
        aggregate([*files, again], *_outputs(tmp_path), base_seed=0, n_resamples=100)


def test_without_single_models_there_are_no_intervals(files, tmp_path):
    routers = [p for p in files if "router" in p.name]
    summary = aggregate(routers, *_outputs(tmp_path), base_seed=0, n_resamples=100)
    assert summary["d_em_best"].isna().all()
    assert "## Against the single models" not in (tmp_path / "results" / "summary.md").read_text()
    rows = pd.DataFrame(columns=["method", "family", "seed", "benchmark", "qid", "em", "cost"])
    assert bootstrap_intervals(rows).empty


def test_pareto_draws_whiskers_and_headroom_points(files, tmp_path):
    summary = aggregate(files, *_outputs(tmp_path), base_seed=0, n_resamples=200)
    pdf = tmp_path / "pareto.pdf"
    plot_pareto(summary, pdf, headroom=_headroom(files))
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes())) == 3
    # the same page without intervals or headroom still draws
    plain = summary.drop(columns=[c for c in summary.columns if c.endswith(("_lo", "_hi"))])
    plot_pareto(plain, tmp_path / "plain.pdf")
    assert (tmp_path / "plain.pdf").read_bytes().startswith(b"%PDF")
