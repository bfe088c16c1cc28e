"""GRPO training of the router with TRL's GRPOTrainer and our multi-turn ``rollout_func``."""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from datasets import Dataset

from routerr1.config import RolloutConfig, TrainConfig
from routerr1.data import QARecord
from routerr1.io import write_json_atomic
from routerr1.parse import ModelNameResolver
from routerr1.pool.base import Pool
from routerr1.precision import resolve_policy_dtype, resolve_precision
from routerr1.prompt import Descriptor, router_prompts
from routerr1.reward import CostNormalizer, call_cost, score_trajectory
from routerr1.rollout import RolloutEngine, Trajectory
from routerr1.routing import NO_CALL
from routerr1.shared_prefix import shared_prefix_trainer
from routerr1.vllm_rollout import VllmConfig, VllmRolloutEngine, check_runtime, grpo_vllm_kwargs

log = logging.getLogger(__name__)


def load_policy(path: str | Path, dtype: str = "float32"):
    """The policy and its tokenizer; ``dtype`` is ``policy.dtype`` (``auto`` resolves here)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_policy_dtype(dtype)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, resolved.value))
    return model, tok


# keys of a shape file or hub config.json dropped besides the ``_`` notes: the class list
# (``model_type`` picks the class), provenance, and a dtype the caller's ``dtype`` replaces
_NOT_SHAPE = ("architectures", "transformers_version", "torch_dtype", "dtype")


def random_policy(
    shape: Mapping[str, Any] | str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    dtype: str = "float32",
) -> Path:
    """A policy folder for ``load_policy``: ``shape``'s architecture with seeded random weights.

    ``shape`` is a Hugging Face config (a dict or a ``config.json`` path) naming a ``model_type``;
    keys starting with ``_`` are notes and are dropped. The tokenizer is ``tokenizer_dir``'s,
    copied in; the model keeps the shape's ``vocab_size``, which must cover the tokenizer, and
    takes its bos/eos/pad ids. Weights are saved in ``dtype``. For timing a real architecture
    without its weights (they do not change the cost of a step).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    fields = dict(shape) if isinstance(shape, Mapping) else json.loads(Path(shape).read_text())
    fields = {k: v for k, v in fields.items() if not k.startswith("_") and k not in _NOT_SHAPE}
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"shape {shape!s:.200}: no model_type")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = fields.get("vocab_size")
    if vocab is None or vocab < len(tok):
        raise ValueError(
            f"shape vocab_size {vocab} is smaller than the tokenizer of {tokenizer_dir} "
            f"({len(tok)} tokens): its ids would index past the embedding"
        )
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": eos, "pad_token_id": pad}
    config = AutoConfig.for_model(model_type, **{**fields, **ids})
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays as it was
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def lora_config(r: int, alpha: int):
    """LoRA adapters on every linear layer (peft), or None for a full fine-tune (``r`` 0).

    Both trainers (GRPO here, the warm start's SFT) merge them into the weights before saving:
    downstream stages load a plain model.
    """
    if r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", task_type="CAUSAL_LM")


def routes_differ(
    records: Sequence[QARecord], pool_answers: pd.DataFrame, outcome: str = "em"
) -> list[QARecord]:
    """The training questions whose pool models' direct answers score differently
    (``train.prompt_filter: routes_differ``), in their order.

    A GRPO group learns only when its rewards differ. Where every pool model's answer scores the
    same (at a few percent EM, mostly: all wrong), the route a rollout takes cannot change its
    outcome, so the group carries no routing signal whatever it samples. ``pool_answers`` is the
    warm start's table (one row per question and model), whose ``em`` and ``f1`` columns already
    score each answer (a failed call's empty text scores 0); ``outcome`` picks the column.
    """
    missing = {"question", outcome} - set(pool_answers.columns)
    if missing:
        raise ValueError(f"train.prompt_filter: pool answers lack the columns {sorted(missing)}")
    distinct_scores = pool_answers.groupby("question")[outcome].nunique()
    unanswered = [r.question for r in records if r.question not in distinct_scores.index]
    if unanswered:
        raise ValueError(
            f"train.prompt_filter: the pool answers miss {len(unanswered)} of {len(records)} "
            f"training questions (first: {unanswered[0]!r}); rerun pool_answers"
        )
    kept = [r for r in records if distinct_scores[r.question] > 1]
    if not kept:
        raise ValueError(
            f"train.prompt_filter: routes_differ keeps none of the {len(records)} training "
            "questions: every pool model scores the same on each; use prompt_filter: none"
        )
    return kept


