"""Stages of ``workflow/rules/pool.smk``: profile the pool, write its descriptors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import mlflow
import pandas as pd

from routerr1.config import PoolEntry, RunConfig
from routerr1.io import write_json_atomic, write_parquet_atomic
from routerr1.stages.common import open_pool, pool_hash, pool_stage


def profile(
    run: RunConfig,
    profile_in: str,
    profile_out: str,
    calls_out: str,
    models: Iterable[str | Path],
    run_key: str = "profile_pool",
    entries: Sequence[PoolEntry] | None = None,
) -> pd.DataFrame:
    """Measure the pool of ``entries`` (default: the training pool) on the profiling questions;
    ``models``: the fetched model folders (the rule's ``input.models``)."""
    from routerr1.data import read_records
    from routerr1.pool.profile import profile_pool

    entries = run.pool if entries is None else tuple(entries)
    records = read_records(profile_in)
    tags = {"stage": "profile", "pool_hash": pool_hash(entries)}
    pool = open_pool(run, models, entries)
    with pool_stage(run, run_key, tags, pool=pool, entries=entries) as stage:
        summary, calls = profile_pool(
            pool,
            [r.question for r in records],
            [r.golden_answers for r in records],
            batch_size=run.eval.batch_size,
        )
        for row in summary.to_dict("records"):
            for k in ("latency_p50_s", "latency_p95_s", "tokens_per_s", "em", "f1", "mean_cost"):
                mlflow.log_metric(f"{row['name']}.{k}", row[k])
        stage.log_price_table()
        write_parquet_atomic(calls, calls_out)
        write_parquet_atomic(summary, profile_out)
    return summary


def describe(
    profile_in: str, out_json: str, compressed: bool = False, cost_per_call: bool = False
) -> list[dict]:
    from routerr1.pool.profile import descriptors_from_profile

    descs = descriptors_from_profile(pd.read_parquet(profile_in), cost_per_call)
    payload = [
        {**d.__dict__, "text": d.render(compressed=False), "compressed": d.render(compressed=True)}
        for d in descs
    ]
    write_json_atomic(payload, out_json)
    return payload
