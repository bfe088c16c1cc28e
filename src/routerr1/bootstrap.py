"""Paired bootstrap over questions: how sure is "the router beats the pool models"?

Every method answered the same evaluation questions, so differences are measured *paired*: one
resample draws questions with replacement, and every method (router, each single model, a
headroom strategy) is scored on that same draw. Resampling is stratified by benchmark (each
benchmark keeps its size), so the macro average over benchmarks, the report's "average" page,
is defined in every resample.

Intervals are percentile intervals (default 95%, 2000 resamples, seeded). The comparisons:

- ``d_em_best`` / ``d_cost_best``: the method minus the best single model (highest EM on the
  page, ties to the cheaper), on the same questions;
- ``d_em_frontier``: the method's EM minus the single-model frontier at the method's cost (the
  best EM a random mix of pool models reaches for that money, `routerr1.frontier.frontier_at`),
  both recomputed in every resample.

Several training seeds: pass the method's per-question scores with one row per seed. They are
averaged per question first and the questions are resampled; the seeds are held fixed, so an
interval covers question sampling with the seed noise averaged down, not the spread between
seeds (with 2-5 seeds, resampling seeds would give unstable intervals). The report shows that
spread separately.

A claim ("better than the best single model", "above the frontier") counts only where its
interval excludes zero (`Interval.sign`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routerr1.frontier import frontier_values, hull_curve

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "Interval",
    "PairedBootstrap",
    "percentile_interval",
    "resample_counts",
]

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate (on the full sample) and its bootstrap percentile interval."""

    estimate: float
    lo: float
    hi: float

    @property
    def sign(self) -> int:
        """+1 when the whole interval is above zero, -1 when below, 0 when it holds zero."""
        return 1 if self.lo > 0 else -1 if self.hi < 0 else 0

    def scaled(self, factor: float) -> Interval:
        return Interval(self.estimate * factor, self.lo * factor, self.hi * factor)


def percentile_interval(estimate: float, samples: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(samples, dtype=float), [tail, 1.0 - tail])
    return Interval(float(estimate), float(lo), float(hi))


def _strata_codes(strata: Sequence) -> tuple[np.ndarray, int]:
    labels = np.asarray(strata, dtype=object)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError("strata: need one label per question, and at least one question")
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    return codes, int(codes.max()) + 1