def balanced_schedule(
    records: Sequence[QARecord], prompts_per_step: int, steps: int, seed: int
) -> list[QARecord]:
    """GRPO's prompts for ``steps`` steps in order, each step's ``prompts_per_step`` shared
    equally among the benchmarks (``train.prompt_balance: benchmark``).

    Shares differ by at most one; the benchmarks that get the extra prompts rotate from step to
    step. Each benchmark's questions come from its own seeded shuffle, reshuffled when used up,
    so a small benchmark repeats sooner than a large one. Why: with a uniform draw, a benchmark
    holding most of the questions (GSM8K, 23 of the 42 ``routes_differ`` keeps) sets most
    advantages of a step, and a small policy lets that push leak into the other types' routes
    (docs/testbed.md, "Equal benchmark shares per step").
    """
    import random

    if prompts_per_step < 1 or steps < 1:
        raise ValueError(f"balanced_schedule: {prompts_per_step} prompts x {steps} steps")
    by_benchmark: dict[str, list[QARecord]] = {}
    for r in records:
        by_benchmark.setdefault(r.benchmark, []).append(r)
    if not by_benchmark:
        raise ValueError("train.prompt_balance: no training questions to schedule")
    rng = random.Random(seed)
    names = sorted(by_benchmark)
    queues: dict[str, list[QARecord]] = {b: [] for b in names}

    def draw(benchmark: str) -> QARecord:
        if not queues[benchmark]:
            queues[benchmark] = list(by_benchmark[benchmark])
            rng.shuffle(queues[benchmark])
        return queues[benchmark].pop()

    base, extra = divmod(prompts_per_step, len(names))
    schedule: list[QARecord] = []
    for step in range(steps):
        lucky = {names[(step * extra + j) % len(names)] for j in range(extra)}
        block = [draw(b) for b in names for _ in range(base + (b in lucky))]
        rng.shuffle(block)
        schedule.extend(block)
    return schedule


def router_dataset(
    records: Sequence[QARecord], descriptors: Sequence[Descriptor], tokenizer, compressed: bool
) -> Dataset:
    prompts = router_prompts(tokenizer, [r.question for r in records], descriptors, compressed)
    return Dataset.from_list(
        [
            {"prompt": p, "golden_answers": list(r.golden_answers), "qid": f"{r.benchmark}/{r.id}"}
            for p, r in zip(prompts, records, strict=True)
        ]
    )


class RouterReward:
    """One reward: format gate, outcome, and cost normalized over this run's training window."""

    def __init__(self, alpha: float, resolver: ModelNameResolver, cfg: TrainConfig) -> None:
        self.alpha = alpha
        self.resolver = resolver
        self.cfg = cfg
        # train-only buffer (Router-R1 shared one with validation)
        self.normalizer = CostNormalizer(window=cfg.cost_window, tie_value=cfg.cost_tie_value)
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
        first_model=None,
        qid=None,
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
                format_rules=self.cfg.format_rules,
            )
            for text, golds, cost, inj in zip(
                completions, golden_answers, pool_cost, injected, strict=True
            )
        ]
        if log_metric is not None:
            n = len(parts)
            log_metric("router/format_ok", sum(p.format_ok for p in parts) / n)
            for kind, count in Counter(p.format_kind for p in parts if not p.format_ok).items():
                log_metric(f"router/format_fail/{kind}", count / n)
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
            if first_model is not None:
                self._log_first_calls(first_model, qid, log_metric)
        return [p.total for p in parts]

    def _log_first_calls(self, first_model, qid, log_metric) -> None:
        """Share of this step's trajectories whose first call went to each pool model, overall
        and per benchmark (``qid`` is ``benchmark/id``): whether GRPO moves the routing."""
        models = [*self.resolver.names, NO_CALL]
        groups = {"": list(first_model)}
        for q, m in zip(qid, first_model, strict=True) if qid is not None else ():
            groups.setdefault(q.split("/", 1)[0] + "/", []).append(m)
        for prefix, firsts in groups.items():
            for model in models:
                share = sum(f == model for f in firsts) / len(firsts)
                log_metric(f"router/first/{prefix}{_metric_name(model)}", share)


