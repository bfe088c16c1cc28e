"""Routing-behaviour report: counts on hand-made router rows, and the trajectory fallback."""

from __future__ import annotations

import pandas as pd
import pytest

from routerr1.parse import ModelNameResolver
from routerr1.routing import (
    ALL,
    NO_CALL,
    behaviour,
    example_rows,
    first_calls,
    group_diversity,
    trajectory_calls,
    write_routing,
)


def _row(bench, qid, models, replies, pred, gold, method="router-r1@a0.5", seed=None, **kw):
    return {
        "method": method,
        "family": kw.get("family", "router-r1"),
        "alpha": kw.get("alpha", 0.5),
        "benchmark": bench,
        "qid": qid,
        "question": f"question {qid}?",
        "golden_answers": [gold],
        "prediction": pred,
        "em": float(pred.lower() == gold.lower()),
        "pool_calls": len(models) if models is not None else kw.get("pool_calls", 0),
        "trajectory": kw.get("trajectory", ""),
        "call_models": models,
        "call_replies": replies,
        "seed": seed,
    }


ROWS = [
    _row("nq", "0", ["A"], ["Paris"], "Paris", "Paris"),  # one call, relayed
    _row("nq", "1", ["A", "B"], ["Lyon", "Paris"], "Paris", "Paris"),  # second call fixes it
    _row("nq", "2", ["B", "B"], ["Rome", "Milan"], "Rome", "Rome"),  # second call ignored
    _row("nq", "3", [], [], "x", "y"),  # answers alone
    _row("hotpotqa", "0", ["A", "B", "A"], ["yes", "no", "no"], "no", "yes"),  # made it worse
]


def test_counts_per_benchmark_and_overall():
    stats = behaviour(pd.DataFrame(ROWS), pool_names=["A", "B"])
    nq = stats[stats["benchmark"] == "nq"].iloc[0]
    assert nq["n"] == 4
    assert (nq["first:A"], nq["first:B"], nq[f"first:{NO_CALL}"]) == (0.5, 0.25, 0.25)
    assert nq["calls_mean"] == pytest.approx(1.25)
    assert (nq["calls_0"], nq["calls_1"], nq["calls_2"], nq["calls_3plus"]) == (
        0.25,
        0.25,
        0.5,
        0.0,
    )
    assert (nq["multi"], nq["changed"], nq["better"], nq["worse"]) == (2, 1, 1, 0)
    assert nq["multi_other_model"] == 1  # q1 went A then B; q2 asked B twice
    assert nq["em"] == pytest.approx(75.0)

    everything = stats[stats["benchmark"] == ALL].iloc[0]
    assert everything["n"] == 5
    assert everything["first:A"] == pytest.approx(0.6)
    assert (everything["multi"], everything["changed"], everything["better"]) == (3, 2, 1)
    assert everything["worse"] == 1
    assert everything["calls_3plus"] == pytest.approx(0.2)
    assert list(stats["benchmark"]) == ["hotpotqa", "nq", ALL]


def test_seeds_of_one_router_are_pooled():
    rows = [
        _row("nq", "0", ["A"], ["Paris"], "Paris", "Paris", seed=None),
        _row("nq", "0", ["B"], ["Paris"], "Paris", "Paris", seed=1),
    ]
    stats = behaviour(pd.DataFrame(rows), pool_names=["A", "B"])
    r = stats[stats["benchmark"] == ALL].iloc[0]
    assert (r["n"], r["n_seeds"], r["first:A"], r["first:B"]) == (2, 2, 0.5, 0.5)
    # examples come from one seed only, so a question is never shown twice
    assert len(example_rows(pd.DataFrame(rows), "router-r1@a0.5")) == 1


TRAJECTORY = (
    "<think>ask</think>\n<search>a: capital of France?</search>\n<information>Paris</information>"
    "\n<think>again</think><search>no separator</search>\n<information>Invalid search: missing "
    "':' separator</information>\n<search>B: sure?</search>\n<information>Model B failed: "
    "timeout</information>\n<answer>Paris</answer>"
)


