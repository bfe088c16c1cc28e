"""Headroom: what a pool allows, measured from its single-model answers before any training.

Every pool model answered every evaluation question on its own (``results/eval/single/``).
From those rows alone this module scores strategies a router could learn, so a user sees how much
there is to gain over the best model, and at what price, before spending GPU hours:

- **single models** and their **frontier**: the best EM a random mix of pool models reaches at
  each cost (`routerr1.frontier.frontier_at`), and its AIQ; at half the best single model's
  cost, the EM that mixing single models (and the learned strategies) reaches there;
- **oracle**: per question the cheapest model that answers correctly (reads the gold answers: an
  upper bound, not a strategy);
- **cascades** A -> B: ask A; when a cheap observable signal says its answer is unusable (the
  call failed, the answer is empty, or it runs longer than t words: short-answer QA, a rambling
  reply is rarely right), also ask B and take B's answer. Every ordered pair, t chosen on the
  training folds;
- **choose among answers**: ask a subset of the models, take the answer most of them give (ties
  to the model with the best training EM). The subset is chosen on the training folds; "ask
  all" is listed too;
- **pre-routing** from the question text: per model, a ridge regression of its correctness on
  tf-idf word features (closed form; leave-one-out predictions on the training folds), then
  route to argmax(predicted EM - lambda * relative cost), lambda chosen on the training folds;
- **routing by benchmark**: each benchmark's questions go to the model with the most
  (training EM - lambda * relative cost) on that benchmark's training folds. It reads the
  benchmark label, so it is the ceiling of a router that only tells the question kinds apart
  (what a warm start that names the kind teaches), not of one that routes per question.

Learned choices are made on training folds and scored on the held-out fold (seeded k-fold,
stratified by benchmark), so every learned row is an out-of-sample number. A "best" strategy is
chosen on the training folds too (pair and threshold, subset). Each row gets EM, mean $ per
question and EM minus the single-model frontier at that cost, with a paired-bootstrap 95%
interval (`routerr1.bootstrap`); a claim counts only where the interval excludes zero.

Pages: the macro average over benchmarks (as in summary.md), then each benchmark. The text
features and ridge of the pre-router are in `routerr1.preroute`; headroom.md and headroom.csv are
written by `routerr1.report.headroom`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from routerr1.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, PairedBootstrap
from routerr1.frontier import aiq, frontier_at, hull_curve
from routerr1.methods import AVERAGE, SINGLE_PREFIX, check_single_rows
from routerr1.metrics import normalize_answer
from routerr1.preroute import ridge_predictions, route_by_score, tfidf

__all__ = [
    "CASCADE_WORD_LIMITS",
    "COLUMNS",
    "HeadroomResult",
    "SingleTable",
    "cascade",
    "fold_ids",
    "headroom",
    "majority_vote",
    "oracle",
    "single_table",
]

# Cascade signal: escalate when A's answer has more words than this (None: only when empty or
# failed). Short-answer QA; a reply of 10+ words is usually a non-answer or a ramble.
CASCADE_WORD_LIMITS: tuple[int | None, ...] = (1, 2, 3, 5, 8, 13, None)
# Pre-routing trade-off: route to argmax(predicted EM - lambda * cost / most expensive cost).
PREROUTE_LAMBDAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
MAJORITY_MAX_MODELS = 8  # above this, only prefixes of the training-EM ranking are tried
COLUMNS = [
    "strategy",
    "kind",
    "learned",
    "benchmark",
    "n",
    "em",
    "cost",
    "frontier_em",
    "d_frontier",
    "d_frontier_lo",
    "d_frontier_hi",
    "d_best",
    "d_best_lo",
    "d_best_hi",
    "detail",
]
_NEEDED = ("method", "benchmark", "qid", "question", "prediction", "em", "cost", "pool_errors")


# --------------------------------------------------------------------------- the answer table


@dataclass(frozen=True)
class SingleTable:
    """Every pool model's direct answer to every question, as (questions, models) arrays.

    Models are ordered by mean cost (cheapest first); ``answer`` holds normalized predictions
    ("" for none), ``words`` the raw prediction's word count, ``failed`` the failed calls.
    """

    models: tuple[str, ...]
    benchmark: np.ndarray
    qid: np.ndarray
    question: tuple[str, ...]
    em: np.ndarray
    cost: np.ndarray
    failed: np.ndarray
    answer: np.ndarray
    words: np.ndarray

    @property
    def answer_id(self) -> np.ndarray:
        """Integer code per normalized answer (equal answers, equal codes); -1 when empty."""
        codes, uniques = pd.factorize(self.answer.ravel())
        codes = codes.reshape(self.answer.shape)
        empty = np.flatnonzero(uniques == "")
        return np.where(np.isin(codes, empty), -1, codes)

    @property
    def n_questions(self) -> int:
        return len(self.qid)

    @property
    def benchmarks(self) -> list[str]:
        return sorted(set(self.benchmark.tolist()))


def single_table(rows: pd.DataFrame) -> SingleTable:
    """Pivot single-model evaluation rows (``results/eval/single/*.parquet``) into a table.

    Raises ValueError naming the column or model when a column is missing, a method is not
    ``single:<name>``, a question repeats, or the models did not answer the same questions.
    """
    check_single_rows(rows, _NEEDED, "single rows")
    methods = rows["method"].astype(str)
    df = rows.assign(
        model=methods.str.removeprefix(SINGLE_PREFIX),
        benchmark=rows["benchmark"].astype(str),
        qid=rows["qid"].astype(str),
    )
    dup = df.duplicated(["model", "benchmark", "qid"])
    if dup.any():
        r = df[dup].iloc[0]
        raise ValueError(
            f"single rows: model {r['model']!r} answered ({r['benchmark']!r}, {r['qid']!r}) twice"
        )
    for col in ("em", "cost"):
        vals = pd.to_numeric(df[col], errors="coerce")
        if vals.isna().any() or not np.isfinite(vals).all():
            raise ValueError(f"single rows: column {col!r} has missing or non-finite values")
    keys = df.drop_duplicates(["benchmark", "qid"])[["benchmark", "qid", "question"]]
    keys = keys.sort_values(["benchmark", "qid"], kind="stable").reset_index(drop=True)
    per_model = df.groupby("model").size()
    short = per_model[per_model != len(keys)]
    if not short.empty:
        raise ValueError(
            f"single rows: model {short.index[0]!r} answered {int(short.iloc[0])} of the "
            f"{len(keys)} questions; every pool model must answer the same questions (stale file?)"
        )
    mean_cost = df.groupby("model")["cost"].mean()
    models = tuple(sorted(mean_cost.index, key=lambda m: (float(mean_cost[m]), m)))
    wide = df.set_index(["benchmark", "qid", "model"])
    index = pd.MultiIndex.from_frame(keys[["benchmark", "qid"]])

    def grid(col: str) -> np.ndarray:
        return wide[col].unstack("model").reindex(index=index, columns=list(models)).to_numpy()

    preds = grid("prediction")
    text = np.vectorize(lambda p: p if isinstance(p, str) else "", otypes=[object])(preds)
    return SingleTable(
        models=models,
        benchmark=keys["benchmark"].to_numpy(dtype=object),
        qid=keys["qid"].to_numpy(dtype=object),
        question=tuple(str(q) for q in keys["question"]),
        em=grid("em").astype(float),
        cost=grid("cost").astype(float),
        failed=grid("pool_errors").astype(float) > 0,
        answer=np.vectorize(normalize_answer, otypes=[object])(text),
        words=np.vectorize(lambda t: len(t.split()), otypes=[int])(text),
    )


def fold_ids(benchmark: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Seeded k-fold assignment, stratified: each benchmark is spread evenly over the folds."""
    labels = np.asarray(benchmark, dtype=object).astype(str)
    if k < 2:
        raise ValueError(f"folds: need at least 2, got {k}")
    if len(labels) < k:
        raise ValueError(f"folds: {k} folds for only {len(labels)} questions")
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=int)
    start = 0  # continue the fold cycle across benchmarks so small ones do not all land in 0
    for b in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == b)
        out[idx[rng.permutation(len(idx))]] = (start + np.arange(len(idx))) % k
        start += len(idx)
    return out


# --------------------------------------------------------------------------- the strategies


def oracle(t: SingleTable) -> tuple[np.ndarray, np.ndarray]:
    """Per question the cheapest correct model; when none is, the cheapest call that did not
    fail (as `routerr1.baselines.oracle_rows`). Returns (em, cost) per question."""
    # rank: correct first, then calls that did not fail, then cost; ties to the cheaper model
    # (lexsort is stable and models are ordered cheapest first)
    rank = np.where(t.em >= 1.0, 0.0, np.where(t.failed, 2.0, 1.0))
    pick = np.lexsort((t.cost, rank), axis=-1)[:, 0]
    rows = np.arange(t.n_questions)
    return t.em[rows, pick], t.cost[rows, pick]


def escalates(t: SingleTable, first: int, word_limit: int | None) -> np.ndarray:
    """The cascade signal on ``first``'s answers: failed, empty, or longer than the limit."""
    unusable = t.failed[:, first] | (t.words[:, first] == 0)
    if word_limit is None:
        return unusable
    return unusable | (t.words[:, first] > word_limit)


def cascade(
    t: SingleTable, first: int, second: int, word_limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Ask ``first``; on the signal (`escalates`) also ask ``second`` and use its answer."""
    esc = escalates(t, first, word_limit)
    em = np.where(esc, t.em[:, second], t.em[:, first])
    cost = t.cost[:, first] + np.where(esc, t.cost[:, second], 0.0)
    return em, cost


def majority_vote(
    t: SingleTable,
    subset: Sequence[int],
    priority: Sequence[float],
    answer_id: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ask every model in ``subset``; answer with the (normalized) answer most of them give.

    Empty answers do not vote. Ties go to the answer of the model with the highest
    ``priority`` (e.g. its training EM). Cost: all calls in the subset. ``answer_id``:
    ``t.answer_id``, passed in when voting many times.
    """
    s = np.asarray(subset, dtype=int)
    ans = (t.answer_id if answer_id is None else answer_id)[:, s]
    nonempty = ans >= 0
    # support[q, i]: how many models of the subset gave model i's answer (0 if i's is empty)
    support = np.zeros(ans.shape, dtype=float)
    for j in range(len(s)):
        support += (ans == ans[:, [j]]) & nonempty[:, [j]]
    support *= nonempty
    prio = np.asarray(priority, dtype=float)[s]
    # ranks in [0, 1): a tie in support is broken by priority, never the other way round
    rank = np.argsort(np.argsort(prio, kind="stable"), kind="stable") / len(s)
    pick = s[np.argmax(support + rank[None, :], axis=1)]
    rows = np.arange(t.n_questions)
    return t.em[rows, pick], t.cost[:, s].sum(axis=1)


# --------------------------------------------------------------------------- cross-validation


class _Scorer:
    """Scores a strategy on a subset of questions as the report does: macro EM minus the
    single-model frontier at its macro cost (the objective every learned choice maximizes)."""

    def __init__(self, t: SingleTable, idx: np.ndarray) -> None:
        self.idx = idx
        _, codes = np.unique(t.benchmark[idx].astype(str), return_inverse=True)
        n = np.bincount(codes).astype(float)
        # (strata, questions in idx) averaging matrix: one row per benchmark, macro by mean
        self.avg = np.eye(len(n))[codes].T / n[:, None] / len(n)
        em, cost = self.avg @ t.em[idx], self.avg @ t.cost[idx]
        self.em_single = em.sum(axis=0)
        self.cost_single = cost.sum(axis=0)
        self.hull = hull_curve(np.column_stack([self.cost_single, self.em_single]))

    def gain(self, em: np.ndarray, cost: np.ndarray) -> float:
        e = float((self.avg @ em[self.idx]).sum())
        c = float((self.avg @ cost[self.idx]).sum())
        return e - float(np.interp(c, *self.hull))

    def rank(self, em: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
        """Sort key of a candidate: the gain, then (on a tie) the lower cost."""
        c = float((self.avg @ cost[self.idx]).sum())
        return round(self.gain(em, cost), 12), -c


def _cross_validate(
    t: SingleTable, folds: np.ndarray, fit: Callable[[np.ndarray, np.ndarray], tuple]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Held-out (em, cost) per question: ``fit(train_idx, test_idx)`` returns the test
    questions' (em, cost) and a note on what it chose."""
    em, cost = np.zeros(t.n_questions), np.zeros(t.n_questions)
    notes = []
    for f in sorted(set(folds.tolist())):
        test = np.flatnonzero(folds == f)
        train = np.flatnonzero(folds != f)
        e, c, note = fit(train, test)
        em[test], cost[test] = e, c
        notes.append(note)
    return em, cost, notes


def _summarize_notes(notes: list[str]) -> str:
    counts: dict[str, int] = {}
    for n in notes:
        counts[n] = counts.get(n, 0) + 1
    return "; ".join(f"{n} ({k}/{len(notes)} folds)" for n, k in counts.items())


def _limit_text(limit: int | None) -> str:
    return "empty/failed" if limit is None else f"empty/failed/>{limit} words"


def _pair_fit(t: SingleTable, first: int, second: int):
    outcomes = {lim: cascade(t, first, second, lim) for lim in CASCADE_WORD_LIMITS}

    def fit(train: np.ndarray, test: np.ndarray):
        scorer = _Scorer(t, train)
        lim = max(CASCADE_WORD_LIMITS, key=lambda w: scorer.rank(*outcomes[w]))
        em, cost = outcomes[lim]
        return em[test], cost[test], _limit_text(lim)

    return fit


def _best_cascade_fit(t: SingleTable):
    pairs = [(a, b) for a in range(len(t.models)) for b in range(len(t.models)) if a != b]
    outcomes = {(a, b, w): cascade(t, a, b, w) for a, b in pairs for w in CASCADE_WORD_LIMITS}

    def fit(train: np.ndarray, test: np.ndarray):
        scorer = _Scorer(t, train)
        a, b, w = max(outcomes, key=lambda key: scorer.rank(*outcomes[key]))
        em, cost = outcomes[(a, b, w)]
        return em[test], cost[test], f"{t.models[a]} -> {t.models[b]} on {_limit_text(w)}"

    return fit


def _subsets(t: SingleTable, priority: np.ndarray) -> list[tuple[int, ...]]:
    m = len(t.models)
    if m <= MAJORITY_MAX_MODELS:
        return [s for k in range(2, m + 1) for s in itertools.combinations(range(m), k)]
    ranked = [int(i) for i in np.argsort(-priority, kind="stable")]
    return [tuple(sorted(ranked[:k])) for k in range(2, m + 1)]


def _majority_fit(t: SingleTable, fixed: tuple[int, ...] | None = None):
    ids = t.answer_id

    def fit(train: np.ndarray, test: np.ndarray):
        # tie-break priority: EM on the training folds (never the held-out answers)
        priority = t.em[train].mean(axis=0)
        scorer = _Scorer(t, train)
        candidates = [fixed] if fixed is not None else _subsets(t, priority)
        outcomes = {s: majority_vote(t, s, priority, ids) for s in candidates}
        best = max(candidates, key=lambda s: scorer.rank(*outcomes[s]))
        em, cost = outcomes[best]
        return em[test], cost[test], "vote of " + ", ".join(t.models[i] for i in best)

    return fit


def _relative_cost(t: SingleTable, train: np.ndarray) -> np.ndarray:
    """Each model's mean cost on ``train`` over the dearest model's (all 0 when nothing costs)."""
    mean_cost = t.cost[train].mean(axis=0)
    return mean_cost / mean_cost.max() if mean_cost.max() > 0 else np.zeros_like(mean_cost)


def _by_benchmark_fit(t: SingleTable):
    kinds = t.benchmark.astype(str)
    rows = np.arange(t.n_questions)

    def fit(train: np.ndarray, test: np.ndarray):
        scorer = _Scorer(t, train)
        rel = _relative_cost(t, train)

        def routes(lam: float) -> dict[str, int]:
            out = {}
            for kind in sorted(set(kinds.tolist())):
                seen = train[kinds[train] == kind]
                score = t.em[seen if len(seen) else train].mean(axis=0) - lam * rel
                out[kind] = int(np.argmax(score))  # models are cheapest first: ties go cheaper
            return out

        def outcome(route: dict[str, int]):
            pick = np.array([route[k] for k in kinds], dtype=int)
            return t.em[rows, pick], t.cost[rows, pick]

        lam = max(PREROUTE_LAMBDAS, key=lambda v: scorer.rank(*outcome(routes(v))))
        route = routes(lam)
        em, cost = outcome(route)
        chosen = ", ".join(f"{k} -> {t.models[m]}" for k, m in route.items())
        return em[test], cost[test], f"{chosen} (lambda {lam:g})"

    return fit


def _preroute_fit(t: SingleTable):
    def fit(train: np.ndarray, test: np.ndarray):
        x_tr, x_te = tfidf([t.question[i] for i in train], [t.question[i] for i in test])
        loo, pred, ridge = ridge_predictions(x_tr, t.em[train], x_te)
        rel = _relative_cost(t, train)
        # choose lambda on the training folds, from leave-one-out predictions (out of sample)
        loo_full = np.zeros_like(t.em)
        loo_full[train] = loo
        scorer = _Scorer(t, train)
        rows = np.arange(t.n_questions)

        def outcome(scores: np.ndarray, lam: float, idx: np.ndarray):
            pick = np.zeros(t.n_questions, dtype=int)
            pick[idx] = route_by_score(scores[idx], rel, lam)
            return t.em[rows, pick], t.cost[rows, pick]

        lam = max(PREROUTE_LAMBDAS, key=lambda v: scorer.rank(*outcome(loo_full, v, train)))
        pred_full = np.zeros_like(t.em)
        pred_full[test] = pred
        em, cost = outcome(pred_full, lam, test)
        return em[test], cost[test], f"lambda {lam:g}, ridge {ridge:g}"

    return fit


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class HeadroomResult:
    """Strategy rows (`COLUMNS`, one per strategy and page) and the frontier AIQ per page."""

    rows: pd.DataFrame
    aiq: pd.DataFrame
    folds: int
    seed: int
    n_resamples: int
    models: tuple[str, ...]
    level: float = DEFAULT_LEVEL


def _strategies(t: SingleTable, folds: np.ndarray) -> list[tuple[str, str, bool, tuple, str]]:
    """(name, kind, learned, (em, cost) per question held out, detail) for every strategy."""
    out = []
    for i, m in enumerate(t.models):
        out.append((f"single:{m}", "single", False, (t.em[:, i], t.cost[:, i]), ""))
    o_em, o_cost = oracle(t)
    out.append(("oracle", "oracle", False, (o_em, o_cost), "reads the gold answers"))
    if len(t.models) < 2:  # nothing to cascade, vote or route between
        return out
    em, cost, notes = _cross_validate(t, folds, _best_cascade_fit(t))
    out.append(("best cascade", "cascade", True, (em, cost), _summarize_notes(notes)))
    em, cost, notes = _cross_validate(t, folds, _majority_fit(t))
    out.append(("best vote", "vote", True, (em, cost), _summarize_notes(notes)))
    everyone = tuple(range(len(t.models)))
    em, cost, _ = _cross_validate(t, folds, _majority_fit(t, everyone))
    out.append(("vote of all", "vote", True, (em, cost), "ties to the best training EM"))
    em, cost, notes = _cross_validate(t, folds, _preroute_fit(t))
    out.append(("pre-route (text)", "preroute", True, (em, cost), _summarize_notes(notes)))
    if len(t.benchmarks) > 1:  # with one benchmark it is the best single model
        em, cost, notes = _cross_validate(t, folds, _by_benchmark_fit(t))
        out.append(("by benchmark", "by-benchmark", True, (em, cost), _summarize_notes(notes)))
    for a in range(len(t.models)):
        for b in range(len(t.models)):
            if a != b:
                em, cost, notes = _cross_validate(t, folds, _pair_fit(t, a, b))
                name = f"cascade:{t.models[a]}->{t.models[b]}"
                out.append((name, "cascade-pair", True, (em, cost), _summarize_notes(notes)))
    return out


def headroom(
    single_rows: pd.DataFrame,
    folds: int = 5,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> HeadroomResult:
    """Score every strategy (held out where learned) on every page; see the module docstring.

    EM and the frontier are in %, cost in mean dollars per question.
    """
    t = single_table(single_rows)
    if t.n_questions < 2:
        raise ValueError(
            f"single rows: {t.n_questions} question(s); the headroom's cross-validation needs 2+"
        )
    folds = min(folds, t.n_questions)  # a tiny test config has fewer questions than folds
    fold = fold_ids(t.benchmark, folds, seed)
    strategies = _strategies(t, fold)
    pages = [AVERAGE, *t.benchmarks]  # the same pages as summary.md and pareto.pdf
    rows, aiq_rows = [], []
    for page in pages:
        idx = np.arange(t.n_questions) if page == AVERAGE else np.flatnonzero(t.benchmark == page)
        boot = PairedBootstrap(
            t.em[idx], t.cost[idx], t.benchmark[idx], n_resamples, seed=seed, level=level
        )
        best = boot.best_single()
        singles = list(zip(boot.cost_point, 100 * boot.em_point, strict=True))
        lo, hi = float(boot.cost_point.min()), float(boot.cost_point.max())
        half = 0.5 * float(boot.cost_point[best])
        deployable = []
        for name, kind, learned, (em, cost), detail in strategies:
            cmp = boot.compare(em[idx], cost[idx], best=best)
            e, c, d = cmp["em"].estimate, cmp["cost"].estimate, cmp["d_em_frontier"]
            rows.append(
                {
                    "strategy": name,
                    "kind": kind,
                    "learned": learned,
                    "benchmark": page,
                    "n": len(idx),
                    "em": 100 * e,
                    "cost": c,
                    "frontier_em": 100 * (e - d.estimate),
                    "d_frontier": 100 * d.estimate,
                    "d_frontier_lo": 100 * d.lo,
                    "d_frontier_hi": 100 * d.hi,
                    "d_best": 100 * cmp["d_em_best"].estimate,
                    "d_best_lo": 100 * cmp["d_em_best"].lo,
                    "d_best_hi": 100 * cmp["d_em_best"].hi,
                    "detail": detail,
                }
            )
            if kind not in ("single", "oracle"):
                deployable.append((c, 100 * e))
        aiq_rows.append(
            {
                "benchmark": page,
                "best_single": t.models[best],
                "cost_lo": lo,
                "cost_hi": hi,
                "aiq_single": aiq(singles, (lo, hi)),
                "aiq_with_strategies": aiq(singles + deployable, (lo, hi)),
                # the cost figure's budget: can anything learnable match the best single there?
                "best_single_em": 100 * float(boot.em_point[best]),
                "half_cost": half,
                "em_at_half_cost": float(frontier_at(singles, half)),
                "em_at_half_cost_with_strategies": float(frontier_at(singles + deployable, half)),
            }
        )
    return HeadroomResult(
        rows=pd.DataFrame(rows, columns=COLUMNS),
        aiq=pd.DataFrame(aiq_rows),
        folds=folds,
        seed=seed,
        n_resamples=n_resamples,
        models=t.models,
        level=level,
    )