def _metric_name(model: str) -> str:
    """A pool name as an MLflow metric name may spell it (``(no call)`` becomes ``no_call``)."""
    return "no_call" if model == NO_CALL else re.sub(r"[^\w.\- /]", "_", model)


def reward_cost(traj: Trajectory, pool: Pool, cost_tokens: str = "input_output") -> float:
    """The pool cost the reward sees: every token (ours), or output tokens only (Router-R1)."""
    if cost_tokens == "input_output":
        return traj.cost
    if cost_tokens != "output":
        raise ValueError(f"train.cost_tokens: {cost_tokens!r} is not input_output or output")
    return sum(call_cost(0, c.out_tokens, 0.0, pool.entries[c.model].price_out) for c in traj.calls)


def make_rollout_func(engine: RolloutEngine, cost_tokens: str = "input_output"):
    """Adapt the engine to TRL 1.16's ``rollout_func(prompts, trainer)``.

    Prompts arrive already repeated ``num_generations`` times by TRL's sampler. ``pool_cost`` is
    what the reward normalizes (``reward_cost``).
    """

    def rollout_func(prompts: list[str], trainer) -> dict[str, list]:
        if isinstance(engine, VllmRolloutEngine):  # config vllm.enabled: vLLM samples the tokens
            engine.attach(trainer.vllm_generation)
            trajs = engine.run(None, prompts, greedy=False)
        else:
            with generation_model(trainer) as model:
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
            "pool_cost": [reward_cost(t, engine.pool, cost_tokens) for t in trajs],
            "injected": [t.injected for t in trajs],
            "pool_calls": [len(t.calls) for t in trajs],
            "invalid_actions": [t.invalid_actions for t in trajs],
            "pool_errors": [t.pool_errors for t in trajs],
            "first_model": [t.calls[0].model if t.calls else NO_CALL for t in trajs],
        }

    return rollout_func


@contextmanager
def generation_model(trainer) -> Iterator[Any]:
    """The policy the rollout generates with: whole weights on this process, no collectives.

    The multi-turn rollout runs a different number of generate calls on each process, so it must
    never run a sharded forward pass (those need every process in step). Under DeepSpeed ZeRO-3
    the shards are gathered for the rollout (TRL's helper); under FSDP a plain copy of the policy
    is refreshed from the full state dict; otherwise the model already holds whole weights.
    """
    from trl.distributed import DistributedBackend

    backend = DistributedBackend(trainer.accelerator)
    if backend.is_fsdp:
        yield fsdp_generation_copy(trainer)
    elif backend.is_zero3:
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            yield model
    else:
        yield trainer.accelerator.unwrap_model(trainer.model)


