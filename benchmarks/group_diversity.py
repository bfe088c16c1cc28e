"""Do a policy's GRPO groups differ? Sampled rollouts of the same question, compared.

    python benchmarks/group_diversity.py results/warmstart/alpha~0.0/model \\
        --configfile config/config.yaml config/cpu-routing.yaml --questions 8 --generations 4

GRPO learns only from groups whose rewards differ. This samples ``--generations`` rollouts per
question, as a training step does (the run's rollout settings at ``--temperature``), through the
evaluation's code path (the run's pool, call cache and descriptors), and reports per benchmark:
the share of groups whose first calls name more than one model, the share whose EM differs,
and the mean number of distinct first-call models per group. Writes the rows to ``--out``.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", help="a policy folder (warm start, trained router)")
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--data-mirror", default="../shared/data/flashrag")
    ap.add_argument("--results", default="results", help="the run's results folder")
    ap.add_argument("--models-root", default="resources/models")
    ap.add_argument("--split", choices=["train", "eval"], default="train")
    ap.add_argument("--questions", type=int, default=8, help="per benchmark")
    ap.add_argument("--generations", type=int, default=4, help="rollouts per question")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="parquet file for the rows")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.generations < 2 or args.questions < 1 or args.temperature <= 0:
        ap.error("--generations must be >= 2, --questions >= 1 and --temperature > 0")

    import torch

    from routerr1.data import read_records
    from routerr1.precision import hardware_header
    from routerr1.routing import first_calls, group_diversity
    from routerr1.stages.evaluate import evaluate_policy_folder

    torch.set_num_threads(args.threads)
    print(hardware_header(), flush=True)
    records = read_records(f"{args.results}/data/{args.split}.parquet")
    picked: dict[str, list] = {}
    for record in records:  # the file's seeded order: the first questions of each benchmark
        bench = picked.setdefault(record.benchmark, [])
        if len(bench) < args.questions:
            bench.append(record)
    # each question repeated in one batch, as a GRPO group is
    repeated = [r for bench in picked.values() for r in bench for _ in range(args.generations)]
    rows = evaluate_policy_folder(
        args.configfile,
        args.data_mirror,
        args.policy,
        repeated,
        results=args.results,
        models_root=args.models_root,
        temperature=args.temperature,
        sample_seed=args.seed,
    )
    if args.out:
        rows.to_parquet(args.out)
    first = first_calls(rows)
    print(
        f"{args.policy}: {args.questions} {args.split} questions per benchmark x "
        f"{args.generations} samples at temperature {args.temperature}"
    )
    print(group_diversity(rows).to_markdown(index=False, floatfmt=".2f"))
    print(pd.crosstab(rows["benchmark"], first.values).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
