"""One function per pipeline stage: what each Snakemake rule runs, callable without Snakemake.

Every stage reads plain paths and the validated config dict, writes its outputs atomically, and
records what it did in MLflow.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from routerr1.config import (
    PER_ALPHA_ROUTING,
    eval_config,
    pool_entries,
    rollout_config,
    seed_level,
    train_config,
    warm_start_config,
)
from routerr1.evaluate import ChunkStore
from routerr1.io import write_json_atomic, write_parquet_atomic
from routerr1.prompt import descriptor_from_mapping, router_prompts

log = logging.getLogger(__name__)

MODELS_ROOT = Path("resources/models")


def _model_dirs(cfg: Mapping[str, Any], root: Path = MODELS_ROOT) -> dict[str, Path]:
    """Loadable folder per model key (a local source is used in place, not copied)."""
    from routerr1.models import model_dir

    return {key: model_dir(root / key) for key in cfg["models"] if (root / key).exists()}


def _loadable(folder: str | Path) -> Path:
    """A fetched model (resolved through its marker) or a trained/warm-started one (as is)."""
    from routerr1.models import MARKER, model_dir

    folder = Path(folder)
    return model_dir(folder) if (folder / MARKER).exists() else folder


def _pool(cfg: Mapping[str, Any], models_root: Path = MODELS_ROOT):
    from routerr1.pool.base import build_pool
    from routerr1.pool.cache import DEFAULT_CACHE_PATH, CallCache

    # deterministic calls are replayed from the cache; their recorded tokens are still priced
    cache = CallCache(DEFAULT_CACHE_PATH) if cfg.get("pool_cache", True) else None
    return build_pool(
        pool_entries(cfg),
        _model_dirs(cfg, models_root),
        max_batch_size=eval_config(cfg).batch_size,
        cache=cache,
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
def _sampled(cfg: Mapping[str, Any]):
    from routerr1.data import SamplingConfig, resolve_benchmark_dir, sample_splits

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

    source_name = str(mirror) if mirror is not None else f"hub:{d['hub_repo']}@{d['hub_revision']}"
    return sample_splits(sampling, source), source_name


def download_data(
    cfg: Mapping[str, Any],
    train_out: str,
    eval_out: str,
    profile_out: str,
    manifest_out: str | None = None,
) -> dict[str, Any]:
    """Sample the three sets; an eval benchmark missing from the source is skipped with a
    warning, and the returned manifest (also written to ``manifest_out``) says which and why."""
    from routerr1.data import records_to_frame, with_question_mark

    splits, source_name = _sampled(cfg)
    for name, path in (("train", train_out), ("eval", eval_out), ("profile", profile_out)):
        records = getattr(splits, name)
        if cfg["data"].get("question_mark"):  # as Router-R1's data scripts
            records = with_question_mark(records)
        write_parquet_atomic(records_to_frame(records), path)
        log.info("%s: %d questions -> %s", name, len(records), path)
    for bench, reason in splits.skipped.items():
        log.warning("SKIPPED eval benchmark %r: %s", bench, reason)
    manifest = {"source": source_name, "benchmarks": splits.eval_manifest}
    if manifest_out is not None:
        write_json_atomic(manifest, manifest_out)
    return manifest


def eval_manifest(cfg: Mapping[str, Any], eval_in: str, out: str) -> dict[str, Any]:
    """Which configured eval benchmarks were evaluated (split, questions) and which skipped
    (why), for the report. Sampling is seeded, so redoing it gives download_data's manifest;
    it is checked against ``eval_in`` so a stale eval set cannot be described wrongly."""
    splits, source_name = _sampled(cfg)
    counts = pd.read_parquet(eval_in, columns=["benchmark"])["benchmark"].value_counts()
    for entry in splits.eval_manifest:
        have = int(counts.get(entry["benchmark"], 0))
        if have != entry.get("n", 0):
            raise ValueError(
                f"eval_in: {entry['benchmark']!r} has {have} questions in {eval_in}, but the data "
                f"config samples {entry.get('n', 0)}; rerun download_data"
            )
        if entry["status"] != "ok":
            log.warning("SKIPPED eval benchmark %r: %s", entry["benchmark"], entry["reason"])
    manifest = {"source": source_name, "benchmarks": splits.eval_manifest}
    write_json_atomic(manifest, out)
    return manifest


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
    run_key: str = "profile_pool",
    pool_cfg: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Measure the pool of ``pool_cfg`` (default: ``cfg``) on the profiling questions."""
    from routerr1.data import read_records
    from routerr1.pool.profile import profile_pool
    from routerr1.tracking import log_json_artifact, tracked_run

    pool_cfg = pool_cfg or cfg
    records = read_records(profile_in)
    tags = {"stage": "profile", "pool_hash": pool_hash(pool_cfg)}
    with _pool(pool_cfg, models_root) as pool, tracked_run(cfg, run_key, run_key, tags):
        summary, calls = profile_pool(
            pool,
            [r.question for r in records],
            [r.golden_answers for r in records],
            batch_size=eval_config(cfg).batch_size,
        )
        for row in summary.to_dict("records"):
            for k in ("latency_p50_s", "latency_p95_s", "tokens_per_s", "em", "f1", "mean_cost"):
                mlflow.log_metric(f"{row['name']}.{k}", row[k])
        log_json_artifact(price_table(pool_cfg), "price_table.json")
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


