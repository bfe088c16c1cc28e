"""Evaluate routers and baselines; every method writes the same per-question rows."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from routerr1.config import RolloutConfig
from routerr1.data import QARecord
from routerr1.io import write_json_atomic, write_parquet_atomic
from routerr1.methods import ROUTER_COLUMNS, ROW_COLUMNS
from routerr1.metrics import exact_match, f1_score
from routerr1.pool.base import Pool
from routerr1.prompt import Descriptor, router_prompts
from routerr1.rollout import CallBudget, RolloutEngine, StepEvent, Trajectory

log = logging.getLogger(__name__)


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


class ChunkStore:
    """Finished batches of an evaluation, each written atomically beside the final output.

    A killed evaluation keeps every batch it finished; the rerun skips those questions. With a
    ``settings`` mapping (e.g. the decoding), chunks written under other settings are dropped
    rather than mixed into the result.
    """

    SETTINGS = "settings.json"

    def __init__(self, final_path: str | Path, settings: dict | None = None) -> None:
        self.dir = Path(final_path).with_name(Path(final_path).name + ".chunks")
        self.settings = settings

    def _settings_match(self) -> bool:
        path = self.dir / self.SETTINGS
        stored = json.loads(path.read_text()) if path.is_file() else None
        return stored == (None if self.settings is None else json.loads(json.dumps(self.settings)))

    def load(self, columns: Sequence[str] = ROW_COLUMNS) -> pd.DataFrame:
        if self.dir.is_dir() and not self._settings_match():
            log.warning("%s: finished batches were made with other settings; redoing", self.dir)
            self.clear()
        parts = sorted(self.dir.glob("chunk-*.parquet")) if self.dir.is_dir() else []
        if not parts:
            return pd.DataFrame(columns=list(columns))
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    def add(self, rows: pd.DataFrame) -> None:
        n = len(list(self.dir.glob("chunk-*.parquet"))) if self.dir.is_dir() else 0
        if n == 0 and self.settings is not None:
            write_json_atomic(self.settings, self.dir / self.SETTINGS)
        write_parquet_atomic(rows, self.dir / f"chunk-{n:05d}.parquet")

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def run_in_batches(
    records: Sequence[QARecord],
    batch_size: int,
    answer_batch: Callable[[Sequence[QARecord]], list[dict]],
    desc: str,
    store: ChunkStore | None = None,
    columns: Sequence[str] = ROW_COLUMNS,
) -> pd.DataFrame:
    """Rows for every record, in record order; with a store, finished batches are reused.

    ``columns``: what each row holds (`ROW_COLUMNS`, or `ROUTER_COLUMNS` for routers).
    """
    columns = list(columns)
    done = store.load(columns) if store is not None else pd.DataFrame(columns=columns)
    seen = set(zip(done["benchmark"], done["qid"], strict=True))
    todo = [r for r in records if (r.benchmark, str(r.id)) not in seen]
    if seen:
        log.info("%s: resuming, %d of %d questions already done", desc, len(seen), len(records))
    parts = [done] if len(done) else []
    for start in tqdm(range(0, len(todo), batch_size), desc=desc):
        rows = pd.DataFrame(answer_batch(todo[start : start + batch_size]), columns=columns)
        if store is not None:
            store.add(rows)
        parts.append(rows)
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)
    order = {(r.benchmark, str(r.id)): i for i, r in enumerate(records)}
    out = out[[k in order for k in zip(out["benchmark"], out["qid"], strict=True)]]
    keys = [order[k] for k in zip(out["benchmark"], out["qid"], strict=True)]
    return out.iloc[sorted(range(len(out)), key=keys.__getitem__)].reset_index(drop=True)


def evaluate_single(
    pool: Pool,
    model_name: str,
    records: Sequence[QARecord],
    batch_size: int = 16,
    store: ChunkStore | None = None,
) -> pd.DataFrame:
    """A pool model alone, answering every question directly (one call each)."""

    def answer_batch(chunk: Sequence[QARecord]) -> list[dict]:
        calls = pool.call([(model_name, r.question) for r in chunk])
        return [
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
            for rec, call in zip(chunk, calls, strict=True)
        ]

    return run_in_batches(records, batch_size, answer_batch, f"eval {model_name}", store)


def eval_rollout_config(
    rollout_cfg: RolloutConfig, temperature: float, top_p: float
) -> tuple[RolloutConfig, bool]:
    """The rollout settings evaluation decodes with, and whether that is greedy.

    Temperature 0 is greedy; otherwise the training rollout settings with the evaluation's
    temperature and top_p (the engine samples with ``cfg.temperature`` / ``cfg.top_p``).
    """
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature!r}")
    if temperature == 0:
        return rollout_cfg, True
    return dataclasses.replace(rollout_cfg, temperature=temperature, top_p=top_p), False


def batch_seed(seed: int, chunk: Sequence[QARecord]) -> int:
    """Sampling seed of one batch: depends on the seed and the batch's questions only, so a
    rerun (or a resumed run with the same batches) draws the same samples."""
    keys = "\x1f".join(f"{r.benchmark}/{r.id}" for r in chunk)
    return zlib.crc32(f"{seed}\x1e{keys}".encode())


def route_questions(
    engine: RolloutEngine,
    model,
    questions: Sequence[str],
    descriptors: Sequence[Descriptor],
    rollout_cfg: RolloutConfig,
    greedy: bool,
    budgets: Sequence[CallBudget | None] | None = None,
    on_step: Callable[[int, StepEvent], None] | None = None,
) -> list[Trajectory]:
    """The router on ``questions``: its prompts, then one batched multi-turn rollout.

    Evaluation and ``routerr1 serve`` both answer through here, so a served greedy answer is
    the evaluated one (same prompt, same engine settings, same pool accounting).
    """
    prompts = router_prompts(engine.tok, questions, descriptors, rollout_cfg.compressed_descriptors)
    return engine.run(model, prompts, greedy=greedy, budgets=budgets, on_step=on_step)


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
    temperature: float = 0.0,
    top_p: float = 1.0,
    sample_seed: int = 0,
    store: ChunkStore | None = None,
    linear_kernel: str = "auto",
) -> pd.DataFrame:
    """Run the multi-turn router over ``records``; the final <answer> is the prediction.

    Greedy at ``temperature`` 0 (the default); otherwise each batch samples with
    ``temperature`` / ``top_p`` after seeding torch with ``batch_seed(sample_seed, batch)``.
    Every record is evaluated: the last batch may be smaller than ``batch_size``.
    """
    import torch

    decode_cfg, greedy = eval_rollout_config(rollout_cfg, temperature, top_p)
    engine = RolloutEngine(
        tokenizer, pool, decode_cfg, batch_size=batch_size, linear_kernel=linear_kernel
    )

    def answer_batch(chunk: Sequence[QARecord]) -> list[dict]:
        if not greedy:
            torch.manual_seed(batch_seed(sample_seed, chunk))
        t0 = time.perf_counter()
        questions = [r.question for r in chunk]
        trajs = route_questions(engine, model, questions, descriptors, rollout_cfg, greedy)
        # per-question latency: the batch's wall time (policy and pool calls) shared evenly
        share = (time.perf_counter() - t0) / len(chunk)
        return [
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
                latency_s=share,
                trajectory=tr.text,
                call_models=[c.model for c in tr.calls],
                call_replies=[c.text if c.error is None else "" for c in tr.calls],
            )
            for rec, tr in zip(chunk, trajs, strict=True)
        ]

    return run_in_batches(
        records, batch_size, answer_batch, f"eval {method}", store, columns=ROUTER_COLUMNS
    )
