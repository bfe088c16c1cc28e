"""Evaluate routers and baselines; every method writes the same per-question rows."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
from tqdm.auto import tqdm

from routerr1.config import RolloutConfig
from routerr1.data import QARecord
from routerr1.metrics import exact_match, f1_score
from routerr1.pool.base import Pool
from routerr1.prompt import Descriptor, router_prompts
from routerr1.rollout import RolloutEngine

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


def _row(method, family, alpha, rec: QARecord, prediction, **extra) -> dict:
    return {
        "method": method,
        "family": family,
        "alpha": alpha,
        "benchmark": rec.benchmark,
        "qid": str(rec.id),
        "question": rec.question,
        "golden_answers": list(rec.golden_answers),
        "prediction": prediction,
        "em": exact_match(prediction, rec.golden_answers),
        "f1": f1_score(prediction, rec.golden_answers),
        **extra,
    }


def evaluate_single(
    pool: Pool, model_name: str, records: Sequence[QARecord], batch_size: int = 16
) -> pd.DataFrame:
    """A pool model alone, answering every question directly (one call each)."""
    rows = []
    for start in tqdm(range(0, len(records), batch_size), desc=f"eval {model_name}"):
        chunk = records[start : start + batch_size]
        for rec, call in zip(
            chunk, pool.call([(model_name, r.question) for r in chunk]), strict=True
        ):
            rows.append(
                _row(
                    f"single:{model_name}",
                    "single",
                    None,
                    rec,
                    call.text,
                    pool_calls=1,
                    invalid_actions=0,
                    pool_errors=int(call.error is not None),
                    in_tokens=call.in_tokens,
                    out_tokens=call.out_tokens,
                    cost=call.cost,
                    latency_s=call.latency_s,
                    trajectory="",
                )
            )
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def evaluate_router(
    *,
    model,
    tokenizer,
    pool: Pool,
    descriptors: Sequence[Descriptor],
    records: Sequence[QARecord],
    rollout_cfg: RolloutConfig,
    method: str,
    family: str,
    alpha: float | None,
    batch_size: int = 16,
    greedy: bool = True,
) -> pd.DataFrame:
    """Run the multi-turn router over ``records``; the final <answer> is the prediction."""
    engine = RolloutEngine(tokenizer, pool, rollout_cfg, batch_size=batch_size)
    rows = []
    for start in tqdm(range(0, len(records), batch_size), desc=f"eval {method}"):
        chunk = records[start : start + batch_size]
        prompts = router_prompts(
            tokenizer, [r.question for r in chunk], descriptors, rollout_cfg.compressed_descriptors
        )
        t0 = time.perf_counter()
        trajs = engine.run(model, prompts, greedy=greedy)
        policy_share = (time.perf_counter() - t0) / len(chunk)
        for rec, tr in zip(chunk, trajs, strict=True):
            rows.append(
                _row(
                    method,
                    family,
                    alpha,
                    rec,
                    tr.answer,
                    pool_calls=len(tr.calls),
                    invalid_actions=tr.invalid_actions,
                    pool_errors=tr.pool_errors,
                    in_tokens=tr.in_tokens,
                    out_tokens=tr.out_tokens,
                    cost=tr.cost,
                    latency_s=policy_share,
                    trajectory=tr.text,
                )
            )
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