def test_older_rows_are_read_from_the_trajectory_text():
    resolver = ModelNameResolver(["A", "B"])
    # the invalid search is no call; the failed call is a call with no reply
    assert trajectory_calls(TRAJECTORY, resolver) == [("A", "Paris"), ("B", "")]
    assert trajectory_calls(TRAJECTORY) == [("a", "Paris"), ("B", "")]
    assert trajectory_calls(None) == []
    old = _row("nq", "0", None, None, "Paris", "Paris", trajectory=TRAJECTORY, pool_calls=2)
    stats = behaviour(pd.DataFrame([old]).drop(columns=["call_models", "call_replies"]), ["A", "B"])
    r = stats[stats["benchmark"] == ALL].iloc[0]
    assert (r["first:A"], r["calls_mean"], r["multi"], r["changed"]) == (1.0, 2.0, 1, 0)
    assert r["calls_parsed_mismatch"] == 0


def test_baseline_rows_are_left_out_and_missing_columns_named():
    rows = pd.DataFrame([*ROWS, _row("nq", "0", ["A"], ["x"], "x", "y", method="oracle")])
    rows.loc[rows["method"] == "oracle", "family"] = "oracle"
    assert set(behaviour(rows, ["A", "B"])["method"]) == {"router-r1@a0.5"}
    with pytest.raises(ValueError, match="golden_answers"):
        behaviour(rows.drop(columns=["golden_answers"]))
    with pytest.raises(ValueError, match="no rows of the families"):
        behaviour(rows[rows["family"] == "oracle"])


def test_write_routing_writes_markdown_figure_and_csv(tmp_path):
    prompt = _row("nq", "0", [], [], "x", "y", method="prompt-router", family="prompt-router")
    paths = [tmp_path / "router.parquet", tmp_path / "prompt.parquet"]
    pd.DataFrame(ROWS).to_parquet(paths[0])
    # the prompt router has no alpha: a null column in its own file
    pd.DataFrame([{**prompt, "alpha": None}]).to_parquet(paths[1])
    out = tmp_path / "out"
    stats = write_routing(
        paths, out / "routing.md", out / "routing.pdf", out / "routing.csv", ["A", "B"]
    )
    assert list(dict.fromkeys(stats["method"])) == ["router-r1@a0.5", "prompt-router"]
    text = (out / "routing.md").read_text()
    assert "## All benchmarks" in text and "### router-r1@a0.5" in text
    assert text.count("- **") == 5 + 1  # five examples of the router, one of the prompt router
    assert (out / "routing.pdf").read_bytes().startswith(b"%PDF")
    assert len(pd.read_csv(out / "routing.csv")) == len(stats)


def test_group_diversity_counts_groups_that_differ():
    """Sampled rollouts of one question form a group; only differing groups teach GRPO."""
    rows = pd.DataFrame(
        [
            # nq q0: two routes and two outcomes
            _row("nq", "0", ["A"], ["Paris"], "Paris", "Paris"),
            _row("nq", "0", ["B"], ["Lyon"], "Lyon", "Paris"),
            # nq q1: one route, one outcome (no advantage)
            _row("nq", "1", ["A"], ["Rome"], "Rome", "Milan"),
            _row("nq", "1", ["A"], ["Rome"], "Rome", "Milan"),
            # gsm8k q0: one route, but the answers differ; the no-call rollout is a route too
            _row("gsm8k", "0", ["B"], ["4"], "4", "4"),
            _row("gsm8k", "0", ["B"], ["5"], "5", "4"),
            _row("gsm8k", "0", [], [], "4", "4"),
        ]
    )
    assert list(first_calls(rows)) == ["A", "B", "A", "A", "B", "B", NO_CALL]
    stats = group_diversity(rows).set_index("benchmark")
    assert stats.loc["nq", "groups"] == 2
    assert stats.loc["nq", "mixed_routes"] == 0.5 and stats.loc["nq", "em_spread"] == 0.5
    assert stats.loc["gsm8k", "routes_per_group"] == 2  # B and (no call)
    assert stats.loc["gsm8k", "em_spread"] == 1.0
    assert stats.loc[ALL, "groups"] == 3
    assert stats.loc[ALL, "mixed_routes"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="qid"):
        group_diversity(rows.drop(columns="qid"))