def load_descriptors(path: str | Path):
    return [descriptor_from_mapping(d) for d in json.loads(Path(path).read_text())]


# -- warm start -------------------------------------------------------------------------------
def pool_answers(
    cfg: Mapping[str, Any], records_in: str, out: str, models_root: Path = MODELS_ROOT
) -> pd.DataFrame:
    """Every pool model's direct answer to every training question (the warm start's source)."""
    from routerr1.data import read_records
    from routerr1.pool.profile import profile_pool

    records = read_records(records_in)
    with _pool(cfg, models_root) as pool:
        _, calls = profile_pool(
            pool,
            [r.question for r in records],
            [r.golden_answers for r in records],
            batch_size=eval_config(cfg).batch_size,
        )
    write_parquet_atomic(calls, out)
    return calls


def warmstart(
    cfg: Mapping[str, Any],
    train_in: str,
    answers_in: str,
    descriptors_in: str,
    heldout_in: str,
    policy_dir: str,
    model_out: str,
    report_out: str,
    models_root: Path = MODELS_ROOT,
    alpha: float | None = None,
) -> dict[str, Any]:
    """SFT the policy on well-formed trajectories; report format compliance before and after.

    With ``warm_start.routing: reward`` the trajectories route by the GRPO reward at ``alpha``
    (required then), and the run is tracked per alpha.
    """
    import random

    from routerr1.data import read_records
    from routerr1.parse import ModelNameResolver
    from routerr1.precision import resolve_precision
    from routerr1.rollout import RolloutEngine
    from routerr1.tracking import log_json_artifact, tracked_run
    from routerr1.train import load_policy
    from routerr1.warmstart import build_examples, format_compliance, warm_start

    wcfg, rcfg, tcfg = warm_start_config(cfg), rollout_config(cfg), train_config(cfg)
    per_alpha = wcfg.routing in PER_ALPHA_ROUTING
    if per_alpha and alpha is None:
        raise ValueError(
            f"warm_start.routing: {wcfg.routing} routes per alpha; pass the alpha to warm for"
        )
    routing = (alpha, tcfg.cost_on_correct_only) if per_alpha else None
    key, tags = "warm_start", {"stage": "warm_start"}
    if routing is not None:
        key, tags = f"warm_start/alpha~{alpha!r}", {**tags, "alpha": str(alpha)}
    descriptors = load_descriptors(descriptors_in)
    pool = _pool(cfg, models_root)
    resolver = ModelNameResolver(pool.names, pool.aliases, rcfg.model_match)
    heldout = read_records(heldout_in)
    random.Random(cfg["seed"]).shuffle(heldout)
    heldout = heldout[: wcfg.n_eval]

    def compliance(folder: Path) -> dict[str, dict[str, float]]:
        model, tok = load_policy(folder, "float32")
        engine = RolloutEngine(
            tok,
            pool,
            rcfg,
            batch_size=eval_config(cfg).batch_size,
            resolver=resolver,
            show_progress=True,
        )
        prompts = router_prompts(
            tok, [r.question for r in heldout], descriptors, rcfg.compressed_descriptors
        )
        out = {}
        for mode in ("greedy", "sampled"):
            log.info("format compliance of %s: %d %s rollouts", folder, len(prompts), mode)
            trajs = engine.run(model, prompts, greedy=mode == "greedy")
            out[mode] = format_compliance(trajs, resolver)
            log.info("  %s: %s", mode, out[mode])
        return out

    base = _loadable(policy_dir)
    with pool, tracked_run(cfg, key, key, tags):
        mlflow.log_params({f"warm_start.{k}": v for k, v in wcfg.__dict__.items()})
        _, tok = load_policy(base, "float32")
        examples = build_examples(
            read_records(train_in),
            pd.read_parquet(answers_in),
            pool_entries(cfg),
            descriptors,
            tok,
            rcfg,
            seed=cfg["seed"],
            limit=wcfg.max_examples,
            answer=wcfg.answer,
            routing=routing,
            routing_rule=wcfg.routing,
        )
        before = compliance(base)
        # a local pool holds GBs of weights that SFT does not need (OOM with a 0.5B policy
        # on 24 GB); the compliance check after reloads them
        pool.release()
        gc.collect()
        sft = warm_start(
            base,
            examples,
            model_out,
            wcfg,
            seed=cfg["seed"],
            bf16=resolve_precision(tcfg.precision).value == "bf16",
            lora_r=tcfg.lora_r,
            lora_alpha=tcfg.lora_alpha,
        )
        after = compliance(Path(model_out))
        report = {
            "before": before,
            "after": after,
            "sft": sft,
            "targets": pd.Series([e["target_model"] for e in examples]).value_counts().to_dict(),
            "benchmarks": pd.Series([e["benchmark"] for e in examples]).value_counts().to_dict(),
        }
        for when, modes in (("before", before), ("after", after)):
            for mode, vals in modes.items():
                mlflow.log_metrics({f"{when}.{mode}.{k}": v for k, v in vals.items()})
        log_json_artifact(report, "warm_start.json")
        write_json_atomic(report, report_out)
    return report


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
    track: bool = True,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train one router; ``track=False`` (ranks other than 0 under accelerate) skips MLflow.

    ``seed``: the training seed (``train.seeds``); None is the top-level seed, whose run keeps
    the one-seed MLflow key ``train/alpha~A`` (other seeds add ``/seed~S``).
    """
    from routerr1.data import read_records
    from routerr1.tracking import flat_params, log_json_artifact, tracked_run
    from routerr1.train import step_metrics, train_router
    from routerr1.vllm_rollout import vllm_config

    tcfg, rcfg = train_config(cfg), rollout_config(cfg)
    seed = int(cfg["seed"]) if seed is None else int(seed)

    def run() -> dict[str, Any]:
        with _pool(cfg, models_root) as pool:
            return train_router(
                policy_dir=_loadable(policy_dir),
                policy_dtype=cfg["policy"]["dtype"],
                records=read_records(train_in),
                descriptors=load_descriptors(descriptors_in),
                pool=pool,
                alpha=alpha,
                train_cfg=tcfg,
                rollout_cfg=rcfg,
                checkpoint_dir=checkpoints,
                model_out=model_out,
                seed=seed,
                mlflow_active=track,
                vllm=vllm_config(cfg),
            )

    if not track:
        return run()
    level = seed_level(cfg, seed)
    key = f"train/alpha~{alpha!r}{level}"
    name = f"train alpha={alpha}" + (f" seed={seed}" if level else "")
    tags = {"stage": "train", "alpha": str(alpha), "seed": str(seed)}
    with tracked_run(cfg, key, name, tags):
        mlflow.log_params(
            {
                **flat_params("train", cfg["train"]),
                **flat_params("rollout", cfg["rollout"]),
                "alpha": alpha,
                "seed": seed,
                "policy": cfg["policy"]["model"],
            }
        )
        log_json_artifact(price_table(cfg), "price_table.json")
        summary = run()
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
    mlflow.set_tag("benchmarks", ",".join(sorted(rows["benchmark"].unique())))


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
    add_columns: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Evaluate a router; ``seed``: the training seed of a router trained with a seed other
    than the top-level one (written as a ``seed`` column; its run key adds ``/seed~S``)."""
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
        "pool_hash": pool_hash(cfg),
    }
    if seed is not None:
        tags["seed"] = str(seed)
    decoding = ecfg.decoding(cfg["seed"])
    # a killed evaluation resumes from its finished batches (if made with the same decoding)
    store = ChunkStore(out, settings=decoding)
    pool = _pool(cfg, models_root)
    level = seed_level(cfg, seed)
    with pool, tracked_run(cfg, f"eval/{method}{level}", f"eval {method}{level}", tags):
        mlflow.log_params({f"eval.{k}": v for k, v in decoding.items()})
        model, tok = load_policy(_loadable(policy_dir), cfg["policy"]["dtype"])
        rows = run_router(
            model=model,
            tokenizer=tok,
            pool=pool,
            descriptors=load_descriptors(descriptors_in),
            records=read_records(eval_in),
            rollout_cfg=rollout_config(cfg),
            method=method,
            family=family,
            alpha=alpha,
            batch_size=ecfg.batch_size,
            temperature=ecfg.temperature,
            top_p=ecfg.top_p,
            sample_seed=decoding.get("sample_seed", cfg["seed"]),
            store=store,
        )
        if add_columns is not None:
            rows = add_columns(rows)
        if seed is not None:
            rows = rows.assign(seed=int(seed))
        _log_eval(rows)
        log_json_artifact(price_table(cfg), "price_table.json")
        write_parquet_atomic(rows, out)
    store.clear()
    return rows