def resample_counts(strata: Sequence, n_resamples: int, seed: int) -> np.ndarray:
    """How often each question is drawn in each resample: an (n_resamples, n_questions) array.

    Within each stratum (benchmark) the questions are drawn with replacement, as many as the
    stratum holds; the draws depend only on ``seed`` and the strata, so every method compared
    with the same arguments sees the same resamples.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples: must be >= 1, got {n_resamples!r}")
    codes, n_strata = _strata_codes(strata)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, len(codes)), dtype=np.float64)
    for s in range(n_strata):
        idx = np.flatnonzero(codes == s)
        counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), n_resamples)
    return counts


class PairedBootstrap:
    """Resamples of one page's questions, with the single models scored on each.

    ``single_em`` / ``single_cost``: (questions, models) arrays of every pool model's direct
    answers; ``strata``: the benchmark of each question. Methods are then compared with
    `compare` on the same resamples. Scores are macro averages over the strata.
    """

    def __init__(
        self,
        single_em: np.ndarray,
        single_cost: np.ndarray,
        strata: Sequence,
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        level: float = DEFAULT_LEVEL,
    ) -> None:
        self.single_em = np.asarray(single_em, dtype=float)
        self.single_cost = np.asarray(single_cost, dtype=float)
        if self.single_em.ndim != 2 or self.single_em.shape != self.single_cost.shape:
            raise ValueError(
                f"single_em / single_cost: need equal (questions, models) shapes, got "
                f"{self.single_em.shape} and {self.single_cost.shape}"
            )
        if self.single_em.shape[1] == 0:
            raise ValueError("single_em: no single models to compare with")
        self.codes, self.n_strata = _strata_codes(strata)
        if len(self.codes) != self.single_em.shape[0]:
            raise ValueError(
                f"strata: {len(self.codes)} labels for {self.single_em.shape[0]} questions"
            )
        percentile_interval(0.0, np.zeros(1), level)  # checks the level
        self.level = level
        self.counts = resample_counts(strata, n_resamples, seed)
        self._sizes = np.bincount(self.codes, minlength=self.n_strata).astype(float)
        # (resamples, strata) weights: a question's share of its stratum in that resample
        self._weights = self.counts / self._sizes[self.codes]
        self.em_point = self.macro_point(self.single_em)
        self.cost_point = self.macro_point(self.single_cost)
        self.em_boot = self.macro_boot(self.single_em)
        self.cost_boot = self.macro_boot(self.single_cost)

    # -- macro averages ------------------------------------------------------------------------
    def _stratum_mask(self) -> np.ndarray:
        return np.eye(self.n_strata)[self.codes]  # (questions, strata) one-hot

    def macro_point(self, values: np.ndarray) -> np.ndarray:
        """Mean over strata of each stratum's mean, on the full sample (per column)."""
        values = np.asarray(values, dtype=float)
        per_stratum = (self._stratum_mask().T @ values) / self._sizes.reshape(
            (-1,) + (1,) * (values.ndim - 1)
        )
        return per_stratum.mean(axis=0)

    def macro_boot(self, values: np.ndarray) -> np.ndarray:
        """The macro average in every resample: (resamples,) or (resamples, columns)."""
        values = np.asarray(values, dtype=float)
        # weights already divide by the stratum size; summing gives per-stratum means, summed
        return (self._weights @ values) / self.n_strata

    # -- the single-model frontier --------------------------------------------------------------
    def frontier_point(self, cost: float) -> float:
        hx, hy = hull_curve(list(zip(self.cost_point, self.em_point, strict=True)))
        return float(np.interp(cost, hx, hy))

    def frontier_boot(self, costs: np.ndarray) -> np.ndarray:
        """The single-model frontier of each resample, read at that resample's ``costs``."""
        return frontier_values(self.cost_boot, self.em_boot, costs)

    def best_single(self) -> int:
        """Index of the best single model on the full sample: highest EM, ties to the cheaper."""
        order = np.lexsort((self.cost_point, -self.em_point))
        return int(order[0])

    # -- comparisons ----------------------------------------------------------------------------
    def compare(self, em: np.ndarray, cost: np.ndarray, best: int | None = None) -> dict:
        """Intervals of a method's EM and cost, and of its differences to the single models.

        ``em`` / ``cost``: per question, or (seeds, questions) for several training seeds
        (averaged per question). ``best``: the single model to pair with (default
        `best_single`). Returns `Interval`s under ``em``, ``cost``, ``d_em_best``,
        ``d_cost_best`` and ``d_em_frontier``, in the input units.
        """
        em = self._per_question(em, "em")
        cost = self._per_question(cost, "cost")
        best = self.best_single() if best is None else int(best)
        em_p, cost_p = float(self.macro_point(em)), float(self.macro_point(cost))
        em_b, cost_b = self.macro_boot(em), self.macro_boot(cost)
        # paired: differences per question, then resampled (exact for a constant difference)
        d_em_b = self.macro_boot(em - self.single_em[:, best])
        d_cost_b = self.macro_boot(cost - self.single_cost[:, best])
        d_front_b = em_b - self.frontier_boot(cost_b)
        lv = self.level
        return {
            "em": percentile_interval(em_p, em_b, lv),
            "cost": percentile_interval(cost_p, cost_b, lv),
            "d_em_best": percentile_interval(em_p - self.em_point[best], d_em_b, lv),
            "d_cost_best": percentile_interval(cost_p - self.cost_point[best], d_cost_b, lv),
            "d_em_frontier": percentile_interval(em_p - self.frontier_point(cost_p), d_front_b, lv),
        }

    def _per_question(self, values: np.ndarray, name: str) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 2:  # one row per training seed: average per question
            arr = arr.mean(axis=0)
        if arr.shape != (len(self.codes),):
            raise ValueError(
                f"{name}: need one value per question ({len(self.codes)}), or one row of them "
                f"per seed; got shape {np.shape(values)}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: values must be finite")
        return arr
