"""Stages of ``workflow/rules/train.smk``: the pool's answers to the training questions, the
format warm start, and GRPO training of one router."""

from __future__ import annotations

import gc
import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd

from routerr1.config import PER_ALPHA_ROUTING, RunConfig
from routerr1.io import write_json_atomic, write_parquet_atomic
from routerr1.prompt import router_prompts
from routerr1.stages.common import load_descriptors, loadable, open_pool, pool_stage

if TYPE_CHECKING:
    from routerr1.data import QARecord

log = logging.getLogger(__name__)

Models = Iterable[str | Path]  # the fetched model folders (the rule's input.models)


def pool_answers(run: RunConfig, records_in: str, out: str, models: Models) -> pd.DataFrame:
    """Every pool model's direct answer to every training question (the warm start's source)."""
    from routerr1.data import read_records
    from routerr1.pool.profile import profile_pool

    records = read_records(records_in)
    with open_pool(run, models) as pool:
        _, calls = profile_pool(
            pool,
            [r.question for r in records],
            [r.golden_answers for r in records],
            batch_size=run.eval.batch_size,
        )
    write_parquet_atomic(calls, out)
    return calls


# -- warm start -------------------------------------------------------------------------------
def _warm_start_run(run: RunConfig, alpha: float | None):
    """The reward routing (alpha, cost_on_correct_only) or None, the run key and its tags."""
    rule = run.warm_start.routing
    if rule not in PER_ALPHA_ROUTING:
        return None, "warm_start", {"stage": "warm_start"}
    if alpha is None:
        raise ValueError(f"warm_start.routing: {rule} routes per alpha; pass the alpha to warm for")
    tags = {"stage": "warm_start", "alpha": str(alpha)}
    return (alpha, run.train.cost_on_correct_only), f"warm_start/alpha~{alpha!r}", tags


def _heldout(run: RunConfig, heldout_in: str):
    """The seeded sample of held-out questions format compliance is measured on."""
    from routerr1.data import read_records

    heldout = read_records(heldout_in)
    random.Random(run.seed).shuffle(heldout)
    return heldout[: run.warm_start.n_eval]


def _format_compliance(
    run: RunConfig, folder: Path, pool, resolver, heldout: Sequence, descriptors: Sequence
) -> dict[str, dict[str, float]]:
    """Greedy and sampled rollouts of the policy in ``folder``: how many are well formed."""
    from routerr1.rollout import RolloutEngine
    from routerr1.train import load_policy
    from routerr1.warmstart import format_compliance

    model, tok = load_policy(folder, "float32")
    engine = RolloutEngine(
        tok,
        pool,
        run.rollout,
        batch_size=run.eval.batch_size,
        resolver=resolver,
        show_progress=True,
        linear_kernel=run.linear_kernel,
    )
    prompts = router_prompts(
        tok, [r.question for r in heldout], descriptors, run.rollout.compressed_descriptors
    )
    out = {}
    for mode in ("greedy", "sampled"):
        log.info("format compliance of %s: %d %s rollouts", folder, len(prompts), mode)
        trajs = engine.run(model, prompts, greedy=mode == "greedy")
        out[mode] = format_compliance(trajs, resolver)
        log.info("  %s: %s", mode, out[mode])
    return out


def _warm_start_report(before, after, sft, examples) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "sft": sft,
        "targets": pd.Series([e["target_model"] for e in examples]).value_counts().to_dict(),
        "benchmarks": pd.Series([e["benchmark"] for e in examples]).value_counts().to_dict(),
    }