def fsdp_generation_copy(trainer):
    """An unsharded copy of the policy with the current weights (one all-gather per call)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(
        trainer.model_wrapped, options=StateDictOptions(full_state_dict=True)
    )
    copy = getattr(trainer, "_routerr1_generation_copy", None)
    if copy is None:
        from transformers import AutoModelForCausalLM

        config = trainer.accelerator.unwrap_model(trainer.model).config
        dtype = torch.bfloat16 if trainer.args.bf16 else torch.float32
        copy = AutoModelForCausalLM.from_config(config, dtype=dtype)
        copy.to(trainer.accelerator.device)
        trainer._routerr1_generation_copy = copy
    copy.load_state_dict(state)
    return copy


def world_size() -> int:
    """Processes training together (torch.distributed's WORLD_SIZE; 1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def batch_geometry(
    prompts_per_step: int, num_generations: int, micro_batch_size: int, processes: int = 1
) -> tuple[int, int, int]:
    """(generation batch, micro batch per process, gradient accumulation steps).

    One optimizer step consumes the whole generation batch, split evenly over the processes.
    """
    gen_batch = prompts_per_step * num_generations
    if gen_batch % processes:
        raise ValueError(
            f"train.prompts_per_step: prompts_per_step*num_generations={gen_batch} must divide "
            f"evenly over {processes} processes"
        )
    per_process = gen_batch // processes
    micro = min(micro_batch_size, per_process)
    if per_process % micro:
        raise ValueError(
            f"train.micro_batch_size: {micro} must divide "
            f"prompts_per_step*num_generations/processes={per_process}"
        )
    return gen_batch, micro, per_process // micro


def optimizer_args(train_cfg: TrainConfig) -> dict[str, Any]:
    """GRPOConfig's schedule, warmup and weight decay (Router-R1: constant learning rate, no
    warmup, decay 0.01)."""
    schedule = train_cfg.lr_scheduler
    if schedule == "constant" and train_cfg.warmup_steps:
        schedule = "constant_with_warmup"  # transformers' "constant" ignores warmup steps
    return {
        "lr_scheduler_type": schedule,
        "warmup_steps": train_cfg.warmup_steps,
        "weight_decay": train_cfg.weight_decay,
    }


def shares_prompt_prefix(train_cfg: TrainConfig) -> bool:
    """Whether GRPO runs each group's prompt once: ``train.share_prompt_prefix``, unless
    checkpointed layers would append to the prompt cache twice (forward and recompute)."""
    return train_cfg.share_prompt_prefix and not train_cfg.gradient_checkpointing