def evaluate_single(
    cfg: Mapping[str, Any], eval_in: str, name: str, out: str, models_root: Path = MODELS_ROOT
) -> pd.DataFrame:
    from routerr1.data import read_records
    from routerr1.evaluate import evaluate_single as run_single
    from routerr1.tracking import log_json_artifact, tracked_run

    method = f"single:{name}"
    store = ChunkStore(out)
    tags = {"stage": "evaluate", "method": method, "family": "single", "pool_hash": pool_hash(cfg)}
    pool = _pool(cfg, models_root)
    with pool, tracked_run(cfg, f"eval/{method}", f"eval {method}", tags):
        rows = run_single(
            pool,
            name,
            read_records(eval_in),
            batch_size=eval_config(cfg).batch_size,
            store=store,
        )
        _log_eval(rows)
        log_json_artifact(price_table(cfg), "price_table.json")
        write_parquet_atomic(rows, out)
    store.clear()
    return rows


# -- baselines ---------------------------------------------------------------------------------
# Oracle, largest, random and KNN reuse the single-model answers (no new pool inference); the
# unseen-model evaluation reruns each trained router with the pool extended by pool_unseen.
def pool_hash(cfg: Mapping[str, Any]) -> str:
    """sha256 of the pool's (name, model, prices, and prompt and extractor where not the
    default), sorted by name: equal pools, equal hash."""
    import hashlib

    def fields(e) -> dict[str, Any]:
        out = {"name": e.name, "model": e.model, "price_in": e.price_in, "price_out": e.price_out}
        if (e.prompt, e.extract) != ("short", None):  # older pools keep their hash
            out.update(prompt=e.prompt, extract=e.extract)
        return out

    entries = sorted((fields(e) for e in pool_entries(cfg)), key=lambda d: d["name"])
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def _read_rows(paths: list[str]) -> pd.DataFrame:
    if not paths:
        raise ValueError("single_in: no single-model result files")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def _record_baseline(
    cfg: Mapping[str, Any], rows: pd.DataFrame, out: str, params: Mapping[str, Any]
) -> None:
    """Log a derived baseline as an evaluation run (same metrics and tags) and write its rows."""
    from routerr1.baselines import routed_model
    from routerr1.tracking import log_json_artifact, tracked_run

    method, family = str(rows["method"].iloc[0]), str(rows["family"].iloc[0])
    tags = {
        "stage": "evaluate",
        "method": method,
        "family": family,
        "alpha": "",
        "pool_hash": pool_hash(cfg),
    }
    with tracked_run(cfg, f"eval/{method}", f"eval {method}", tags):
        if params:
            mlflow.log_params(dict(params))
        _log_eval(rows)
        # which model each question went to, e.g. how often the oracle gets away with the cheap one
        share = rows["trajectory"].map(routed_model).value_counts(normalize=True)
        mlflow.log_metrics({f"route_share.{m}": float(v) for m, v in share.items()})
        log_json_artifact(price_table(cfg), "price_table.json")
        write_parquet_atomic(rows, out)


