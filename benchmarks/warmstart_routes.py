"""Which route does the warm start's benchmark rule give each kind, per alpha and training size?

    python benchmarks/warmstart_routes.py --results results --alphas 0 0.3 0.45 0.5 \\
        --per-benchmark 48 64 96

Reads a run's ``warmstart/pool_answers.parquet`` (every pool model's answer to every training
question) and ``data/train.parquet``, and applies ``warm_start.routing: benchmark``
(`routerr1.warmstart.benchmark_routing`, the cost term paid on every answer unless
``--cost-on-correct-only``) to the first N training questions of each benchmark. The data stage
draws each benchmark's training questions in one seeded order and keeps the first
``n_train / benchmarks``, so these are the samples a smaller ``data.n_train`` would draw (for
benchmarks whose questions do not overlap). Prints, per N, alpha and benchmark, the rule's
model and its margin of mean reward over the runner-up: how far the routes are from changing.
Nothing is generated; the models are not loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from routerr1.warmstart import benchmark_routing


def routes(
    answers: pd.DataFrame, alpha: float, cost_on_correct_only: bool
) -> list[dict[str, object]]:
    """Per benchmark: the rule's model at ``alpha`` and its margin over the next model."""
    _, scores = benchmark_routing(answers, alpha, cost_on_correct_only)
    scored = answers.loc[scores.index]
    means = scores.groupby([scored["benchmark"], scored["model"]]).first().unstack()
    rows = []
    for bench, by_model in means.iterrows():
        ranked = by_model.dropna().sort_values(ascending=False)
        margin = float(ranked.iloc[0] - ranked.iloc[1]) if len(ranked) > 1 else float("nan")
        rows.append({"benchmark": bench, "model": ranked.index[0], "margin": margin})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.45])
    parser.add_argument(
        "--per-benchmark",
        type=int,
        nargs="+",
        default=[],
        help="first N training questions of each benchmark (default: all)",
    )
    parser.add_argument("--cost-on-correct-only", action="store_true")
    args = parser.parse_args(argv)

    answers = pd.read_parquet(args.results / "warmstart" / "pool_answers.parquet")
    train = pd.read_parquet(
        args.results / "data" / "train.parquet", columns=["question", "benchmark"]
    )
    if "benchmark" not in answers.columns:
        answers = answers.merge(train.drop_duplicates("question"), on="question", how="left")
    sizes = args.per_benchmark or [int(train["benchmark"].value_counts().max())]
    rows = []
    for size in sizes:
        kept = set(train.groupby("benchmark", sort=False).head(size)["question"])
        subset = answers[answers["question"].isin(kept)]
        for alpha in args.alphas:
            for route in routes(subset, alpha, args.cost_on_correct_only):
                rows.append({"per_benchmark": size, "alpha": alpha, **route})
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
