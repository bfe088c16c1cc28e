"""The report with every baseline and the unseen-model routers: tables, checks and the plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from routerr1.baselines import largest_rows, oracle_rows, random_rows
from routerr1.methods import ROW_COLUMNS
from routerr1.report.aggregate import aggregate
from routerr1.report.plot import _page_figure, plot_pareto

PRICES = {"Tiny": (0.02, 0.04), "Big": (0.10, 0.20)}


def rows(method, family, alpha, ems, cost, bench="nq", **extra):
    return pd.DataFrame(
        [
            {
                "method": method,
                "family": family,
                "alpha": alpha,
                "benchmark": bench,
                "qid": str(i),
                "question": f"q{i}",
                "golden_answers": ["g"],
                "prediction": "p",
                "em": float(e),
                "f1": float(e),
                "pool_calls": 1,
                "invalid_actions": 0,
                "pool_errors": 0,
                "in_tokens": 10,
                "out_tokens": 2,
                "cost": cost,
                "latency_s": 0.1,
                "trajectory": "",
                **extra,
            }
            for i, e in enumerate(ems)
        ],
        columns=[*ROW_COLUMNS, *extra],
    )


@pytest.fixture
def eval_files(tmp_path):
    single = pd.concat(
        [
            rows("single:Tiny", "single", None, [1, 0, 0, 0], 1e-6),
            rows("single:Big", "single", None, [1, 1, 0, 0], 5e-6),
        ],
        ignore_index=True,
    )
    frames = {
        "tiny": single[single["method"] == "single:Tiny"],
        "big": single[single["method"] == "single:Big"],
        "oracle": oracle_rows(single, PRICES),
        "largest": largest_rows(single, "Big"),
        "random": random_rows(single, 0),
        "r0": rows("router-r1@a0.0", "router-r1", 0.0, [1, 1, 0, 0], 4e-6),
        "r9": rows("router-r1@a0.9", "router-r1", 0.9, [1, 0, 0, 0], 2e-6),
        "u0": rows(
            "router-r1+unseen@a0.0", "router-r1-unseen", 0.0, [1, 1, 1, 0], 3e-6, unseen_calls=1
        ),
        "u9": rows(
            "router-r1+unseen@a0.9", "router-r1-unseen", 0.9, [1, 0, 0, 0], 1e-6, unseen_calls=0
        ),
    }
    paths = []
    for name, df in frames.items():
        path = tmp_path / f"{name}.parquet"
        df.to_parquet(path)
        paths.append(path)
    return paths


def test_summary_and_markdown_carry_every_baseline(eval_files, tmp_path):
    summary = aggregate(eval_files, tmp_path / "s.duckdb", tmp_path / "s.csv", tmp_path / "s.md")
    avg = summary[summary["benchmark"] == "average"].set_index("method")
    assert list(dict.fromkeys(summary["family"])) == [
        "router-r1",
        "router-r1-unseen",
        "random",
        "single",
        "largest",
        "oracle",
    ]
    assert avg.loc["oracle", "em"] == 50.0 and avg.loc["oracle", "cost"] == pytest.approx(2e-6)
    assert avg.loc["largest:Big", "em"] == avg.loc["single:Big", "em"]
    assert avg.loc["router-r1+unseen@a0.0", "unseen_calls"] == 1.0
    assert np.isnan(avg.loc["router-r1@a0.0", "unseen_calls"])

    md = (tmp_path / "s.md").read_text()
    assert "## Unseen models" in md
    # alpha 0: training pool 50 EM at $4e-6, with unseen models 75 EM at $3e-6
    assert "| 0 | 50.0 / $4.00e-06 | 75.0 / $3.00e-06 | +25.0 | 1.00 | 1.00 |" in md
    assert "| 0.9 | 25.0 / $2.00e-06 | 25.0 / $1.00e-06 | +0.0 | 1.00 | 0.00 |" in md
    assert "- oracle: per question the cheapest pool model that answers correctly" in md
    assert "- knn:" not in md  # notes only for families present


def test_unseen_routers_need_alpha(eval_files, tmp_path):
    bad = tmp_path / "bad.parquet"
    rows("router-r1+unseen@a?", "router-r1-unseen", None, [1], 1e-6).to_parquet(bad)
    with pytest.raises(ValueError, match="router-r1-unseen"):
        aggregate([bad], tmp_path / "b.duckdb", tmp_path / "b.csv", tmp_path / "b.md")


def test_pareto_page_draws_both_sweeps_and_every_baseline(eval_files, tmp_path):
    summary = aggregate(eval_files, tmp_path / "s.duckdb", tmp_path / "s.csv", tmp_path / "s.md")
    fig = _page_figure(summary, "average")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:2] == ["Router-R1", "Router-R1 + unseen models"]
    assert {"oracle", "largest:Big", "random", "single:Tiny", "single:Big"} <= set(labels)
    assert "Pareto frontier (excl. oracle)" in labels
    # the frontier's best EM is the best deployable one (75, unseen at alpha 0), not the oracle
    frontier = next(
        line for line in fig.axes[0].get_lines() if line.get_label().startswith("Pareto")
    )
    assert max(frontier.get_ydata()) == 75.0
    plot_pareto(summary, tmp_path / "p.pdf")
    assert (tmp_path / "p.pdf").read_bytes().startswith(b"%PDF")
