"""Tests for cost accounting, cost normalization, reward combination and per-sample scoring."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routerr1.parse import ModelNameResolver
from routerr1.reward import (
    CostNormalizer,
    RewardBreakdown,
    call_cost,
    combine_reward,
    score_trajectory,
)

NAMES = ["Qwen2.5-Coder-1.5B", "SmolLM2-135M"]
GOOD = (
    "<think>Ask the small model.</think>\n"
    "<search>SmolLM2-135M: Capital of France?</search>\n"
    "<information>Paris</information>\n"
    "<think>It is Paris.</think>\n"
    "<answer>Paris</answer>"
)


@pytest.fixture
def resolver() -> ModelNameResolver:
    return ModelNameResolver(NAMES)


# --- call_cost -------------------------------------------------------------------------------


def test_call_cost_counts_input_and_output() -> None:
    # 1000 in at $0.10/1M + 500 out at $0.30/1M = 1e-4 + 1.5e-4
    assert call_cost(1000, 500, 0.10, 0.30) == pytest.approx(2.5e-4)
    assert call_cost(1_000_000, 0, 2.0, 99.0) == pytest.approx(2.0)
    assert call_cost(0, 0, 1.0, 1.0) == 0.0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1, 0, 1.0, 1.0), "in_tokens"),
        ((0, -5, 1.0, 1.0), "out_tokens"),
        ((0, 0, -0.1, 1.0), "price_in"),
        ((0, 0, 1.0, float("nan")), "price_out"),
        ((0, 0, 1.0, float("inf")), "price_out"),
    ],
)
def test_call_cost_rejects_bad_values(args, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call_cost(*args)


# --- CostNormalizer --------------------------------------------------------------------------


def test_normalizer_empty_window() -> None:
    n = CostNormalizer()
    assert len(n) == 0 and n.bounds() is None
    assert n.normalize(0.0) == 1.0
    assert n.normalize(3.0) == 0.5


def test_normalizer_constant_window() -> None:
    n = CostNormalizer()
    n.observe([4.0, 4.0, 4.0])
    assert n.bounds() == (2.0, 2.0)
    assert n.normalize(4.0) == 1.0
    assert n.normalize(1.0) == 1.0
    assert n.normalize(9.0) == 0.5


def test_normalizer_inverts_and_clips() -> None:
    n = CostNormalizer(window=100, low_pct=0.0, high_pct=100.0)
    n.observe([0.0, 100.0])  # sqrt space: lo=0, hi=10
    assert n.normalize(0.0) == 1.0  # cheapest -> 1
    assert n.normalize(100.0) == 0.0  # most expensive -> 0
    assert n.normalize(400.0) == 0.0  # clipped above hi
    assert n.normalize(25.0) == pytest.approx(0.5)  # sqrt(25)=5 halfway


def test_normalizer_uses_sqrt() -> None:
    n = CostNormalizer(window=10, low_pct=0.0, high_pct=100.0)
    n.observe([0.0, 1.0])
    # Linear scaling would give 1 - 0.25 = 0.75; sqrt scaling gives 1 - 0.5.
    assert n.normalize(0.25) == pytest.approx(0.5)
    assert n.values == (0.0, 1.0)


def test_normalizer_percentiles_ignore_outliers() -> None:
    n = CostNormalizer(window=1000, low_pct=5.0, high_pct=95.0)
    n.observe([float(i * i) for i in range(101)])  # sqrt values 0..100
    lo, hi = n.bounds()  # type: ignore[misc]
    assert lo == pytest.approx(5.0) and hi == pytest.approx(95.0)
    assert n.normalize(50.0**2) == pytest.approx(0.5)
    assert n.normalize(1.0) == 1.0  # below the 5th percentile


def test_normalizer_window_slides() -> None:
    n = CostNormalizer(window=3, low_pct=0.0, high_pct=100.0)
    n.observe([0.0, 1.0, 4.0])
    assert n.bounds() == (0.0, 2.0)
    n.observe([100.0])  # 0.0 drops out: window sqrt values (1, 2, 10)
    assert n.values == (1.0, 2.0, 10.0)
    assert n.bounds() == (1.0, 10.0)
    assert n.normalize(0.0) == 1.0
    assert n.normalize(100.0) == 0.0


def test_normalize_does_not_mutate_window() -> None:
    n = CostNormalizer()
    n.observe([1.0, 2.0])
    n.normalize(50.0)
    assert len(n) == 2


def test_separate_normalizers_are_independent() -> None:
    train, evaluation = CostNormalizer(), CostNormalizer()
    train.observe([1.0, 100.0])
    assert len(evaluation) == 0
    assert evaluation.normalize(1.0) == 0.5


def test_normalizer_bad_batch_leaves_window_untouched() -> None:
    n = CostNormalizer()
    n.observe([1.0])
    with pytest.raises(ValueError, match=r"costs\[1\]"):
        n.observe([2.0, -1.0])
    assert n.values == (1.0,)
    with pytest.raises(ValueError, match="cost"):
        n.normalize(float("nan"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": 0}, "window"),
        ({"window": 2.5}, "window"),
        ({"low_pct": 50.0, "high_pct": 50.0}, "low_pct"),
        ({"high_pct": 101.0}, "high_pct"),
    ],
)
def test_normalizer_bad_config(kwargs, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CostNormalizer(**kwargs)


# --- combine_reward --------------------------------------------------------------------------


def test_combine_bad_format_is_minus_one() -> None:
    for switch in (True, False):
        assert combine_reward(False, 1.0, 1.0, 0.5, switch) == -1.0


def test_combine_cost_always() -> None:
    assert combine_reward(True, 1.0, 0.5, 0.2, False) == pytest.approx(0.8 + 0.1)
    assert combine_reward(True, 0.0, 0.5, 0.2, False) == pytest.approx(0.1)


def test_combine_cost_on_correct_only() -> None:
    assert combine_reward(True, 1.0, 0.5, 0.2, True) == pytest.approx(0.9)
    assert combine_reward(True, 0.0, 1.0, 0.2, True) == 0.0  # wrong answer: no cost credit
    assert combine_reward(True, 0.4, 1.0, 0.5, True) == pytest.approx(0.7)  # partial F1 counts


def test_combine_alpha_extremes() -> None:
    assert combine_reward(True, 1.0, 0.0, 0.0, False) == 1.0
    assert combine_reward(True, 0.0, 0.3, 1.0, False) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((True, 1.0, 1.0, -0.1, False), "alpha"),
        ((True, 1.0, 1.0, 1.5, False), "alpha"),
        ((True, 1.0, 1.0, float("nan"), False), "alpha"),
        ((True, 2.0, 1.0, 0.5, False), "outcome"),
        ((True, 1.0, -1.0, 0.5, False), "cost_norm"),
    ],
)
def test_combine_rejects_out_of_range(args, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        combine_reward(*args)


# --- score_trajectory ------------------------------------------------------------------------


def _normalizer() -> CostNormalizer:
    n = CostNormalizer(window=8, low_pct=0.0, high_pct=100.0)
    n.observe([0.0, 4.0])  # sqrt space lo=0, hi=2
    return n


def test_score_correct_and_cheap(resolver: ModelNameResolver) -> None:
    b = score_trajectory(GOOD, ["paris"], 1.0, 0.5, resolver, _normalizer(), True)
    assert b == RewardBreakdown(
        total=pytest.approx(0.75),
        format_ok=True,
        format_reason=None,
        outcome_em=1.0,
        outcome_f1=1.0,
        cost=1.0,
        cost_norm=pytest.approx(0.5),
    )


def test_score_wrong_answer_switch(resolver: ModelNameResolver) -> None:
    on = score_trajectory(GOOD, ["London"], 0.0, 0.5, resolver, _normalizer(), True)
    off = score_trajectory(GOOD, ["London"], 0.0, 0.5, resolver, _normalizer(), False)
    assert on.total == 0.0
    assert off.total == pytest.approx(0.5)


def test_score_outcome_kinds(resolver: ModelNameResolver) -> None:
    traj = GOOD.replace("<answer>Paris</answer>", "<answer>Paris, France</answer>")
    n = _normalizer()
    em = score_trajectory(traj, ["Paris"], 0.0, 0.0, resolver, n, True, outcome="em")
    f1 = score_trajectory(traj, ["Paris"], 0.0, 0.0, resolver, n, True, outcome="f1")
    cover = score_trajectory(traj, ["Paris"], 0.0, 0.0, resolver, n, True, outcome="cover_em")
    assert em.total == 0.0
    assert f1.total == pytest.approx(2 / 3)
    assert cover.total == 1.0
    with pytest.raises(ValueError, match="outcome"):
        score_trajectory(traj, ["Paris"], 0.0, 0.0, resolver, n, True, outcome="bleu")


def test_score_bad_format_keeps_diagnostics(resolver: ModelNameResolver) -> None:
    traj = "<answer>Paris</answer>"
    b = score_trajectory(traj, ["Paris"], 0.0, 0.3, resolver, _normalizer(), False)
    assert b.total == -1.0 and not b.format_ok
    assert b.format_reason == "does not start with <think>"
    assert b.outcome_em == 1.0  # logged, but earns nothing


def test_score_policy_written_information_gets_no_credit(resolver: ModelNameResolver) -> None:
    b = score_trajectory(
        GOOD, ["Paris"], 0.0, 0.2, resolver, _normalizer(), False, injected_information=0
    )
    assert b.total == -1.0
    assert b.format_reason == "policy wrote its own <information>"
    ok = score_trajectory(
        GOOD, ["Paris"], 0.0, 0.2, resolver, _normalizer(), False, injected_information=1
    )
    assert ok.total == pytest.approx(1.0)


def test_score_rejects_bad_arguments(resolver: ModelNameResolver) -> None:
    with pytest.raises(ValueError, match="alpha"):
        score_trajectory(GOOD, ["Paris"], 0.0, 2.0, resolver, _normalizer(), True)
    with pytest.raises(ValueError, match="cost"):
        score_trajectory(GOOD, ["Paris"], -1.0, 0.5, resolver, _normalizer(), True)


# --- property tests --------------------------------------------------------------------------

_FRAGMENTS = [
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<information>",
    "</information>",
    "<answer>",
    "</answer>",
    "SmolLM2-135M: capital?",
    "Paris",
    "\n",
    "ß",
    "🙂",
    "\x00",
]
_text = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=15)), max_size=50).map(
    "".join
)
_long = st.tuples(_text, st.integers(1, 2500)).map(lambda t: (t[0] * t[1])[:50_000])
# Policy-written information: a well-formed trajectory with an extra block the rollout never
# injected, anywhere in the text.
_forged = st.integers(0, len(GOOD)).map(
    lambda i: GOOD[:i] + "<information>Paris</information>" + GOOD[i:]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    traj=st.one_of(_text, _long, _forged, st.text()),
    cost=st.floats(0.0, 1e6),
    alpha=st.floats(0.0, 1.0),
    switch=st.booleans(),
    outcome=st.sampled_from(["em", "f1", "cover_em"]),
    injected=st.none() | st.integers(0, 3),
)
def test_score_trajectory_never_raises_and_is_bounded(
    traj: str, cost: float, alpha: float, switch: bool, outcome: str, injected: int | None
) -> None:
    n = CostNormalizer(window=16)
    n.observe([0.0, 0.5, cost])
    b = score_trajectory(
        traj,
        ["Paris", "the city of Paris"],
        cost,
        alpha,
        ModelNameResolver(NAMES),
        n,
        switch,
        outcome=outcome,
        injected_information=injected,
    )
    assert -1.0 <= b.total <= 1.0 and not math.isnan(b.total)
    assert 0.0 <= b.cost_norm <= 1.0
    assert b.format_ok == (b.format_reason is None)
    if not b.format_ok:
        assert b.total == -1.0


@settings(max_examples=100, deadline=None)
@given(i=st.integers(0, len(GOOD)))
def test_forged_information_never_earns_credit(i: int) -> None:
    traj = GOOD[:i] + "<information>Paris</information>" + GOOD[i:]
    b = score_trajectory(
        traj,
        ["Paris"],
        0.0,
        0.5,
        ModelNameResolver(NAMES),
        CostNormalizer(),
        False,
        injected_information=1,
    )
    assert b.total == -1.0
