"""One function per pipeline stage: what each Snakemake rule runs, callable without Snakemake.

Every stage reads plain paths and the validated config dict, writes its outputs atomically, and
records what it did in MLflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from routerr1.config import (
    eval_config,
    pool_entries,
    rollout_config,
    train_config,
)
from routerr1.io import write_json_atomic, write_parquet_atomic
from routerr1.prompt import descriptor_from_mapping

log = logging.getLogger(__name__)

MODELS_ROOT = Path("resources/models")


def _model_dirs(cfg: Mapping[str, Any], root: Path = MODELS_ROOT) -> dict[str, Path]:
    """Loadable folder per model key (a local source is used in place, not copied)."""
    from routerr1.models import model_dir

    return {key: model_dir(root / key) for key in cfg["models"] if (root / key).exists()}


def _loadable(fetched: str | Path) -> Path:
    from routerr1.models import model_dir

    return model_dir(Path(fetched))


def _pool(cfg: Mapping[str, Any], models_root: Path = MODELS_ROOT):
    from routerr1.pool.base import local_pool

    entries = pool_entries(cfg)
    return local_pool(
        entries, _model_dirs(cfg, models_root), max_batch_size=eval_config(cfg).batch_size
    )


def price_table(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": e.name,
            "model": e.model,
            "price_in_per_1M": e.price_in,
            "price_out_per_1M": e.price_out,
        }
        for e in pool_entries(cfg)
    ]


# -- data --------------------------------------------------------------------------------------
def download_data(cfg: Mapping[str, Any], train_out: str, eval_out: str, profile_out: str) -> None:
    from routerr1.data import SamplingConfig, build_splits, records_to_frame, resolve_benchmark_dir

    d = cfg["data"]
    sampling = SamplingConfig(
        train_benchmarks=tuple(d["train_benchmarks"]),
        eval_benchmarks=tuple(d["eval_benchmarks"]),
        n_train=d["n_train"],
        n_eval=d["n_eval"],
        n_profile=d["n_profile"],
        seed=cfg["seed"],
        profile_benchmarks=tuple(d["profile_benchmarks"]) if d.get("profile_benchmarks") else None,
    )
    mirror = Path(cfg["data_mirror"]) if cfg.get("data_mirror") else None

    def source(bench: str) -> Path:
        return resolve_benchmark_dir(bench, mirror, d["hub_repo"], d["hub_revision"])

    splits = build_splits(sampling, source)
    for name, path in (("train", train_out), ("eval", eval_out), ("profile", profile_out)):
        write_parquet_atomic(records_to_frame(splits[name]), path)
        log.info("%s: %d questions -> %s", name, len(splits[name]), path)


# -- models ------------------------------------------------------------------------------------
def fetch(source: Mapping[str, Any], dest: str) -> Path:
    from routerr1.models import fetch_model, source_from_dict

    return fetch_model(source_from_dict(source), Path(dest))


# -- pool --------------------------------------------------------------------------------------
def profile(
    cfg: Mapping[str, Any],
    profile_in: str,
    profile_out: str,
    calls_out: str,
    models_root: Path = MODELS_ROOT,
) -> pd.DataFrame:
    from routerr1.data import read_records
    from routerr1.pool.profile import profile_pool
    from routerr1.tracking import log_json_artifact, tracked_run

    records = read_records(profile_in)
    pool = _pool(cfg, models_root)
    with tracked_run(cfg, "profile_pool", "profile_pool", {"stage": "profile"}):
        summary, calls = profile_pool(
            pool,
            [r.question for r in records],
            [r.golden_answers for r in records],
            batch_size=eval_config(cfg).batch_size,
        )
        for row in summary.to_dict("records"):
            for k in ("latency_p50_s", "latency_p95_s", "tokens_per_s", "em", "f1", "mean_cost"):
                mlflow.log_metric(f"{row['name']}.{k}", row[k])
        log_json_artifact(price_table(cfg), "price_table.json")
        write_parquet_atomic(calls, calls_out)
        write_parquet_atomic(summary, profile_out)
    return summary


def describe(profile_in: str, out_json: str, compressed: bool = False) -> list[dict]:
    from routerr1.pool.profile import descriptors_from_profile

    descs = descriptors_from_profile(pd.read_parquet(profile_in))
    payload = [
        {**d.__dict__, "text": d.render(compressed=False), "compressed": d.render(compressed=True)}
        for d in descs
    ]
    write_json_atomic(payload, out_json)
    return payload


def load_descriptors(path: str | Path):
    return [descriptor_from_mapping(d) for d in json.loads(Path(path).read_text())]


# -- train -------------------------------------------------------------------------------------
def train(
    cfg: Mapping[str, Any],
    alpha: float,
    train_in: str,
    descriptors_in: str,
    policy_dir: str,
    checkpoints: str,
    model_out: str,
    models_root: Path = MODELS_ROOT,
) -> dict[str, Any]:
    from routerr1.data import read_records
    from routerr1.tracking import flat_params, log_json_artifact, tracked_run
    from routerr1.train import step_metrics, train_router

    tcfg, rcfg = train_config(cfg), rollout_config(cfg)
    key = f"train/alpha~{alpha!r}"
    with tracked_run(cfg, key, f"train alpha={alpha}", {"stage": "train", "alpha": str(alpha)}):
        mlflow.log_params(
            {
                **flat_params("train", cfg["train"]),
                **flat_params("rollout", cfg["rollout"]),
                "alpha": alpha,
                "policy": cfg["policy"]["model"],
            }
        )
        log_json_artifact(price_table(cfg), "price_table.json")
        summary = train_router(
            policy_dir=_loadable(policy_dir),
            policy_dtype=cfg["policy"]["dtype"],
            records=read_records(train_in),
            descriptors=load_descriptors(descriptors_in),
            pool=_pool(cfg, models_root),
            alpha=alpha,
            train_cfg=tcfg,
            rollout_cfg=rcfg,
            checkpoint_dir=checkpoints,
            model_out=model_out,
            seed=cfg["seed"],
        )
        final = step_metrics(summary["history"])
        mlflow.log_metrics({f"final/{k.replace('/', '.')}": v for k, v in final.items()})
        log_json_artifact(summary, "train_summary.json")
    return summary


# -- evaluate ----------------------------------------------------------------------------------
def _log_eval(rows: pd.DataFrame) -> None:
    for bench, grp in rows.groupby("benchmark"):
        mlflow.log_metrics(
            {
                f"{bench}.em": 100 * grp["em"].mean(),
                f"{bench}.f1": 100 * grp["f1"].mean(),
                f"{bench}.cost": grp["cost"].mean(),
                f"{bench}.pool_calls": grp["pool_calls"].mean(),
                f"{bench}.pool_errors": float(grp["pool_errors"].sum()),
            }
        )
    mlflow.log_metrics({"em": 100 * rows["em"].mean(), "cost": rows["cost"].mean()})


def evaluate_router(
    cfg: Mapping[str, Any],
    eval_in: str,
    descriptors_in: str,
    policy_dir: str,
    out: str,
    method: str,
    family: str,
    alpha: float | None,
    models_root: Path = MODELS_ROOT,
) -> pd.DataFrame:
    from routerr1.data import read_records
    from routerr1.evaluate import evaluate_router as run_router
    from routerr1.tracking import log_json_artifact, tracked_run
    from routerr1.train import load_policy

    ecfg = eval_config(cfg)
    tags = {
        "stage": "evaluate",
        "method": method,
        "family": family,
        "alpha": "" if alpha is None else str(alpha),
    }
    with tracked_run(cfg, f"eval/{method}", f"eval {method}", tags):
        if (Path(policy_dir) / "routerr1_source.json").exists():  # untrained: a fetched model
            policy_dir = _loadable(policy_dir)
        model, tok = load_policy(policy_dir, cfg["policy"]["dtype"])
        rows = run_router(
            model=model,
            tokenizer=tok,
            pool=_pool(cfg, models_root),
            descriptors=load_descriptors(descriptors_in),
            records=read_records(eval_in),
            rollout_cfg=rollout_config(cfg),
            method=method,
            family=family,
            alpha=alpha,
            batch_size=ecfg.batch_size,
            greedy=ecfg.greedy,
        )
        _log_eval(rows)
        log_json_artifact(price_table(cfg), "price_table.json")
        write_parquet_atomic(rows, out)
    return rows


def evaluate_single(
    cfg: Mapping[str, Any], eval_in: str, name: str, out: str, models_root: Path = MODELS_ROOT
) -> pd.DataFrame:
    from routerr1.data import read_records
    from routerr1.evaluate import evaluate_single as run_single
    from routerr1.tracking import log_json_artifact, tracked_run

    method = f"single:{name}"
    with tracked_run(
        cfg,
        f"eval/{method}",
        f"eval {method}",
        {"stage": "evaluate", "method": method, "family": "single"},
    ):
        rows = run_single(
            _pool(cfg, models_root),
            name,
            read_records(eval_in),
            batch_size=eval_config(cfg).batch_size,
        )
        _log_eval(rows)
        log_json_artifact(price_table(cfg), "price_table.json")
        write_parquet_atomic(rows, out)
    return rows
