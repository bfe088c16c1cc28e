"""Paired bootstrap: known intervals (constant differences, the normal approximation)."""

from __future__ import annotations

import numpy as np
import pytest

from routerr1.bootstrap import Interval, PairedBootstrap, resample_counts


def test_constant_difference_gives_a_zero_width_interval_at_that_value():
    rng = np.random.default_rng(0)
    n = 50
    single_em = rng.integers(0, 2, size=(n, 2)).astype(float)
    single_cost = np.column_stack([np.full(n, 1.0), np.full(n, 3.0)])
    boot = PairedBootstrap(single_em, single_cost, ["nq"] * 30 + ["hp"] * 20, 500, seed=1)
    best = 1
    # the same answers as model 1, at 0.5 more per question
    cmp = boot.compare(single_em[:, best], single_cost[:, best] + 0.5, best=best)
    assert cmp["d_em_best"] == Interval(0.0, 0.0, 0.0)
    d = cmp["d_cost_best"]
    assert (d.estimate, d.lo, d.hi) == pytest.approx((0.5, 0.5, 0.5))
    assert d.sign == 1 and cmp["d_em_best"].sign == 0


def test_large_sample_matches_the_normal_approximation():
    rng = np.random.default_rng(42)
    n = 4000
    single = (rng.random((n, 1)) < 0.5).astype(float)
    router = (rng.random(n) < 0.6).astype(float)
    boot = PairedBootstrap(single, np.zeros((n, 1)), ["nq"] * n, 2000, seed=0)
    d = boot.compare(router, np.zeros(n), best=0)["d_em_best"]
    diff = router - single[:, 0]
    se = diff.std(ddof=1) / np.sqrt(n)
    assert d.estimate == pytest.approx(diff.mean())
    assert d.lo == pytest.approx(diff.mean() - 1.96 * se, abs=0.15 * se)
    assert d.hi == pytest.approx(diff.mean() + 1.96 * se, abs=0.15 * se)
    assert d.sign == 1  # about +0.1 with se about 0.011


def test_frontier_difference_is_zero_on_the_frontier_and_negative_under_it():
    # A (cost 1, EM .5) and B (cost 2, EM 1.0) on every question alike: no sampling noise
    n = 20
    em = np.column_stack([np.tile([1.0, 0.0], n // 2), np.ones(n)])
    cost = np.column_stack([np.ones(n), np.full(n, 2.0)])
    boot = PairedBootstrap(em, cost, ["nq"] * n, 300, seed=0)
    on = boot.compare(em[:, 1], cost[:, 1])["d_em_frontier"]
    assert on.estimate == pytest.approx(0.0)
    # half of B's accuracy at B's price: 0.5 under the frontier (B scores 1 in every resample)
    under = boot.compare(np.tile([1.0, 0.0], n // 2), cost[:, 1])["d_em_frontier"]
    assert under.estimate == pytest.approx(-0.5)
    assert under.sign == -1


def test_seeds_are_averaged_per_question():
    rng = np.random.default_rng(3)
    n = 40
    single = (rng.random((n, 2)) < 0.5).astype(float)
    boot = PairedBootstrap(single, np.ones((n, 2)), ["nq"] * n, 300, seed=5)
    seeds = (rng.random((3, n)) < 0.6).astype(float)
    by_seed = boot.compare(seeds, np.ones((3, n)))
    averaged = boot.compare(seeds.mean(axis=0), np.ones(n))
    assert by_seed == averaged


def test_resamples_are_seeded_and_keep_each_benchmark_size():
    strata = ["a"] * 7 + ["b"] * 3
    c1 = resample_counts(strata, 50, seed=9)
    assert np.array_equal(c1, resample_counts(strata, 50, seed=9))
    assert not np.array_equal(c1, resample_counts(strata, 50, seed=10))
    assert (c1[:, :7].sum(axis=1) == 7).all() and (c1[:, 7:].sum(axis=1) == 3).all()


def test_macro_average_weights_benchmarks_equally():
    em = np.array([[1.0], [1.0], [1.0], [0.0]])  # a: 3/3, b: 0/1
    boot = PairedBootstrap(em, np.zeros((4, 1)), ["a", "a", "a", "b"], 10, seed=0)
    assert boot.em_point[0] == pytest.approx(0.5)


def test_bad_shapes_are_refused():
    boot = PairedBootstrap(np.zeros((3, 1)), np.zeros((3, 1)), ["a"] * 3, 10)
    with pytest.raises(ValueError, match="em: need one value per question"):
        boot.compare(np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="strata"):
        PairedBootstrap(np.zeros((3, 1)), np.zeros((3, 1)), ["a"] * 2, 10)
