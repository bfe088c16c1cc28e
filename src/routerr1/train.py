"""GRPO training of the router with TRL's GRPOTrainer and our multi-turn ``rollout_func``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from routerr1.config import RolloutConfig, TrainConfig
from routerr1.data import QARecord
from routerr1.io import write_json_atomic
from routerr1.parse import ModelNameResolver
from routerr1.pool.base import Pool
from routerr1.prompt import Descriptor, chat_prompt, render_router_prompt
from routerr1.reward import CostNormalizer, score_trajectory
from routerr1.rollout import RolloutEngine

log = logging.getLogger(__name__)


def load_policy(path: str | Path, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype, "auto")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    return model, tok


def router_dataset(
    records: Sequence[QARecord], descriptors: Sequence[Descriptor], tokenizer, compressed: bool
) -> Dataset:
    return Dataset.from_list(
        [
            {
                "prompt": chat_prompt(
                    tokenizer, render_router_prompt(r.question, descriptors, compressed)
                ),
                "golden_answers": list(r.golden_answers),
                "qid": f"{r.benchmark}/{r.id}",
            }
            for r in records
        ]
    )


class RouterReward:
    """One reward: format gate, outcome, and cost normalized over this run's training window."""

    def __init__(self, alpha: float, resolver: ModelNameResolver, cfg: TrainConfig) -> None:
        self.alpha = alpha
        self.resolver = resolver
        self.cfg = cfg
        self.normalizer = CostNormalizer(window=cfg.cost_window)  # train-only buffer
        self.__name__ = "router_reward"

    def __call__(
        self,
        prompts,
        completions,
        golden_answers,
        pool_cost,
        injected,
        pool_calls,
        invalid_actions,
        pool_errors,
        log_metric=None,
        **_: Any,
    ) -> list[float]:
        self.normalizer.observe(pool_cost)
        parts = [
            score_trajectory(
                text,
                golds,
                cost,
                self.alpha,
                self.resolver,
                self.normalizer,
                self.cfg.cost_on_correct_only,
                outcome=self.cfg.outcome,
                injected_information=inj,
            )
            for text, golds, cost, inj in zip(
                completions, golden_answers, pool_cost, injected, strict=True
            )
        ]
        if log_metric is not None:
            n = len(parts)
            log_metric("router/format_ok", sum(p.format_ok for p in parts) / n)
            log_metric("router/em", sum(p.outcome_em for p in parts) / n)
            log_metric("router/f1", sum(p.outcome_f1 for p in parts) / n)
            log_metric("router/cost", sum(pool_cost) / n)
            log_metric("router/cost_norm", sum(p.cost_norm for p in parts) / n)
            log_metric("router/pool_calls", sum(pool_calls) / n)
            log_metric(
                "router/invalid_action_rate",
                sum(invalid_actions) / max(1, sum(pool_calls) + sum(invalid_actions)),
            )
            log_metric("router/pool_errors", float(sum(pool_errors)))
        return [p.total for p in parts]


def make_rollout_func(engine: RolloutEngine):
    """Adapt the engine to TRL 1.16's ``rollout_func(prompts, trainer)``.

    Prompts arrive already repeated ``num_generations`` times by TRL's sampler.
    """

    def rollout_func(prompts: list[str], trainer) -> dict[str, list]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            trajs = engine.run(model, prompts, greedy=False)
        finally:
            model.train(was_training)
        return {
            "prompt_ids": [t.prompt_ids for t in trajs],
            "completion_ids": [t.completion_ids for t in trajs],
            "logprobs": None,
            "env_mask": [t.env_mask for t in trajs],
            "pool_cost": [t.cost for t in trajs],
            "injected": [t.injected for t in trajs],
            "pool_calls": [len(t.calls) for t in trajs],
            "invalid_actions": [t.invalid_actions for t in trajs],
            "pool_errors": [t.pool_errors for t in trajs],
        }

    return rollout_func


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def train_router(
    *,
    policy_dir: str | Path,
    policy_dtype: str,
    records: Sequence[QARecord],
    descriptors: Sequence[Descriptor],
    pool: Pool,
    alpha: float,
    train_cfg: TrainConfig,
    rollout_cfg: RolloutConfig,
    checkpoint_dir: str | Path,
    model_out: str | Path,
    seed: int = 0,
    mlflow_active: bool = True,
) -> dict[str, Any]:
    """Train one router for cost coefficient ``alpha``; resumes from the last checkpoint."""
    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: {alpha} is outside [0, 1]")
    checkpoint_dir = Path(checkpoint_dir)
    model, tok = load_policy(policy_dir, policy_dtype)
    resolver = ModelNameResolver(pool.names, pool.aliases)
    engine = RolloutEngine(
        tok, pool, rollout_cfg, batch_size=train_cfg.micro_batch_size * 4, resolver=resolver
    )
    dataset = router_dataset(records, descriptors, tok, rollout_cfg.compressed_descriptors)

    gen_batch = train_cfg.prompts_per_step * train_cfg.num_generations
    micro = min(train_cfg.micro_batch_size, gen_batch)
    if gen_batch % micro:
        raise ValueError(
            f"train.micro_batch_size: {micro} must divide "
            f"prompts_per_step*num_generations={gen_batch}"
        )
    args = GRPOConfig(
        output_dir=str(checkpoint_dir),
        max_steps=train_cfg.max_steps,
        learning_rate=train_cfg.learning_rate,
        beta=train_cfg.beta,
        num_generations=train_cfg.num_generations,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=gen_batch // micro,
        generation_batch_size=gen_batch,
        max_completion_length=rollout_cfg.max_total_tokens + rollout_cfg.max_final_tokens,
        temperature=rollout_cfg.temperature,
        logging_steps=1,
        save_strategy="steps",
        save_steps=train_cfg.save_steps,
        save_total_limit=2,
        bf16=train_cfg.bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        report_to=["mlflow"] if mlflow_active else [],
        remove_unused_columns=False,
        log_completions=False,
        disable_tqdm=False,
        shuffle_dataset=True,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[RouterReward(alpha, resolver, train_cfg)],
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        rollout_func=make_rollout_func(engine),
    )
    resume = _last_checkpoint(checkpoint_dir)
    if resume:
        log.info("resuming alpha=%s from %s", alpha, resume)
    result = trainer.train(resume_from_checkpoint=resume)

    model_out = Path(model_out)
    tmp = model_out.with_name(model_out.name + ".partial")
    trainer.save_model(str(tmp))
    tok.save_pretrained(str(tmp))
    if model_out.exists():
        import shutil

        shutil.rmtree(model_out)
    tmp.rename(model_out)

    history = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    summary = {
        "alpha": alpha,
        "global_step": trainer.state.global_step,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "train_cfg": asdict(train_cfg),
        "rollout_cfg": asdict(rollout_cfg),
        "history": history,
    }
    write_json_atomic(summary, model_out / "routerr1_train.json")
    return summary


def step_metrics(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Last logged value of each numeric metric."""
    out: dict[str, float] = {}
    for h in history:
        out.update({k: float(v) for k, v in h.items() if isinstance(v, int | float)})
    return out
