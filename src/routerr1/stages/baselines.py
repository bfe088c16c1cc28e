"""Stages of ``workflow/rules/baselines.smk``.

Oracle, largest, random and KNN reuse the single-model answers (no new pool inference); the
unseen-model evaluation reruns each trained router with the pool extended by pool_unseen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from routerr1.config import RunConfig
from routerr1.methods import BASELINES, derived_baselines
from routerr1.stages.common import eval_tags, pool_stage
from routerr1.stages.evaluate import evaluate_router
from routerr1.stages.pool import describe, profile

Models = Iterable[str | Path]  # the fetched model folders (the rule's input.models)


def _read_rows(paths: list[str]) -> pd.DataFrame:
    if not paths:
        raise ValueError("single_in: no single-model result files")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def _record_baseline(
    run: RunConfig, rows: pd.DataFrame, out: str, params: Mapping[str, Any]
) -> None:
    """Log a derived baseline as an evaluation run (same metrics and tags) and write its rows."""
    from routerr1.baselines import routed_model

    method, family = str(rows["method"].iloc[0]), str(rows["family"].iloc[0])
    tags = eval_tags(method, family, run.pool, alpha="")
    with pool_stage(run, f"eval/{method}", tags, name=f"eval {method}") as stage:
        if params:
            mlflow.log_params(dict(params))
        # which model each question went to, e.g. how often the oracle gets away with the cheap one
        share = rows["trajectory"].map(routed_model).value_counts(normalize=True)
        mlflow.log_metrics({f"route_share.{m}": float(v) for m, v in share.items()})
        stage.write_rows(rows, out)


# A derived baseline: its rows from the single-model rows, and the params MLflow logs with them.
Derive = Callable[[RunConfig, pd.DataFrame], tuple[pd.DataFrame, dict[str, Any]]]


def _oracle(run: RunConfig, single: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    from routerr1.baselines import oracle_rows

    prices = {e.name: (e.price_in, e.price_out) for e in run.pool}
    return oracle_rows(single, prices), {}


def _largest(run: RunConfig, single: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    from routerr1.baselines import largest_pool_name, largest_rows

    name = largest_pool_name(run.raw["pool"])
    return largest_rows(single, name), {"largest": name}


def _random(run: RunConfig, single: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    from routerr1.baselines import random_rows

    return random_rows(single, run.seed), {"seed": run.seed}


# One function per ``produced_by="derived"`` entry of routerr1.methods.BASELINES (a test keeps
# the two equal): a new derived baseline is a registry entry and a function here.
DERIVED: dict[str, Derive] = {"oracle": _oracle, "largest": _largest, "random": _random}


def derived_baseline(run: RunConfig, kind: str, single_in: list[str], out: str) -> pd.DataFrame:
    """A derived baseline's rows (oracle, largest model, random router...) from the
    single-model results."""
    baseline = BASELINES.get(kind)
    if baseline is None or baseline.produced_by != "derived" or kind not in DERIVED:
        expected = "|".join(derived_baselines())
        raise ValueError(f"kind: unknown derived baseline {kind!r}; expected {expected}")
    rows, params = DERIVED[kind](run, _read_rows(single_in))
    _record_baseline(run, rows, out, params)
    return rows


def fetch_embedder(run: RunConfig, dest: str) -> Path:
    from routerr1.baselines import fetch_embedder as fetch

    return fetch(run.eval.knn["embedder"], dest)


def knn_baseline(
    run: RunConfig,
    single_in: list[str],
    calls_in: str | list[str],
    embedder_dir: str,
    out: str,
) -> pd.DataFrame:
    """KNN router over the pool's direct answers to known questions (``calls_in``: the training
    questions' pool_answers and/or the profiling calls), answering with the single-model rows."""
    from routerr1.baselines import MiniLMEmbedder, knn_rows

    knn = run.eval.knn
    paths = [calls_in] if isinstance(calls_in, str) else list(calls_in)
    if not paths:
        raise ValueError("calls_in: no pool-answer files to learn from")
    calls = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    rows = knn_rows(_read_rows(single_in), calls, MiniLMEmbedder(embedder_dir), knn["k"])
    params = {
        "k": knn["k"],
        "embedder": knn["embedder"]["package"],
        "neighbours_from": ",".join(Path(p).name for p in paths),
        "n_known_questions": calls["question"].nunique(),
    }
    _record_baseline(run, rows, out, params)
    return rows


def profile_unseen(
    run: RunConfig, profile_in: str, profile_out: str, calls_out: str, models: Models
) -> pd.DataFrame:
    """Profile the pool_unseen models on the same questions as the training pool."""
    from routerr1.config import extended_pool_config

    extended_pool_config(run.raw)  # refuses an empty pool_unseen before any model loads
    return profile(
        run,
        profile_in,
        profile_out,
        calls_out,
        models,
        run_key="profile_pool_unseen",
        entries=run.pool_unseen,
    )


def describe_unseen(
    pool_profile_in: str, unseen_profile_in: str, out_json: str, cost_per_call: bool = False
) -> list[dict]:
    """Descriptors of the extended pool: the training pool's, unchanged, then the unseen ones."""
    import tempfile

    merged = pd.concat(
        [pd.read_parquet(pool_profile_in), pd.read_parquet(unseen_profile_in)], ignore_index=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profile.parquet"
        merged.to_parquet(path, index=False)
        return describe(str(path), out_json, cost_per_call=cost_per_call)


def evaluate_router_unseen(
    run: RunConfig,
    eval_in: str,
    descriptors_in: str,
    policy_dir: str,
    out: str,
    method: str,
    alpha: float,
    models: Models,
    seed: int | None = None,
) -> pd.DataFrame:
    """A trained router with the pool extended by pool_unseen; rows add ``unseen_calls``."""
    from routerr1.baselines import unseen_calls

    ext = run.extended()
    names = [e.name for e in run.pool_unseen]
    return evaluate_router(
        ext,
        eval_in,
        descriptors_in,
        policy_dir,
        out,
        method=method,
        family="router-r1-unseen",
        alpha=alpha,
        models=models,
        add_columns=lambda rows: rows.assign(
            unseen_calls=unseen_calls(list(rows["trajectory"]), ext.raw["pool"], names)
        ),
        seed=seed,
    )
