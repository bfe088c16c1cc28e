"""Does a policy's choice of model depend on the question's kind? A forward-pass probe.

    python benchmarks/route_probe.py results/warmstart/model results/train/alpha~0.0/model \\
        --configfile config/config.yaml config/cpu-routing.yaml ... --per-benchmark 16

(A run's ``checkpoints/checkpoint-N`` folders can be probed too, while training runs: they are
removed when it ends.)

For each policy and evaluation question, the policy reads the router prompt and one of the warm
start's first thoughts up to the model's name, e.g. ``<think>This is <kind>. Let me ask`` (the
kind from ``warm_start.question_kinds``; ``--thoughts`` picks the templates of
``routerr1.warmstart.FIRST_THOUGHTS`` by index, default the "Let me ask" one). Each pool model's
name is scored as the continuation, with the template's next word (`` <name> for``, so that one
name is not scored as a prefix of a longer one), and the scores are normalised over the pool.
That is the policy's probability, at that point, of routing the question to each model.

Prints per policy, template and benchmark the mean probability of each model, how many
questions each model is the top choice for, and the total-variation distance between the
benchmarks' mean distributions: 0 when the route ignores the kind, 1 when the kinds' routes
are disjoint. Greedy evaluations and sampled training rollouts show where a
policy ended; this shows how strongly each checkpoint ties its route to the kind, without
generating. Nothing is trained or written.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_THOUGHT = 2  # "Let me ask {model} for the key fact."


def continuation_logprob(model, tokenizer, prefix: str, endings: list[str]) -> np.ndarray:
    """Sum of the log-probabilities of each ending's tokens after ``prefix``, one batch."""
    import torch

    head = tokenizer(prefix, add_special_tokens=False).input_ids
    tails = [tokenizer(e, add_special_tokens=False).input_ids for e in endings]
    width = len(head) + max(len(t) for t in tails)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(tails), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, tail in enumerate(tails):
        ids[i, : len(head) + len(tail)] = torch.tensor(head + tail)
        mask[i, : len(head) + len(tail)] = 1
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    out = np.zeros(len(tails))
    for i, tail in enumerate(tails):
        # the token at position p is predicted by the logits at p - 1
        positions = torch.arange(len(head), len(head) + len(tail))
        out[i] = float(logp[i, positions - 1, torch.tensor(tail)].sum())
    return out


def split_thought(template: str, opening: str) -> tuple[str, str, str]:
    """(prefix, gap, next word) around ``{model}`` in a first-thought template after ``opening``.

    A space before the name belongs to the name's tokens, as in the warm start's text: with
    ``opening`` "This is a maths problem. ", "{model} should ..." scores " <name> should" after
    "This is a maths problem."."""
    head, tail = template.split("{model}", 1)
    prefix = opening + head
    gap = prefix[len(prefix.rstrip()) :]
    following = re.match(r"\s*\S*", tail).group(0)
    return prefix.rstrip(), gap, following


def route_probabilities(
    model,
    tokenizer,
    records,
    descriptors,
    kinds: dict[str, str],
    compressed: bool,
    template: str,
) -> pd.DataFrame:
    """One row per question: its benchmark and each model's normalised route probability."""
    from routerr1.prompt import chat_prompt, render_router_prompt

    names = [d.name for d in descriptors]
    rows = []
    for rec in records:
        kind = f"This is {kinds[rec.benchmark].strip()}. " if rec.benchmark in kinds else ""
        prefix, gap, following = split_thought(template, kind)
        prompt = chat_prompt(tokenizer, render_router_prompt(rec.question, descriptors, compressed))
        scores = continuation_logprob(
            model, tokenizer, f"{prompt}<think>{prefix}", [f"{gap}{n}{following}" for n in names]
        )
        p = np.exp(scores - scores.max())
        rows.append({"benchmark": rec.benchmark, **dict(zip(names, p / p.sum(), strict=True))})
    return pd.DataFrame(rows)


def kind_distance(means: pd.DataFrame) -> float:
    """Largest total-variation distance between two benchmarks' mean route distributions."""
    pairs = itertools.combinations(means.index, 2)
    gaps = (0.5 * float((means.loc[a] - means.loc[b]).abs().sum()) for a, b in pairs)
    return max(gaps, default=0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policies", nargs="+", help="policy folders (warm start, checkpoints, router)")
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--data-mirror", default="../shared/data/flashrag")
    ap.add_argument("--results", default="results", help="the run's results folder")
    ap.add_argument("--per-benchmark", type=int, default=16, help="questions per benchmark")
    ap.add_argument(
        "--thoughts",
        type=int,
        nargs="+",
        default=[DEFAULT_THOUGHT],
        help="indices into routerr1.warmstart.FIRST_THOUGHTS (0 1 2 for all three)",
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    missing = [p for p in args.policies if not Path(p).is_dir()]
    if missing:  # a missing folder would otherwise read as a hub repo id
        ap.error(f"no policy folder {missing[0]!r} (checkpoints are removed when training ends)")

    import torch

    from routerr1.config import RunConfig, load_configs
    from routerr1.data import read_records
    from routerr1.precision import hardware_header
    from routerr1.stages.common import load_descriptors
    from routerr1.train import load_policy
    from routerr1.warmstart import FIRST_THOUGHTS

    bad = [i for i in args.thoughts if not 0 <= i < len(FIRST_THOUGHTS)]
    if bad:
        ap.error(f"--thoughts {bad[0]}: FIRST_THOUGHTS has {len(FIRST_THOUGHTS)} templates")

    torch.set_num_threads(args.threads)
    print(hardware_header({"policy": "float32"}), flush=True)
    run = RunConfig.from_dict(load_configs(args.configfile, {"data_mirror": args.data_mirror}))
    kinds = dict(run.warm_start.question_kinds)
    descriptors = load_descriptors(Path(args.results) / "pool" / "descriptors.json")
    taken: dict[str, int] = {}
    records = []
    for rec in read_records(Path(args.results) / "data" / "eval.parquet"):
        if taken.get(rec.benchmark, 0) < args.per_benchmark:
            taken[rec.benchmark] = taken.get(rec.benchmark, 0) + 1
            records.append(rec)
    for policy in args.policies:
        model, tok = load_policy(policy, "float32")
        model.eval()
        print(f"\n## {policy}")
        for index in args.thoughts:
            template = FIRST_THOUGHTS[index]
            probs = route_probabilities(
                model,
                tok,
                records,
                descriptors,
                kinds,
                run.rollout.compressed_descriptors,
                template,
            )
            means = probs.groupby("benchmark").mean()
            tops = probs.set_index("benchmark").idxmax(axis=1).groupby(level=0).value_counts()
            print(f"\n### thought {index}: {template!r}\n")
            print(means.round(3).to_markdown())
            print(
                "\nquestions per top choice: "
                + ", ".join(f"{b} → {m} {n}" for (b, m), n in tops.items())
            )
            distance = kind_distance(means)
            print(f"\nlargest distance between two benchmarks' routes: {distance:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
