"""benchmarks/evaluate_policy.py --against: the trained routers minus their starting policy."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import benchmark_module

evaluate_policy = benchmark_module("evaluate_policy")


def _rows(em: list[float], cost: float) -> pd.DataFrame:
    benchmarks = ["gsm8k"] * (len(em) // 2) + ["nq"] * (len(em) - len(em) // 2)
    return pd.DataFrame(
        {
            "qid": [f"{b}/{i}" for i, b in enumerate(benchmarks)],
            "benchmark": benchmarks,
            "em": em,
            "cost": [cost] * len(em),
        }
    )


def test_a_constant_gain_has_a_point_interval_and_rows_pair_by_qid():
    policy = _rows([0, 1, 0, 1, 0, 0], cost=2.0)
    # each seed right where the policy was wrong too, rows in another order
    seeds = [_rows([1, 1, 1, 1, 1, 1], cost=1.0).iloc[::-1] for _ in range(2)]
    result = evaluate_policy.against(policy, seeds)
    d_em = result["d_em_best"]
    # each benchmark: 1 - 1/3. The per-question difference is 1 or 0, so the resamples
    # spread around the point; the cost difference is the same on every question
    assert d_em.estimate == pytest.approx(2 / 3)
    assert d_em.lo <= 2 / 3 <= d_em.hi
    d_cost = result["d_cost_best"]
    assert (d_cost.estimate, d_cost.lo, d_cost.hi) == pytest.approx((-1.0, -1.0, -1.0))


def test_seeds_are_averaged_per_question():
    policy = _rows([0, 0, 0, 0], cost=1.0)
    seeds = [_rows([1, 1, 1, 1], cost=1.0), _rows([0, 0, 0, 0], cost=1.0)]
    d_em = evaluate_policy.against(policy, seeds)["d_em_best"]
    assert (d_em.estimate, d_em.lo, d_em.hi) == pytest.approx((0.5, 0.5, 0.5))


def test_routers_on_other_questions_are_refused():
    policy = _rows([0, 0, 0, 0], cost=1.0)
    other = _rows([1, 1, 1, 1], cost=1.0).assign(qid=lambda d: d["qid"] + "x")
    with pytest.raises(ValueError, match="--against file 1: its questions differ"):
        evaluate_policy.against(policy, [other])


def test_limit_keeps_the_first_questions_of_each_benchmark_in_order():
    from types import SimpleNamespace

    records = [SimpleNamespace(benchmark=b, qid=f"{b}/{i}") for i, b in enumerate("aababbba")]
    kept = evaluate_policy.first_per_benchmark(records, 2)
    assert [r.qid for r in kept] == ["a/0", "a/1", "b/2", "b/4"]
    assert evaluate_policy.first_per_benchmark(records, 10) == records


@pytest.mark.parametrize("text", ["0", "-3", "two"])
def test_limit_and_batch_size_refuse_anything_but_a_positive_whole_number(text, capsys):
    with pytest.raises(SystemExit):
        evaluate_policy.main(["policy", "--out", "x.parquet", "--limit", text])
    assert "--limit" in capsys.readouterr().err