def warmstart(
    run: RunConfig,
    train_in: str,
    answers_in: str,
    descriptors_in: str,
    heldout_in: str,
    policy_dir: str,
    model_out: str,
    report_out: str,
    models: Models,
    alpha: float | None = None,
) -> dict[str, Any]:
    """SFT the policy on well-formed trajectories; report format compliance before (unless
    ``warm_start.compliance_before`` is off: the report's ``before`` is then None) and after.

    With ``warm_start.routing: reward`` the trajectories route by the GRPO reward at ``alpha``
    (required then), and the run is tracked per alpha.
    """
    from routerr1.data import read_records
    from routerr1.parse import ModelNameResolver
    from routerr1.precision import resolve_precision
    from routerr1.tracking import log_json_artifact
    from routerr1.train import load_policy
    from routerr1.warmstart import build_examples, warm_start

    wcfg, tcfg = run.warm_start, run.train
    routing, key, tags = _warm_start_run(run, alpha)
    descriptors = load_descriptors(descriptors_in)
    pool = open_pool(run, models)
    resolver = ModelNameResolver(pool.names, pool.aliases, run.rollout.model_match)
    heldout = _heldout(run, heldout_in)

    def compliance(folder: Path) -> dict[str, dict[str, float]]:
        return _format_compliance(run, folder, pool, resolver, heldout, descriptors)

    base = loadable(policy_dir)
    with pool_stage(run, key, tags, pool=pool):
        mlflow.log_params({f"warm_start.{k}": v for k, v in wcfg.__dict__.items()})
        _, tok = load_policy(base, "float32")
        examples = build_examples(
            read_records(train_in),
            pd.read_parquet(answers_in),
            list(run.pool),
            descriptors,
            tok,
            run.rollout,
            seed=run.seed,
            limit=wcfg.max_examples,
            answer=wcfg.answer,
            routing=routing,
            routing_rule=wcfg.routing,
            explore=wcfg.explore,
            question_kinds=wcfg.question_kinds,
        )
        before = compliance(base) if wcfg.compliance_before else None
        # a local pool holds GBs of weights that SFT does not need (OOM with a 0.5B policy
        # on 24 GB); the compliance check after reloads them
        pool.release()
        gc.collect()
        sft = warm_start(
            base,
            examples,
            model_out,
            wcfg,
            seed=run.seed,
            bf16=resolve_precision(tcfg.precision).value == "bf16",
            lora_r=tcfg.lora_r,
            lora_alpha=tcfg.lora_alpha,
            gradient_checkpointing=tcfg.gradient_checkpointing,
        )
        after = compliance(Path(model_out))
        report = _warm_start_report(before, after, sft, examples)
        for when, modes in (("before", before), ("after", after)):
            for mode, vals in (modes or {}).items():
                mlflow.log_metrics({f"{when}.{mode}.{k}": v for k, v in vals.items()})
        log_json_artifact(report, "warm_start.json")
        write_json_atomic(report, report_out)
    return report


# -- train -------------------------------------------------------------------------------------
def training_questions(run: RunConfig, train_in: str, answers_in: str | None) -> list[QARecord]:
    """The questions GRPO samples: all of ``train_in``, or those ``train.prompt_filter`` keeps."""
    from routerr1.data import read_records
    from routerr1.train import routes_differ

    records = read_records(train_in)
    if run.train.prompt_filter == "none":
        return records
    if answers_in is None:
        raise ValueError(
            f"train.prompt_filter: {run.train.prompt_filter} needs the pool answers to the "
            "training questions (results/warmstart/pool_answers.parquet) as the job's input"
        )
    kept = routes_differ(records, pd.read_parquet(answers_in), run.train.outcome)
    benchmarks = sorted({r.benchmark for r in records})
    log.info(
        "train.prompt_filter %s: %d of %d training questions (%s)",
        run.train.prompt_filter,
        len(kept),
        len(records),
        ", ".join(
            f"{b} {sum(r.benchmark == b for r in kept)}/{sum(r.benchmark == b for r in records)}"
            for b in benchmarks
        ),
    )
    return kept


def train(
    run: RunConfig,
    alpha: float,
    train_in: str,
    descriptors_in: str,
    policy_dir: str,
    checkpoints: str,
    model_out: str,
    models: Models,
    track: bool = True,
    seed: int | None = None,
    answers_in: str | None = None,
) -> dict[str, Any]:
    """Train one router; ``track=False`` (ranks other than 0 under accelerate) skips MLflow.

    ``seed``: the training seed (``train.seeds``); None is the top-level seed, whose run keeps
    the one-seed MLflow key ``train/alpha~A`` (other seeds add ``/seed~S``). ``answers_in``:
    the pool answers ``train.prompt_filter`` reads.
    """
    from routerr1.tracking import flat_params, log_json_artifact
    from routerr1.train import step_metrics, train_router

    seed = run.seed if seed is None else int(seed)
    models = list(models)
    records = training_questions(run, train_in, answers_in)

    def train_one() -> dict[str, Any]:
        with open_pool(run, models) as pool:
            return train_router(
                policy_dir=loadable(policy_dir),
                policy_dtype=run.policy_dtype,
                records=records,
                descriptors=load_descriptors(descriptors_in),
                pool=pool,
                alpha=alpha,
                train_cfg=run.train,
                rollout_cfg=run.rollout,
                checkpoint_dir=checkpoints,
                model_out=model_out,
                seed=seed,
                mlflow_active=track,
                vllm=run.vllm,
                linear_kernel=run.linear_kernel,
            )

    if not track:
        return train_one()
    level = run.seed_level(seed)
    key = f"train/alpha~{alpha!r}{level}"
    name = f"train alpha={alpha}" + (f" seed={seed}" if level else "")
    tags = {"stage": "train", "alpha": str(alpha), "seed": str(seed)}
    with pool_stage(run, key, tags, name=name) as stage:
        mlflow.log_params(
            {
                **flat_params("train", run.raw["train"]),
                **flat_params("rollout", run.raw["rollout"]),
                "alpha": alpha,
                "seed": seed,
                "policy": run.policy_model,
                "train_questions": len(records),
            }
        )
        stage.log_price_table()
        summary = train_one()
        final = step_metrics(summary["history"])
        mlflow.log_metrics({f"final/{k.replace('/', '.')}": v for k, v in final.items()})
        log_json_artifact(summary, "train_summary.json")
    return summary
