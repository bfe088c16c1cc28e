"""Evaluate any policy folder as a router, greedily, on a run's evaluation questions.

    python benchmarks/evaluate_policy.py results/warmstart/alpha~0.0/model \\
        --configfile config/config.yaml config/cpu-routing.yaml --out warmstart.parquet

Answers the question "did the policy route before GRPO?": the warm-started policy goes through
the evaluation's own code path (`routerr1.evaluate.evaluate_router`, the run's pool and call
cache, its descriptors and questions), without MLflow. Prints EM, cost and pool calls per
benchmark and the first-called model per benchmark; writes the rows to ``--out``.

``--against`` the trained routers' evaluation files (one per seed) adds what GRPO changed: the
routers' EM and cost minus this policy's, on the same questions, with paired-bootstrap 95%
intervals (`routerr1.bootstrap`, seeds averaged per question, as in ``summary.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def first_per_benchmark(records: list, limit: int) -> list:
    """The first ``limit`` records of each benchmark, in their order."""
    kept: list = []
    counts: dict[str, int] = {}
    for record in records:
        counts[record.benchmark] = counts.get(record.benchmark, 0) + 1
        if counts[record.benchmark] <= limit:
            kept.append(record)
    return kept


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse names the flag that failed)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def against(policy_rows: pd.DataFrame, router_rows: list[pd.DataFrame]) -> dict:
    """Intervals of the routers (seeds averaged per question) minus ``policy_rows``, paired on
    ``qid``: ``d_em_best`` and ``d_cost_best`` of `PairedBootstrap.compare`, with the policy
    as the only "single model"."""
    from routerr1.bootstrap import PairedBootstrap

    base = policy_rows.set_index("qid").sort_index()
    em, cost = [], []
    for i, rows in enumerate(router_rows):
        aligned = rows.set_index("qid").reindex(base.index)
        if aligned["em"].isna().any() or len(rows) != len(base):
            raise ValueError(f"--against file {i + 1}: its questions differ from the policy's")
        em.append(aligned["em"].to_numpy(float))
        cost.append(aligned["cost"].to_numpy(float))
    boot = PairedBootstrap(
        base[["em"]].to_numpy(float), base[["cost"]].to_numpy(float), base["benchmark"].to_numpy()
    )
    return boot.compare(np.array(em), np.array(cost), best=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", help="a policy folder (warm start, trained router, base model)")
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--data-mirror", default="../shared/data/flashrag")
    ap.add_argument("--results", default="results", help="the run's results folder")
    ap.add_argument("--models-root", default="resources/models")
    ap.add_argument("--out", required=True, help="parquet file for the rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--batch-size",
        type=positive_int,
        help="questions per batch (default: eval.batch_size)",
    )
    ap.add_argument(
        "--limit", type=positive_int, help="only the first N questions of each benchmark"
    )
    ap.add_argument(
        "--against",
        nargs="*",
        default=[],
        type=Path,
        help="trained routers' evaluation parquets (one per seed) to compare with this policy",
    )
    args = ap.parse_args(argv)

    import torch

    from routerr1.data import read_records
    from routerr1.precision import hardware_header
    from routerr1.routing import first_calls
    from routerr1.stages.evaluate import evaluate_policy_folder

    torch.set_num_threads(args.threads)
    print(hardware_header(), flush=True)
    records = read_records(f"{args.results}/data/eval.parquet")
    if args.limit:
        records = first_per_benchmark(records, args.limit)
    start = time.perf_counter()
    rows = evaluate_policy_folder(
        args.configfile,
        args.data_mirror,
        args.policy,
        records,
        results=args.results,
        models_root=args.models_root,
        batch_size=args.batch_size,
    )
    print(f"{len(rows)} questions in {time.perf_counter() - start:.0f} s", flush=True)
    rows.to_parquet(args.out)
    first = first_calls(rows)
    print(rows.groupby("benchmark")[["em", "cost", "pool_calls"]].mean().to_markdown())
    print(pd.crosstab(rows["benchmark"], first).to_markdown())
    if args.against:
        result = against(rows, [pd.read_parquet(p) for p in args.against])
        for key, what, scale in (("d_em_best", "EM", 100.0), ("d_cost_best", "$ / question", 1.0)):
            iv = result[key].scaled(scale)
            interval = f"{iv.estimate:+.3g} [{iv.lo:+.3g}, {iv.hi:+.3g}]"
            print(f"routers minus this policy, {what}: {interval}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
