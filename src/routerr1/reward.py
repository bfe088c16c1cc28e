"""Router-R1 reward: format, outcome (EM/F1) and cost, and their combination.

Differences from Router-R1's released code (all listed in docs/router-r1.md):
- cost counts input and output tokens (`call_cost`); theirs counted output tokens only
  (`train.cost_tokens: output` restores that);
- training owns its `CostNormalizer` (theirs shared one buffer with validation);
- when the window's percentiles tie, the cheapest trajectories still get 1.0 (theirs gave every
  trajectory 0.5: `train.cost_tie_value: 0.5`);
- paying the cost term only on correct answers (Router-R1's code) is a switch,
  `cost_on_correct_only`, rather than hard-wired.

The total reward lies in [-1, 1]: -1 for a malformed trajectory, otherwise a convex combination
of an outcome in [0, 1] and a normalized cost in [0, 1].
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from routerr1.metrics import cover_exact_match, exact_match, f1_score
from routerr1.parse import ModelNameResolver, check_format, extract_answer

__all__ = [
    "call_cost",
    "CostNormalizer",
    "combine_reward",
    "RewardBreakdown",
    "score_trajectory",
    "OUTCOMES",
]

OUTCOMES: tuple[str, ...] = ("em", "f1", "cover_em")
_TOKENS_PER_PRICE_UNIT = 1_000_000


def _check_non_negative(value: float, field: str) -> None:
    # `not >=` also rejects NaN; infinity would turn the normalizer's arithmetic into NaN.
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{field} must be a finite number >= 0, got {value!r}")


def _check_unit(value: float, field: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{field} must be in [0, 1], got {value!r}")


def call_cost(in_tokens: int, out_tokens: int, price_in: float, price_out: float) -> float:
    """Dollar cost of one pool call; prices are dollars per 1M tokens."""
    _check_non_negative(in_tokens, "in_tokens")
    _check_non_negative(out_tokens, "out_tokens")
    _check_non_negative(price_in, "price_in")
    _check_non_negative(price_out, "price_out")
    return (in_tokens * price_in + out_tokens * price_out) / _TOKENS_PER_PRICE_UNIT


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear-interpolation percentile (numpy's default method) of a sorted, non-empty list."""
    pos = (len(sorted_values) - 1) * pct / 100.0
    lo_i = math.floor(pos)
    hi_i = min(lo_i + 1, len(sorted_values) - 1)
    frac = pos - lo_i
    return sorted_values[lo_i] + (sorted_values[hi_i] - sorted_values[lo_i]) * frac


