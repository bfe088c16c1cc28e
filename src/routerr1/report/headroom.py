"""headroom.md and headroom.csv: what the pool allows, from `routerr1.headroom`'s strategies.

`write_headroom` reads the single-model parquets, scores the strategies
(`routerr1.headroom.headroom`) and writes both files atomically; `render_headroom` is the
markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from routerr1.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from routerr1.headroom import HeadroomResult, headroom
from routerr1.io import atomic_path
from routerr1.methods import AVERAGE

__all__ = ["MAIN_STRATEGIES", "fmt_cost", "render_headroom", "write_headroom"]

# The strategies each page of headroom.md shows (and summary.md places beside the routers).
MAIN_STRATEGIES = (
    "oracle",
    "best cascade",
    "best vote",
    "vote of all",
    "pre-route (text)",
    "by benchmark",
)


def fmt_cost(c: float) -> str:
    return "$0" if c == 0 else f"${c:.2e}"


def _interval(d: float, lo: float, hi: float) -> str:
    # marked as printed: a bound of +1e-15 (the best single against its own hull) is no claim
    lo, hi = round(lo, 1), round(hi, 1)
    mark = " ▲" if lo > 0 else " ▼" if hi < 0 else ""
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]{mark}"


def _table(rows: pd.DataFrame, names_in_order: list[str], level: float) -> list[str]:
    ci = f"{100 * level:g}% CI"
    head = (
        f"| strategy | learned | EM % | $ / question | frontier EM % | Δ frontier [{ci}] | "
        f"Δ best single [{ci}] | "
    )
    out = [head + "chosen on training folds |", "|---|---|---|---|---|---|---|---|"]
    by = {r.strategy: r for r in rows.itertuples(index=False)}
    for name in names_in_order:
        if name not in by:
            continue
        r = by[name]
        detail = str(r.detail).replace("|", r"\|")
        out.append(
            f"| {name} | {'yes' if r.learned else 'no'} | {r.em:.1f} | {fmt_cost(r.cost)} | "
            f"{r.frontier_em:.1f} | {_interval(r.d_frontier, r.d_frontier_lo, r.d_frontier_hi)} "
            f"| {_interval(r.d_best, r.d_best_lo, r.d_best_hi)} | {detail} |"
        )
    return out


def render_headroom(result: HeadroomResult, top_pairs: int = 5) -> str:
    """Markdown: per page the single models, the oracle, the best learned strategies, the
    frontier AIQ, and (average page) the best cascade pairs."""
    rows = result.rows
    out = [
        "# Headroom of the pool",
        "",
        "What the pool allows before any router is trained, from each pool model's direct "
        f"answers to the evaluation questions ({', '.join(result.models)}; cheapest first).",
        "",
        f"- Learned strategies are chosen on training folds and scored on the held-out fold "
        f"({result.folds}-fold, stratified by benchmark, seed {result.seed}).",
        "- **frontier EM**: the best EM a random mix of single models reaches at the strategy's "
        "cost (their upper cost-EM hull, with free abstention at $0). **Δ frontier**: EM minus "
        f"that, with a paired-bootstrap {100 * result.level:g}% interval ({result.n_resamples} "
        "resamples of the "
        "questions, within each benchmark). ▲ / ▼: the interval excludes zero (a claim); "
        "otherwise the strategy is not distinguishable from mixing single models.",
        "- Cascade A -> B: ask A, and B only when A's answer is unusable (failed, empty, or "
        "longer than a word limit chosen in training). Vote: ask a subset, take the most common "
        "answer (ties to the best training EM). Pre-route: ridge regression of each model's "
        "correctness on tf-idf words of the question, route to max(predicted EM - λ·cost). By "
        "benchmark: each benchmark to its best model on the training folds (it reads the "
        "benchmark label: the ceiling of a router that tells the question kinds apart). "
        "**Δ best single**: EM minus the page's best single model, paired.",
        "- The oracle reads the gold answers: an upper bound, not a strategy.",
        "",
    ]
    pages = list(dict.fromkeys(rows["benchmark"]))
    aiq_by = result.aiq.set_index("benchmark")
    for page in pages:
        part = rows[rows["benchmark"] == page]
        title = "Average (macro over benchmarks)" if page == AVERAGE else page
        out += [f"## {title}", ""]
        singles = part[part["kind"] == "single"].sort_values("cost")["strategy"].tolist()
        out += _table(part, [*singles, *MAIN_STRATEGIES], result.level) + [""]
        a = aiq_by.loc[page]
        out += [
            f"Best single model: {a['best_single']}. Frontier AIQ (mean frontier EM over "
            f"{fmt_cost(a['cost_lo'])}..{fmt_cost(a['cost_hi'])}): {a['aiq_single']:.1f}; with "
            f"the learned strategies' points added: {a['aiq_with_strategies']:.1f}. At half "
            f"the best single's cost ({fmt_cost(a['half_cost'])}) mixing single models reaches "
            f"{a['em_at_half_cost']:.1f} EM, with the learned strategies "
            f"{a['em_at_half_cost_with_strategies']:.1f}, against its {a['best_single_em']:.1f}.",
            "",
        ]
        if page == pages[0]:
            pairs = part[part["kind"] == "cascade-pair"].sort_values("d_frontier", ascending=False)
            if not pairs.empty:
                out += [
                    f"Top {min(top_pairs, len(pairs))} of {len(pairs)} cascade pairs (each "
                    "pair's word limit chosen on training folds; ranking the pairs by held-out "
                    "Δ is exploratory, 'best cascade' above is the honest pick):",
                    "",
                ]
                top = pairs["strategy"].head(top_pairs).tolist()
                out += _table(part, top, result.level) + [""]
    return "\n".join(out)


def write_headroom(
    single_paths: Sequence[str | Path],
    md_path: str | Path,
    csv_path: str | Path,
    folds: int = 5,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
) -> HeadroomResult:
    """Read the single-model parquets, compute the headroom, write markdown and csv atomically."""
    if not single_paths:
        raise ValueError("single_paths: no single-model result files (eval.baselines: single)")
    rows = pd.concat([pd.read_parquet(p) for p in single_paths], ignore_index=True)
    result = headroom(rows, folds=folds, seed=seed, n_resamples=n_resamples, level=level)
    with atomic_path(csv_path) as tmp:
        result.rows.to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text(render_headroom(result) + "\n", encoding="utf-8")
    return result
