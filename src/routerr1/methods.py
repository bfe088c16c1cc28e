"""What an evaluated method is: the rows it writes, its family, and the baselines registry.

Every evaluation (router, baseline, single pool model) writes `ROW_COLUMNS` rows, one per
question (and training seed); the report reads `SUMMARY_COLUMNS` of them. Each row names its
``method`` (e.g. ``router-r1@a0.5``, ``single:qwen-7b``) and its ``family``, which decides how
the report draws, orders and compares it.

`BASELINES` is the one list of the names ``eval.baselines`` accepts: the workflow's targets
(``workflow/rules/common.smk``), the ``derive_baseline`` rule, the config schema's enum (a test
keeps it equal) and the report's notes all read it.

Imports nothing heavy (no pandas, no torch): the Snakefile reads this module at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AVERAGE",
    "BASELINES",
    "CALL_COLUMNS",
    "FAMILY_ORDER",
    "NO_INTERVAL_FAMILIES",
    "ORACLE_FAMILY",
    "ROUTER_COLUMNS",
    "ROUTER_FAMILY",
    "ROUTING_FAMILIES",
    "ROW_COLUMNS",
    "SINGLE_FAMILY",
    "SINGLE_PREFIX",
    "SUMMARY_COLUMNS",
    "SWEEP_FAMILIES",
    "UNSEEN_FAMILY",
    "Baseline",
    "baseline_outputs",
    "check_single_rows",
    "derived_baselines",
]

# --------------------------------------------------------------------------- the eval rows

ROW_COLUMNS = [
    "method",
    "family",
    "alpha",
    "benchmark",
    "qid",
    "question",
    "golden_answers",
    "prediction",
    "em",
    "f1",
    "pool_calls",
    "invalid_actions",
    "pool_errors",
    "in_tokens",
    "out_tokens",
    "cost",
    "latency_s",
    "trajectory",
]
# Router rows also list their pool calls in order: the model asked and its reply ("" when the
# call failed), for the routing-behaviour report. Files written before these columns existed
# lack them; routerr1.routing then reads the calls from the trajectory text.
CALL_COLUMNS = ["call_models", "call_replies"]
ROUTER_COLUMNS = [*ROW_COLUMNS, *CALL_COLUMNS]
# The columns the summary needs; the others are optional there and kept as they come.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "method",
    "family",
    "alpha",
    "benchmark",
    "qid",
    "em",
    "f1",
    "cost",
    "pool_calls",
    "invalid_actions",
    "pool_errors",
)
# The macro-average page of summary.md, pareto.pdf and headroom.md (a reserved benchmark name).
AVERAGE = "average"

# --------------------------------------------------------------------------- families

ROUTER_FAMILY = "router-r1"
UNSEEN_FAMILY = "router-r1-unseen"  # the same routers, pool extended by models never trained on
SINGLE_FAMILY = "single"
ORACLE_FAMILY = "oracle"
SINGLE_PREFIX = "single:"  # a single model's method is "single:<pool name>"
# Families whose methods are one router per alpha: they need alpha and are drawn as a sweep.
SWEEP_FAMILIES = (ROUTER_FAMILY, UNSEEN_FAMILY)


@dataclass(frozen=True)
class Baseline:
    """One name ``eval.baselines`` accepts.

    ``produced_by``: ``"pool"`` (every pool model answers every question: new inference),
    ``"rule"`` (its own rule runs a policy), or ``"derived"`` (relabelled single-model answers,
    no new inference; rule ``derive_baseline``), or ``"knn"`` (derived too, but learns from the
    pool's answers to known questions; rule ``knn_baseline``). ``output``: the evaluation file(s)
    it writes. ``routes``: its rows come from a routing policy's trajectories (the routing
    report reads them). ``compared``: it gets paired-bootstrap intervals against the single
    models (not the single models themselves, nor the oracle, which reads the gold answers).
    ``display``: its family's place in the report, after the routers. ``note``: its line under
    the report's EM / F1 table.
    """

    name: str
    family: str
    produced_by: str
    output: str
    display: int
    routes: bool = False
    compared: bool = True
    note: str = ""


# In the order of the workflow's targets (and so of the report's input files); ``display``
# orders the report's families: from the weakest idea to the upper bound.
BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline(
            "single",
            SINGLE_FAMILY,
            "pool",
            "results/eval/single/{member}.parquet",
            display=3,
            compared=False,
        ),
        Baseline(
            "prompt_router",
            "prompt-router",
            "rule",
            "results/eval/prompt_router/untrained.parquet",
            display=0,
            routes=True,
            note="prompt-router: the untrained policy, prompted to route",
        ),
        Baseline(
            "oracle",
            ORACLE_FAMILY,
            "derived",
            "results/eval/baselines/oracle.parquet",
            display=5,
            compared=False,
            note="oracle: per question the cheapest pool model that answers correctly; it reads "
            "the gold answers, so it is an upper bound and stays off the Pareto frontier",
        ),
        Baseline(
            "largest",
            "largest",
            "derived",
            "results/eval/baselines/largest.parquet",
            display=4,
            compared=False,  # one of the single models
            note="largest: the largest pool model alone (same answers as its single row)",
        ),
        Baseline(
            "random",
            "random",
            "derived",
            "results/eval/baselines/random.parquet",
            display=2,
            note="random: per question a pool model drawn uniformly (seeded), answering alone",
        ),
        Baseline(
            "knn",
            "knn",
            "knn",
            "results/eval/baselines/knn.parquet",
            display=1,
            note="knn: per question the pool model with the best mean F1 on its k nearest "
            "training and profiling questions (MiniLM embeddings; ties to the cheaper), "
            "answering alone",
        ),
    )
}

# Display order of families: the routers first, then the baselines by ``display``.
FAMILY_ORDER = (
    *SWEEP_FAMILIES,
    *(b.family for b in sorted(BASELINES.values(), key=lambda b: b.display)),
)
# Families whose rows come from a routing policy (derived baselines route without a trajectory).
ROUTING_FAMILIES = (*SWEEP_FAMILIES, *(b.family for b in BASELINES.values() if b.routes))
# Families not compared with the single models in the report's intervals.
NO_INTERVAL_FAMILIES = tuple(b.family for b in BASELINES.values() if not b.compared)


def derived_baselines() -> list[str]:
    """Names of the baselines the ``derive_baseline`` rule makes from single-model answers."""
    return [n for n, b in BASELINES.items() if b.produced_by == "derived"]


def baseline_outputs(names: list[str] | tuple[str, ...], members: list[str]) -> list[str]:
    """The evaluation files of the configured baselines, in `BASELINES` order.

    ``members``: the pool's names, for the per-model files of ``single``.
    """
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ValueError(f"eval.baselines: unknown name(s) {unknown}; known: {list(BASELINES)}")
    outs: list[str] = []
    for name, b in BASELINES.items():
        if name in names:
            if "{member}" in b.output:
                outs += [b.output.format(member=m) for m in sorted(members)]
            else:
                outs.append(b.output)
    return outs


# --------------------------------------------------------------------------- single-model rows


def check_single_rows(rows: pd.DataFrame, needed: tuple[str, ...] | list[str], what: str) -> None:
    """Reject single-model rows that a baseline or the headroom cannot use.

    Checks that ``needed`` columns are present, that there are rows, and that every method is
    ``single:<pool name>``; ``what`` starts each message (e.g. "single_rows"). Raises ValueError.
    """
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")
    if rows.empty:
        raise ValueError(f"{what}: empty; need each pool model's direct answers")
    methods = rows["method"].astype(str)
    bad = sorted(set(methods[~methods.str.startswith(SINGLE_PREFIX)]))
    if bad:
        raise ValueError(f"{what}: method {bad[0]!r} is not 'single:<pool name>'")
