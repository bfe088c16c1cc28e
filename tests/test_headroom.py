"""Headroom strategies on hand-made single-model rows whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from routerr1.frontier import frontier_at
from routerr1.headroom import (
    cascade,
    fold_ids,
    headroom,
    majority_vote,
    oracle,
    single_table,
)
from routerr1.methods import AVERAGE
from routerr1.report.headroom import render_headroom, write_headroom


def _rows(answers: dict[str, list[str | None]], gold: list[str], cost: dict[str, float], **kw):
    """Single-model rows: ``answers[model][q]``; em is 1 where the answer equals the gold."""
    bench = kw.get("benchmark", ["nq"] * len(gold))
    questions = kw.get("questions", [f"question {i}?" for i in range(len(gold))])
    rows = []
    for model, preds in answers.items():
        for i, p in enumerate(preds):
            rows.append(
                {
                    "method": f"single:{model}",
                    "family": "single",
                    "alpha": None,
                    "benchmark": bench[i],
                    "qid": str(i),
                    "question": questions[i],
                    "golden_answers": [gold[i]],
                    "prediction": p,
                    "em": float(p is not None and p.lower() == gold[i].lower()),
                    "f1": 0.0,
                    "cost": cost[model],
                    "pool_calls": 1,
                    "invalid_actions": 0,
                    "pool_errors": 0,
                }
            )
    return pd.DataFrame(rows)


# Three models, four questions (A $1, B $2, C $4 per question):
#   q0: A right, B right, C wrong     q1: A empty, B right, C right
#   q2: A rambles, B right, C wrong   q3: A wrong, B wrong, C right
GOLD = ["paris", "g1", "g2", "g3"]
ANSWERS = {
    "A": ["Paris", "", "well it might be one of several things", "x"],
    "B": ["paris", "g1", "g2", "y"],
    "C": ["z", "g1", "w", "g3"],
}
COST = {"A": 1.0, "B": 2.0, "C": 4.0}


@pytest.fixture
def table():
    return single_table(_rows(ANSWERS, GOLD, COST))


def test_table_orders_models_cheapest_first_and_counts_words(table):
    assert table.models == ("A", "B", "C")
    assert table.em.tolist() == [[1, 1, 0], [0, 1, 1], [0, 1, 0], [0, 0, 1]]
    assert table.words[:, 0].tolist() == [1, 0, 8, 1]
    assert table.answer[0, 0] == "paris"  # normalized


def test_oracle_takes_the_cheapest_correct_model(table):
    em, cost = oracle(table)
    assert em.tolist() == [1, 1, 1, 1]
    assert cost.tolist() == [1.0, 2.0, 2.0, 4.0]  # A, B, B, C


def test_oracle_without_a_correct_model_pays_the_cheapest_call():
    t = single_table(_rows({"A": ["x"], "B": ["y"]}, ["g"], {"A": 3.0, "B": 1.0}))
    em, cost = oracle(t)
    assert em.tolist() == [0.0] and cost.tolist() == [1.0]


def test_cascade_escalates_on_empty_and_long_answers(table):
    em, cost = cascade(table, 0, 1, word_limit=3)  # A -> B when A is empty or > 3 words
    assert em.tolist() == [1, 1, 1, 0]
    assert cost.tolist() == [1.0, 3.0, 3.0, 1.0]
    em, cost = cascade(table, 0, 1, word_limit=None)  # only the empty answer escalates
    assert em.tolist() == [1, 1, 0, 0]
    assert cost.tolist() == [1.0, 3.0, 1.0, 1.0]


def test_failed_call_escalates_too():
    rows = _rows({"A": ["g"], "B": ["g"]}, ["g"], {"A": 1.0, "B": 2.0})
    rows.loc[rows["method"] == "single:A", "pool_errors"] = 1
    em, cost = cascade(single_table(rows), 0, 1, word_limit=None)
    assert cost.tolist() == [3.0]


def test_majority_vote_counts_agreement_and_breaks_ties_by_priority(table):
    # priority B > C > A: q2 and q3 are three-way splits, so B's answer is taken
    em, cost = majority_vote(table, [0, 1, 2], priority=[0.25, 0.75, 0.5])
    assert em.tolist() == [1, 1, 1, 0]  # q0: paris x2; q1: A's empty answer does not vote
    assert cost.tolist() == [7.0] * 4
    em, _ = majority_vote(table, [0, 1, 2], priority=[0.25, 0.5, 0.75])  # C wins the ties
    assert em.tolist() == [1, 1, 0, 1]


def test_frontier_delta_of_single_models_and_oracle(table):
    res = headroom(_rows(ANSWERS, GOLD, COST), folds=2, seed=0, n_resamples=200)
    page = res.rows[res.rows["benchmark"] == "nq"].set_index("strategy")
    # singles (cost, EM): A (1, 25%), B (2, 75%), C (4, 50%); the hull from (0, 0) runs
    # straight to B (A lies under it) and stays flat: A is 12.5 under it, C 25 under
    assert page.loc["single:A", "frontier_em"] == pytest.approx(37.5)
    assert page.loc["single:A", "d_frontier"] == pytest.approx(-12.5)
    assert page.loc["single:B", "d_frontier"] == pytest.approx(0.0)
    assert page.loc["single:C", "d_frontier"] == pytest.approx(-25.0)
    assert page.loc["oracle", "em"] == pytest.approx(100.0)
    assert page.loc["oracle", "cost"] == pytest.approx(2.25)
    assert page.loc["oracle", "d_frontier"] == pytest.approx(25.0)
    assert page.loc["oracle", "d_best"] == pytest.approx(25.0)  # best single: B at 75%
    singles = [(c, 100 * e) for c, e in [(1, 0.25), (2, 0.75), (4, 0.5)]]
    assert float(frontier_at(singles, 1.5)) == pytest.approx(56.25)
    # the average page of a single benchmark is that benchmark
    avg = res.rows[res.rows["benchmark"] == AVERAGE].set_index("strategy")
    assert avg.loc["oracle", "em"] == pytest.approx(100.0)


def _separable(n: int = 20):
    """A is right whenever it answers (half the time, else empty), B always, C never."""
    gold = [f"g{i}" for i in range(n)]
    answers = {
        "A": [g if i % 2 == 0 else "" for i, g in enumerate(gold)],
        "B": list(gold),
        "C": ["nope"] * n,
    }
    bench = ["nq" if i < n // 2 else "hotpotqa" for i in range(n)]
    return _rows(answers, gold, {"A": 1.0, "B": 10.0, "C": 0.5}, benchmark=bench)


def test_best_cascade_is_chosen_on_training_folds_and_scored_held_out():
    res = headroom(_separable(), folds=4, seed=3, n_resamples=200)
    avg = res.rows[res.rows["benchmark"] == AVERAGE].set_index("strategy")
    # A -> B on an empty answer is right everywhere, at 1 + 10 * half the questions
    assert avg.loc["best cascade", "em"] == pytest.approx(100.0)
    assert avg.loc["best cascade", "cost"] == pytest.approx(6.0)
    assert "A -> B" in avg.loc["best cascade", "detail"]
    # frontier at $6: between A (1, 50) and B (10, 100) -> 50 + 50 * 5 / 9
    assert avg.loc["best cascade", "d_frontier"] == pytest.approx(100 - (50 + 250 / 9))
    assert avg.loc["best cascade", "d_frontier_lo"] > 0  # a claim: excludes zero
    assert bool(avg.loc["best cascade", "learned"]) is True


def test_pre_routing_learns_a_word_that_predicts_the_cheap_model():
    n = 60
    questions = [f"math problem number {i}" if i % 2 else f"who wrote novel {i}" for i in range(n)]
    gold = [f"g{i}" for i in range(n)]
    answers = {
        "A": [g if i % 2 else "x" for i, g in enumerate(gold)],  # cheap: only math
        "B": [g if i % 2 == 0 else "y" for i, g in enumerate(gold)],  # dear: only the rest
    }
    rows = _rows(answers, gold, {"A": 1.0, "B": 2.0}, questions=questions)
    res = headroom(rows, folds=3, seed=0, n_resamples=200)
    r = res.rows[(res.rows["benchmark"] == AVERAGE)].set_index("strategy")
    assert r.loc["pre-route (text)", "em"] == pytest.approx(100.0)
    assert r.loc["pre-route (text)", "cost"] == pytest.approx(1.5)
    assert r.loc["pre-route (text)", "d_frontier_lo"] > 0


def test_routing_by_benchmark_sends_each_benchmark_to_its_best_model():
    # A is right on every maths question and B on every factoid; each alone gets half
    n = 40
    bench = ["gsm8k" if i % 2 else "nq" for i in range(n)]
    gold = [f"g{i}" for i in range(n)]
    answers = {
        "A": [g if b == "gsm8k" else "x" for g, b in zip(gold, bench, strict=True)],
        "B": [g if b == "nq" else "y" for g, b in zip(gold, bench, strict=True)],
    }
    rows = _rows(answers, gold, {"A": 1.0, "B": 3.0}, benchmark=bench)
    res = headroom(rows, folds=4, seed=0, n_resamples=200)
    avg = res.rows[res.rows["benchmark"] == AVERAGE].set_index("strategy")
    assert avg.loc["by benchmark", "em"] == pytest.approx(100.0)
    assert avg.loc["by benchmark", "cost"] == pytest.approx(2.0)  # half at $1, half at $3
    assert avg.loc["by benchmark", "d_best"] == pytest.approx(50.0)
    assert avg.loc["by benchmark", "d_best_lo"] > 0  # paired against the best single
    assert "gsm8k -> A, nq -> B" in avg.loc["by benchmark", "detail"]
    assert "| by benchmark | yes | 100.0 |" in render_headroom(res)
    # half the best single's cost ($1, A: ties to the cheaper): a mix of A and abstention gets
    # 25 EM; routing by benchmark ($2, 100 EM) mixed with abstention gets the same 25 there
    a = res.aiq.set_index("benchmark").loc[AVERAGE]
    assert a["best_single"] == "A" and a["best_single_em"] == pytest.approx(50.0)
    assert a["half_cost"] == pytest.approx(0.5)
    assert a["em_at_half_cost"] == pytest.approx(25.0)
    assert a["em_at_half_cost_with_strategies"] == pytest.approx(25.0)
    assert "At half the best single's cost ($5.00e-01) mixing single models reaches 25.0 EM" in (
        render_headroom(res)
    )
    # one benchmark: routing by it is the best single model, so it is not listed
    one = headroom(_rows(ANSWERS, GOLD, COST), folds=2, seed=0, n_resamples=50)
    assert "by benchmark" not in set(one.rows["strategy"])


def test_half_the_best_singles_cost_shows_what_a_cheaper_router_can_reach():
    # B ($3) is right everywhere, A ($1) on the maths half only: routing maths to A keeps B's EM
    # at $2; at half B's cost ($1.5) single models mix to 62.5 EM, with that strategy to 75
    n = 40
    bench = ["gsm8k" if i % 2 else "nq" for i in range(n)]
    gold = [f"g{i}" for i in range(n)]
    answers = {"A": [g if b == "gsm8k" else "x" for g, b in zip(gold, bench, strict=True)]}
    answers["B"] = list(gold)
    res = headroom(
        _rows(answers, gold, {"A": 1.0, "B": 3.0}, benchmark=bench),
        folds=4,
        seed=0,
        n_resamples=200,
    )
    a = res.aiq.set_index("benchmark").loc[AVERAGE]
    assert a["best_single"] == "B" and a["best_single_em"] == pytest.approx(100.0)
    assert a["half_cost"] == pytest.approx(1.5)
    assert a["em_at_half_cost"] == pytest.approx(62.5)
    assert a["em_at_half_cost_with_strategies"] == pytest.approx(75.0)


def test_folds_are_seeded_and_stratified():
    bench = ["a"] * 10 + ["b"] * 6
    f1, f2 = fold_ids(bench, 3, seed=1), fold_ids(bench, 3, seed=1)
    assert f1.tolist() == f2.tolist()
    for b in ("a", "b"):
        counts = np.bincount(f1[np.array(bench) == b], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert fold_ids(bench, 3, seed=2).tolist() != f1.tolist()
    with pytest.raises(ValueError, match="folds"):
        fold_ids(["a"], 2, seed=0)


def test_single_rows_are_checked():
    rows = _rows(ANSWERS, GOLD, COST)
    with pytest.raises(ValueError, match="prediction"):
        single_table(rows.drop(columns=["prediction"]))
    with pytest.raises(ValueError, match="'B' answered 3 of the 4"):
        single_table(rows.drop(index=rows.index[(rows["method"] == "single:B")][-1:]))
    with pytest.raises(ValueError, match="not 'single:"):
        single_table(rows.assign(method="router-r1@a0.5"))


def test_write_headroom_writes_markdown_and_csv(tmp_path):
    rows = _separable()
    paths = []
    for m, part in rows.groupby("method"):
        paths.append(tmp_path / f"{m.split(':')[1]}.parquet")
        part.to_parquet(paths[-1])
    md, csv = tmp_path / "out" / "headroom.md", tmp_path / "out" / "headroom.csv"
    res = write_headroom(paths, md, csv, folds=4, seed=3, n_resamples=100)
    text = md.read_text()
    assert "## Average (macro over benchmarks)" in text and "## hotpotqa" in text
    assert "| best cascade | yes | 100.0 |" in text
    back = pd.read_csv(csv)
    assert len(back) == len(res.rows) and set(back["benchmark"]) == {AVERAGE, "nq", "hotpotqa"}
    assert render_headroom(res).startswith("# Headroom of the pool")


def test_one_model_pool_and_fewer_questions_than_folds():
    rows = _rows({"A": ["g0", "x", "g2"]}, ["g0", "g1", "g2"], {"A": 1.0})
    res = headroom(rows, folds=5, seed=0, n_resamples=50)  # 3 questions: 3 folds
    assert res.folds == 3
    assert set(res.rows["strategy"]) == {"single:A", "oracle"}
    with pytest.raises(ValueError, match="2\\+"):
        headroom(_rows({"A": ["g"]}, ["g"], {"A": 1.0}), n_resamples=50)


def test_ties_in_gain_go_to_the_cheaper_choice():
    # nobody is ever right: every cascade and vote gains nothing, so the cheapest one is kept
    rows = _rows({"A": ["x"] * 8, "B": ["y"] * 8}, [f"g{i}" for i in range(8)], COST)
    res = headroom(rows, folds=2, seed=0, n_resamples=50)
    avg = res.rows[res.rows["benchmark"] == AVERAGE].set_index("strategy")
    assert avg.loc["best cascade", "cost"] == pytest.approx(1.0)  # A, never escalating
    assert avg.loc["best vote", "cost"] == pytest.approx(3.0)  # the only subset: A and B
    assert avg.loc["pre-route (text)", "cost"] == pytest.approx(1.0)
