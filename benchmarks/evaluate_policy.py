"""Evaluate any policy folder as a router, greedily, on a run's evaluation questions.

    python benchmarks/evaluate_policy.py results/warmstart/alpha~0.0/model \\
        --configfile config/config.yaml config/cpu-routing.yaml --out warmstart.parquet

Answers the question "did the policy route before GRPO?": the warm-started policy goes through
the evaluation's own code path (`routerr1.evaluate.evaluate_router`, the run's pool and call
cache, its descriptors and questions), without MLflow. Prints EM, cost and pool calls per
benchmark and the first-called model per benchmark; writes the rows to ``--out``.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", help="a policy folder (warm start, trained router, base model)")
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--data-mirror", default="../shared/data/flashrag")
    ap.add_argument("--results", default="results", help="the run's results folder")
    ap.add_argument("--models-root", default="resources/models")
    ap.add_argument("--out", required=True, help="parquet file for the rows")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from routerr1.data import read_records
    from routerr1.precision import hardware_header
    from routerr1.routing import first_calls
    from routerr1.stages.evaluate import evaluate_policy_folder

    torch.set_num_threads(args.threads)
    print(hardware_header(), flush=True)
    rows = evaluate_policy_folder(
        args.configfile,
        args.data_mirror,
        args.policy,
        read_records(f"{args.results}/data/eval.parquet"),
        results=args.results,
        models_root=args.models_root,
    )
    rows.to_parquet(args.out)
    first = first_calls(rows)
    print(rows.groupby("benchmark")[["em", "cost", "pool_calls"]].mean().to_markdown())
    print(pd.crosstab(rows["benchmark"], first).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