def derived_baseline(
    cfg: Mapping[str, Any], kind: str, single_in: list[str], out: str
) -> pd.DataFrame:
    """The oracle, largest-model or random-router rows from the single-model results."""
    from routerr1 import baselines as bl

    single = _read_rows(single_in)
    params: dict[str, Any] = {}
    if kind == "oracle":
        prices = {e.name: (e.price_in, e.price_out) for e in pool_entries(cfg)}
        rows = bl.oracle_rows(single, prices)
    elif kind == "largest":
        params["largest"] = name = bl.largest_pool_name(cfg["pool"])
        rows = bl.largest_rows(single, name)
    elif kind == "random":
        params["seed"] = cfg["seed"]
        rows = bl.random_rows(single, cfg["seed"])
    else:
        raise ValueError(f"kind: unknown derived baseline {kind!r}; expected oracle|largest|random")
    _record_baseline(cfg, rows, out, params)
    return rows


def fetch_embedder(cfg: Mapping[str, Any], dest: str) -> Path:
    from routerr1.baselines import fetch_embedder as fetch

    return fetch(cfg["eval"]["knn"]["embedder"], dest)


def knn_baseline(
    cfg: Mapping[str, Any],
    single_in: list[str],
    calls_in: str | list[str],
    embedder_dir: str,
    out: str,
) -> pd.DataFrame:
    """KNN router over the pool's direct answers to known questions (``calls_in``: the training
    questions' pool_answers and/or the profiling calls), answering with the single-model rows."""
    from routerr1.baselines import MiniLMEmbedder, knn_rows

    knn = cfg["eval"]["knn"]
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
    _record_baseline(cfg, rows, out, params)
    return rows


