"""Stages of ``workflow/rules/evaluate.smk``: a router (trained, or the untrained prompt router)
and each pool model alone, on the evaluation questions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import mlflow
import pandas as pd

from routerr1.config import RunConfig
from routerr1.evaluate import ChunkStore
from routerr1.stages.common import (
    eval_tags,
    fetched_models,
    load_descriptors,
    loadable,
    open_pool,
    pool_stage,
)

Models = Iterable[str | Path]  # the fetched model folders (the rule's input.models)


def evaluate_router(
    run: RunConfig,
    eval_in: str,
    descriptors_in: str,
    policy_dir: str,
    out: str,
    method: str,
    family: str,
    alpha: float | None,
    models: Models,
    add_columns: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Evaluate a router; ``seed``: the training seed of a router trained with a seed other
    than the top-level one (written as a ``seed`` column; its run key adds ``/seed~S``)."""
    from routerr1.data import read_records
    from routerr1.evaluate import evaluate_router as run_router
    from routerr1.train import load_policy

    ecfg = run.eval
    more = {"alpha": "" if alpha is None else str(alpha)}
    tags = eval_tags(method, family, run.pool, **more)
    if seed is not None:
        tags["seed"] = str(seed)
    decoding = ecfg.decoding(run.seed)
    # a killed evaluation resumes from its finished batches (if made with the same decoding)
    store = ChunkStore(out, settings=decoding)
    pool = open_pool(run, models)
    level = run.seed_level(seed)
    key, name = f"eval/{method}{level}", f"eval {method}{level}"
    with pool_stage(run, key, tags, name=name, pool=pool) as stage:
        mlflow.log_params({f"eval.{k}": v for k, v in decoding.items()})
        model, tok = load_policy(loadable(policy_dir), run.policy_dtype)
        rows = run_router(
            model=model,
            tokenizer=tok,
            pool=pool,
            descriptors=load_descriptors(descriptors_in),
            records=read_records(eval_in),
            rollout_cfg=run.rollout,
            method=method,
            family=family,
            alpha=alpha,
            batch_size=ecfg.batch_size,
            temperature=ecfg.temperature,
            top_p=ecfg.top_p,
            sample_seed=decoding.get("sample_seed", run.seed),
            store=store,
            linear_kernel=run.linear_kernel,
        )
        if add_columns is not None:
            rows = add_columns(rows)
        if seed is not None:
            rows = rows.assign(seed=int(seed))
        stage.write_rows(rows, out)
    store.clear()
    return rows


def evaluate_policy_folder(
    configfiles: Sequence[str | Path],
    data_mirror: str,
    policy_dir: str | Path,
    records: Sequence,
    results: str | Path = "results",
    models_root: str | Path = "resources/models",
    temperature: float = 0.0,
    sample_seed: int = 0,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Any policy folder (warm start, trained router, base model) as a router on ``records``,
    untracked: the evaluation's code path with a finished run's pool, call cache and
    descriptors (under ``results``), for the diagnostics in ``benchmarks/``. The policy's
    precision and linear kernel are the run's; ``batch_size`` overrides ``eval.batch_size``."""
    from routerr1.config import load_configs
    from routerr1.evaluate import evaluate_router as run_router
    from routerr1.pool.cache import CACHE_FILE
    from routerr1.train import load_policy

    raw = load_configs(list(configfiles), {"data_mirror": data_mirror})
    run = RunConfig.from_dict(raw)
    pool = open_pool(run, fetched_models(models_root, raw), cache_path=Path(results) / CACHE_FILE)
    model, tok = load_policy(policy_dir, run.policy_dtype)
    with pool:
        return run_router(
            model=model,
            tokenizer=tok,
            pool=pool,
            descriptors=load_descriptors(Path(results) / "pool" / "descriptors.json"),
            records=records,
            rollout_cfg=run.rollout,
            method=f"policy:{policy_dir}",
            family="diagnostic",
            alpha=None,
            batch_size=batch_size or run.eval.batch_size,
            temperature=temperature,
            sample_seed=sample_seed,
            linear_kernel=run.linear_kernel,
        )


def evaluate_single(
    run: RunConfig, eval_in: str, name: str, out: str, models: Models
) -> pd.DataFrame:
    """One pool model alone: every question asked to it directly."""
    from routerr1.data import read_records
    from routerr1.evaluate import evaluate_single as run_single

    method = f"single:{name}"
    store = ChunkStore(out)
    tags = eval_tags(method, "single", run.pool)
    pool = open_pool(run, models)
    with pool_stage(run, f"eval/{method}", tags, name=f"eval {method}", pool=pool) as stage:
        records = read_records(eval_in)
        rows = run_single(pool, name, records, batch_size=run.eval.batch_size, store=store)
        stage.write_rows(rows, out)
    store.clear()
    return rows