class CostNormalizer:
    """Maps a raw cost to [0, 1], cheap -> 1, relative to recently seen costs.

    Keeps the last `window` values of sqrt(cost) (sqrt compresses the heavy right tail of
    costs). `normalize` returns 1 - clip((sqrt(cost) - lo) / (hi - lo), 0, 1), where lo and hi
    are the `low_pct` and `high_pct` percentiles of the window.

    Degenerate cases, chosen so that no cost is ever rewarded as cheap without evidence:
    - empty window: 1.0 for a zero cost (nothing can be cheaper), else 0.5 (no scale: neutral);
    - hi == lo (all recent costs alike): 1.0 if sqrt(cost) <= lo (as cheap as anything seen),
      else 0.5; with `tie_value` set, that value for every cost instead (Router-R1 gave 0.5).
    Use one instance for training and a separate one for evaluation.
    """

    def __init__(
        self,
        window: int = 1024,
        low_pct: float = 5.0,
        high_pct: float = 95.0,
        tie_value: float | None = None,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        if not 0.0 <= low_pct < high_pct <= 100.0:
            raise ValueError(
                f"low_pct/high_pct must satisfy 0 <= low_pct < high_pct <= 100, "
                f"got low_pct={low_pct!r}, high_pct={high_pct!r}"
            )
        if tie_value is not None:
            _check_unit(tie_value, "tie_value")
        self.tie_value = tie_value
        self.window = window
        self.low_pct = float(low_pct)
        self.high_pct = float(high_pct)
        self._values: deque[float] = deque(maxlen=window)
        self._bounds: tuple[float, float] | None = None  # cached (lo, hi); None when stale

    def __len__(self) -> int:
        return len(self._values)

    @property
    def values(self) -> tuple[float, ...]:
        """The sqrt(cost) values in the window, oldest first."""
        return tuple(self._values)

    def observe(self, costs: Iterable[float]) -> None:
        """Add raw costs to the window (the oldest drop out once it is full)."""
        # Validate the whole batch first so a bad one leaves the window untouched.
        roots = []
        for i, cost in enumerate(costs):
            _check_non_negative(cost, f"costs[{i}]")
            roots.append(math.sqrt(cost))
        self._values.extend(roots)
        self._bounds = None

    def bounds(self) -> tuple[float, float] | None:
        """(lo, hi) percentiles of the window in sqrt space, or None when it is empty."""
        if not self._values:
            return None
        if self._bounds is None:
            ordered = sorted(self._values)
            self._bounds = (
                _percentile(ordered, self.low_pct),
                _percentile(ordered, self.high_pct),
            )
        return self._bounds

    def normalize(self, cost: float) -> float:
        """Normalized cost in [0, 1]; 1 is cheapest. Does not change the window."""
        _check_non_negative(cost, "cost")
        root = math.sqrt(cost)
        bounds = self.bounds()
        if bounds is None:
            return 1.0 if cost == 0 else 0.5
        lo, hi = bounds
        if hi <= lo:
            if self.tie_value is not None:
                return self.tie_value
            return 1.0 if root <= lo else 0.5
        scaled = (root - lo) / (hi - lo)
        return 1.0 - min(max(scaled, 0.0), 1.0)


def combine_reward(
    format_ok: bool,
    outcome: float,
    cost_norm: float,
    alpha: float,
    cost_on_correct_only: bool,
) -> float:
    """-1 for bad format, else (1 - alpha) * outcome + alpha * cost_term, in [-1, 1].

    cost_term is cost_norm, or, with `cost_on_correct_only` (Router-R1's code), cost_norm only
    when outcome > 0 and 0 otherwise, so a wrong answer cannot be bought with a cheap route.
    """
    _check_unit(alpha, "alpha")
    _check_unit(outcome, "outcome")
    _check_unit(cost_norm, "cost_norm")
    if not format_ok:
        return -1.0
    cost_term = cost_norm if (outcome > 0 or not cost_on_correct_only) else 0.0
    return (1.0 - alpha) * outcome + alpha * cost_term


@dataclass
class RewardBreakdown:
    """One sample's reward and its parts.

    outcome_em / outcome_f1 score the last answer even when the format fails (diagnostics);
    only `total` carries the -1 format penalty. total is in [-1, 1].
    """

    total: float
    format_ok: bool
    format_reason: str | None
    outcome_em: float
    outcome_f1: float
    cost: float
    cost_norm: float
    format_kind: str | None = None  # FormatResult.kind: the failed rule, for per-step counts


def score_trajectory(
    trajectory: str,
    golds: Sequence[str],
    cost: float,
    alpha: float,
    resolver: ModelNameResolver,
    normalizer: CostNormalizer,
    cost_on_correct_only: bool,
    outcome: str = "em",
    injected_information: int | None = None,
    format_rules: str = "routerr1",
) -> RewardBreakdown:
    """Reward for one trajectory. `normalizer` must already have observed the batch's costs.

    `outcome` picks the outcome reward: "em", "f1" or "cover_em". `injected_information` is the
    number of `<information>` blocks the rollout injected; a different count in the trajectory
    means the policy wrote its own and the format fails. `format_rules` picks check_format's
    rule set ("routerr1" or "router-r1"). Never raises on trajectory text.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    _check_unit(alpha, "alpha")
    _check_non_negative(cost, "cost")
    fmt = check_format(
        trajectory, resolver, injected_information=injected_information, rules=format_rules
    )
    answer = extract_answer(trajectory) if isinstance(trajectory, str) else None
    em = exact_match(answer, golds)
    f1 = f1_score(answer, golds)
    if outcome == "em":
        outcome_value = em
    elif outcome == "f1":
        outcome_value = f1
    else:
        outcome_value = cover_exact_match(answer, golds)
    cost_norm = normalizer.normalize(cost)
    total = combine_reward(fmt.ok, outcome_value, cost_norm, alpha, cost_on_correct_only)
    return RewardBreakdown(
        total=total,
        format_ok=fmt.ok,
        format_reason=fmt.reason,
        format_kind=fmt.kind,
        outcome_em=em,
        outcome_f1=f1,
        cost=cost,
        cost_norm=cost_norm,
    )