def profile_unseen(
    cfg: Mapping[str, Any],
    profile_in: str,
    profile_out: str,
    calls_out: str,
    models_root: Path = MODELS_ROOT,
) -> pd.DataFrame:
    """Profile the pool_unseen models on the same questions as the training pool."""
    from routerr1.config import extended_pool_config

    extended_pool_config(cfg)  # refuses an empty pool_unseen before any model loads
    unseen_cfg = {**cfg, "pool": list(cfg["pool_unseen"])}
    return profile(
        cfg,
        profile_in,
        profile_out,
        calls_out,
        models_root,
        run_key="profile_pool_unseen",
        pool_cfg=unseen_cfg,
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
    cfg: Mapping[str, Any],
    eval_in: str,
    descriptors_in: str,
    policy_dir: str,
    out: str,
    method: str,
    alpha: float,
    models_root: Path = MODELS_ROOT,
    seed: int | None = None,
) -> pd.DataFrame:
    """A trained router with the pool extended by pool_unseen; rows add ``unseen_calls``."""
    from routerr1.baselines import unseen_calls
    from routerr1.config import extended_pool_config

    ext = extended_pool_config(cfg)
    names = [p["name"] for p in cfg["pool_unseen"]]
    return evaluate_router(
        ext,
        eval_in,
        descriptors_in,
        policy_dir,
        out,
        method=method,
        family="router-r1-unseen",
        alpha=alpha,
        models_root=models_root,
        add_columns=lambda rows: rows.assign(
            unseen_calls=unseen_calls(list(rows["trajectory"]), ext["pool"], names)
        ),
        seed=seed,
    )