def _last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint. The Trainer writes a checkpoint in place and its
    ``trainer_state.json`` last, so a job killed while saving leaves a folder without it."""
    if not output_dir.is_dir():
        return None
    done = [
        p
        for p in output_dir.glob("checkpoint-*")
        if p.name.removeprefix("checkpoint-").isdigit() and (p / "trainer_state.json").is_file()
    ]
    torn = {p.name for p in output_dir.glob("checkpoint-*")} - {p.name for p in done}
    if torn:
        log.warning("ignoring incomplete checkpoints (killed while saving?): %s", sorted(torn))
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.removeprefix("checkpoint-"))))


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
    vllm: VllmConfig | None = None,
    linear_kernel: str = "auto",
) -> dict[str, Any]:
    """Train one router for cost coefficient ``alpha``; resumes from the last checkpoint."""
    import importlib.util

    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: {alpha} is outside [0, 1]")
    vllm = vllm or VllmConfig()
    check_runtime(
        vllm, world_size(), torch.cuda.is_available(), importlib.util.find_spec("vllm") is not None
    )
    checkpoint_dir = Path(checkpoint_dir)
    model, tok = load_policy(policy_dir, policy_dtype)
    precision = resolve_precision(train_cfg.precision)
    log.info("train.precision: %s (%s)", precision.value, precision.reason)
    bf16 = precision.value == "bf16"
    resolver = ModelNameResolver(pool.names, pool.aliases, rollout_cfg.model_match)
    engine_class = VllmRolloutEngine if vllm.enabled else RolloutEngine
    engine = engine_class(
        tok,
        pool,
        rollout_cfg,
        batch_size=rollout_cfg.batch_size,
        resolver=resolver,
        autocast_bf16=bf16,
        linear_kernel=linear_kernel,
    )
    balanced = train_cfg.prompt_balance == "benchmark"
    if balanced:  # the schedule is the order: TRL must not shuffle it
        records = balanced_schedule(records, train_cfg.prompts_per_step, train_cfg.max_steps, seed)
        drawn = Counter(r.benchmark for r in records)
        log.info(
            "train.prompt_balance: %s", ", ".join(f"{b} {n}" for b, n in sorted(drawn.items()))
        )
    dataset = router_dataset(records, descriptors, tok, rollout_cfg.compressed_descriptors)

    gen_batch, micro, grad_accum = batch_geometry(
        train_cfg.prompts_per_step,
        train_cfg.num_generations,
        train_cfg.micro_batch_size,
        world_size(),
    )
    args = GRPOConfig(
        output_dir=str(checkpoint_dir),
        max_steps=train_cfg.max_steps,
        learning_rate=train_cfg.learning_rate,
        **optimizer_args(train_cfg),
        beta=train_cfg.beta,
        num_generations=train_cfg.num_generations,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=grad_accum,
        generation_batch_size=gen_batch,
        max_completion_length=rollout_cfg.max_total_tokens + rollout_cfg.max_final_tokens,
        temperature=rollout_cfg.temperature,
        logging_steps=1,
        save_strategy="steps",
        save_steps=train_cfg.save_steps,
        save_total_limit=2,
        bf16=bf16,
        gradient_checkpointing=train_cfg.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        report_to=["mlflow"] if mlflow_active else [],
        remove_unused_columns=False,
        log_completions=False,
        disable_tqdm=False,
        shuffle_dataset=not balanced,
        **grpo_vllm_kwargs(vllm),
    )
    peft_config = lora_config(train_cfg.lora_r, train_cfg.lora_alpha)
    share = shares_prompt_prefix(train_cfg)
    if train_cfg.share_prompt_prefix and not share:
        log.warning("train.share_prompt_prefix is off because train.gradient_checkpointing is on")
    trainer_class = shared_prefix_trainer(GRPOTrainer) if share else GRPOTrainer
    trainer = trainer_class(
        model=model,
        peft_config=peft_config,
        reward_funcs=[RouterReward(alpha, resolver, train_cfg)],
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        rollout_func=make_rollout_func(engine, train_cfg.cost_tokens),
    )
    from trl.distributed import DistributedBackend

    backend = DistributedBackend(trainer.accelerator)
    sharded = backend.is_zero3 or backend.is_fsdp
    if sharded and peft_config is not None:
        raise ValueError("train.lora_r: LoRA needs whole weights; use ZeRO-2 or one process")
    resume = _last_checkpoint(checkpoint_dir)
    if resume:
        log.info("resuming alpha=%s from %s", alpha, resume)
    result = trainer.train(resume_from_checkpoint=resume)

    model_out = Path(model_out)
    acc = trainer.accelerator
    # gathering shards is a collective: every process takes part, the main one writes
    state_dict = acc.get_state_dict(trainer.model_wrapped) if sharded else None
    if acc.is_main_process:
        tmp = model_out.with_name(model_out.name + ".partial")
        trained = acc.unwrap_model(trainer.model)
        if peft_config is not None:  # downstream stages load a plain model
            trained = trained.merge_and_unload()
        trained.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        tok.save_pretrained(str(tmp))
        if model_out.exists():
            import shutil

            shutil.rmtree(model_out)
        tmp.rename(model_out)

    history = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    run = None
    if mlflow_active:
        import mlflow

        run = mlflow.active_run()
    summary = {
        "alpha": alpha,
        # what `routerr1 serve` reports per router: the MLflow run, and the pool it learned on
        "mlflow_run_id": run.info.run_id if run is not None else None,
        "pool": [
            {"name": e.name, "model": e.model, "price_in": e.price_in, "price_out": e.price_out}
            for e in pool.entries.values()
        ],
        "global_step": trainer.state.global_step,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "train_cfg": asdict(train_cfg),
        "rollout_cfg": asdict(rollout_cfg),
        "history": history,
        "rollouts": engine.run_log,
    }
    if acc.is_main_process:
        write_json_atomic(summary, model_out / "routerr1_train.json")
        if not train_cfg.keep_checkpoints:  # the model is written: nothing left to resume
            import shutil

            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    acc.wait_for_everyone()
    return summary


def step_metrics(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Last logged value of each numeric metric."""
    out: dict[str, float] = {}
    for h in history:
        out.update({k: float(v) for k, v in h.items() if isinstance(v, int | float)})
    return out
