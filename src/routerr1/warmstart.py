"""Format warm start: a short SFT (TRL SFTTrainer) on router trajectories from real pool answers.

Untrained small policies almost never write the tag format, so every GRPO reward is -1 and the
advantage is zero. A few SFT epochs on well-formed trajectories fix that. Each trajectory is:
think, one search to the cheapest pool model that answered the question correctly (else the
largest), the ``<information>`` that model really returned, think, and the answer. Injected
information tokens are masked out of the loss, exactly as in GRPO.

The answer relays the information by default (``answer="relay"``). Training on the gold answer
instead teaches a 135M policy to ignore what the pool said and invent an answer whenever the
pool was wrong (most questions): that router scored below the pool model it called.

``routing="reward"`` warm-starts once per alpha instead: each trajectory searches the model whose
answer earns the most GRPO reward at that alpha (reward-ranked SFT on the pool's real answers).
After the single warm start, 121 of 128 trajectories called the largest model and the policy
chose it almost deterministically, so GRPO never sampled a cheaper route to learn from.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerr1.config import ANSWER_SOURCES, PoolEntry, RolloutConfig, WarmStartConfig
from routerr1.data import QARecord
from routerr1.parse import ModelNameResolver, check_format, strip_tags
from routerr1.prompt import Descriptor, chat_prompt, render_router_prompt
from routerr1.reward import CostNormalizer, combine_reward

log = logging.getLogger(__name__)

FIRST_THOUGHTS = (
    "I should ask {model}, the cheapest model likely to know this.",
    "{model} should be able to answer this at low cost.",
    "Let me ask {model} for the key fact.",
)
FINAL_THOUGHTS = (
    "The information answers the question.",
    "I can answer now.",
    "That settles it.",
)


@dataclass(frozen=True)
class RewardRouting:
    """Route each SFT trajectory to the model whose answer earns the most GRPO reward at
    ``alpha``; ties go to the model with the higher mean reward over all training questions."""

    alpha: float
    cost_on_correct_only: bool
    prior: dict[str, float]  # model -> its mean reward over the training questions


def reward_scores(
    pool_answers: pd.DataFrame, alpha: float, cost_on_correct_only: bool
) -> pd.Series:
    """The reward each well-formed pool answer would earn at ``alpha``: EM plus the cost term,
    costs normalized over all the answers (the training reward's normalizer, one window)."""
    costs = [float(c) for c in pool_answers["cost"].fillna(0.0)]
    norm = CostNormalizer(window=max(1, len(costs)))
    norm.observe(costs)
    return pd.Series(
        [
            combine_reward(True, float(em), norm.normalize(c), alpha, cost_on_correct_only)
            for em, c in zip(pool_answers["em"], costs, strict=True)
        ],
        index=pool_answers.index,
    )


def reward_routing(
    pool_answers: pd.DataFrame, alpha: float, cost_on_correct_only: bool
) -> tuple[RewardRouting, pd.Series]:
    """The routing rule at ``alpha`` and each answer's reward; failed calls are left out."""
    missing = {"model", "em", "cost"} - set(pool_answers.columns)
    if missing:
        raise ValueError(f"pool answers: reward routing needs the columns {sorted(missing)}")
    ok = pool_answers[_succeeded(pool_answers)]
    scores = reward_scores(ok, alpha, cost_on_correct_only)
    prior = scores.groupby(ok["model"]).mean().to_dict()
    return RewardRouting(alpha, cost_on_correct_only, prior), scores


def predicted_routing(
    pool_answers: pd.DataFrame, alpha: float, cost_on_correct_only: bool
) -> tuple[RewardRouting, pd.Series]:
    """Route by the reward a router can *predict* from the question text, not the one it got.

    Per model, a ridge regression of its correctness on tf-idf words of the training questions
    (``routerr1.preroute``'s pre-router) gives each question's leave-one-out predicted EM: what
    a text-reading router could know without seeing that question's answers. Each answer's score
    is the reward it is expected to earn at ``alpha``: ``(1-alpha)·EM + alpha·cost_norm`` (times
    EM when the cost term is paid on correct answers only), with the model's mean normalized
    cost. So the targets differ per question exactly where the text predicts a different best
    model (a maths word problem to the model that reasons, a factoid to the cheap one), and are
    otherwise the single best model at that alpha, never the oracle's unpredictable picks.
    """
    from routerr1.preroute import ridge_predictions, tfidf

    missing = {"model", "question", "em", "cost"} - set(pool_answers.columns)
    if missing:
        raise ValueError(f"pool answers: predicted routing needs the columns {sorted(missing)}")
    answers = pool_answers.assign(em=pool_answers["em"].where(_succeeded(pool_answers), 0.0))
    grid = answers.pivot_table(index="question", columns="model", values="em", aggfunc="mean")
    grid = grid.fillna(0.0)
    questions = [str(q) for q in grid.index]
    features, _ = tfidf(questions, questions[:1])
    loo, _, _ = ridge_predictions(features, grid.to_numpy(dtype=float), features[:1])
    predicted = pd.DataFrame(np.clip(loo, 0.0, 1.0), index=grid.index, columns=grid.columns)
    ok = answers[_succeeded(answers)]
    costs = [float(c) for c in ok["cost"].fillna(0.0)]
    norm = CostNormalizer(window=max(1, len(costs)))
    norm.observe(costs)
    mean_norm = pd.Series([norm.normalize(c) for c in costs], index=ok.index)
    mean_norm = mean_norm.groupby(ok["model"]).mean()
    em_hat = np.array(
        [predicted.at[q, m] for q, m in zip(answers["question"], answers["model"], strict=True)]
    )
    cost_term = answers["model"].map(mean_norm).fillna(0.0).to_numpy(dtype=float)
    paid = em_hat if cost_on_correct_only else 1.0
    scores = pd.Series((1 - alpha) * em_hat + alpha * cost_term * paid, index=answers.index)
    prior = scores[_succeeded(answers)].groupby(answers["model"]).mean().to_dict()
    return RewardRouting(alpha, cost_on_correct_only, prior), scores


def benchmark_routing(
    pool_answers: pd.DataFrame, alpha: float, cost_on_correct_only: bool
) -> tuple[RewardRouting, pd.Series]:
    """Route each question to the model with the most mean reward at ``alpha`` on its benchmark.

    ``pool_answers`` carries each question's ``benchmark``. Every answer is scored with its
    (benchmark, model) mean reward, so all questions of one benchmark get one target: a router
    reading the question can learn which kind it is (a maths word problem reads unlike a
    factoid), while which *single* question a model gets right is what the headroom report's
    pre-router could not predict with ~100 training questions (ridge targets were 70% the
    reasoner, maths or not: docs/testbed.md).
    """
    missing = {"model", "question", "benchmark", "em", "cost"} - set(pool_answers.columns)
    if missing:
        raise ValueError(f"pool answers: benchmark routing needs the columns {sorted(missing)}")
    unknown = pool_answers.loc[pool_answers["benchmark"].isna(), "question"].unique()
    if len(unknown):
        raise ValueError(
            f"pool answers: {len(unknown)} questions have no benchmark, e.g. {sorted(unknown)[0]!r}"
        )
    ok = pool_answers[_succeeded(pool_answers)]
    rewards = reward_scores(ok, alpha, cost_on_correct_only)
    scores = rewards.groupby([ok["benchmark"], ok["model"]]).transform("mean")
    prior = rewards.groupby(ok["model"]).mean().to_dict()
    return RewardRouting(alpha, cost_on_correct_only, prior), scores


# warm_start.routing rules that route per alpha: (pool answers, alpha, cost_on_correct_only)
ROUTERS = {"reward": reward_routing, "predicted": predicted_routing, "benchmark": benchmark_routing}


def _succeeded(answers: pd.DataFrame) -> pd.Series:
    if "error" not in answers:
        return pd.Series(True, index=answers.index)
    return answers["error"].isna() | (answers["error"].astype(str) == "")


def pick_target(
    answers: pd.DataFrame,
    entries: Sequence[PoolEntry],
    routing: RewardRouting | None = None,
    scores: pd.Series | None = None,
) -> tuple[str, str]:
    """(model name, its answer).

    Without ``routing``: the cheapest correct model, else the largest (priciest) one. With it:
    the highest ``scores`` (rewards, indexed like ``answers``) among calls that succeeded, then
    the routing prior, then the lower price.
    """
    price = {e.name: (e.price_out, e.price_in) for e in entries}
    if routing is not None:
        if scores is None:
            raise ValueError("pick_target: reward routing needs the answers' scores")
        ok = answers[_succeeded(answers) & answers.index.isin(scores.index)]
        pool = ok if len(ok) else answers
        best = max(
            pool.index,
            key=lambda i: (
                float(scores.get(i, 0.0)),
                routing.prior.get(pool.at[i, "model"], 0.0),
                tuple(-p for p in price[pool.at[i, "model"]]),
            ),
        )
        return str(pool.at[best, "model"]), str(pool.at[best, "prediction"] or "")
    correct = answers[answers["em"] > 0]
    pool = correct if len(correct) else answers
    key = (lambda n: price[n]) if len(correct) else (lambda n: tuple(-p for p in price[n]))
    best = min(pool["model"], key=key)
    return best, str(pool.loc[pool["model"] == best, "prediction"].iloc[0] or "")


def _other_route(
    answers: pd.DataFrame, target: str | None, rng: random.Random
) -> tuple[str, str] | None:
    """A model other than ``target`` (any model with None) whose call succeeded, drawn
    uniformly, and its answer; None when there is none."""
    others = answers[_succeeded(answers) & (answers["model"] != target)]
    if others.empty:
        return None
    row = others.iloc[rng.randrange(len(others))]
    return str(row["model"]), str(row["prediction"] or "")


def first_thought(
    model: str, benchmark: str, question_kinds: Mapping[str, str] | None, rng: random.Random
) -> str:
    """The thought before the search: the question's kind first when ``question_kinds`` is
    set ("This is an arithmetic word problem. Let me ask ..."), then why ``model``."""
    thought = rng.choice(FIRST_THOUGHTS).format(model=model)
    if not question_kinds:
        return thought
    if benchmark not in question_kinds:
        raise ValueError(
            f"warm_start.question_kinds: no kind for benchmark {benchmark!r} "
            f"(has {sorted(question_kinds)})"
        )
    return f"This is {question_kinds[benchmark].strip()}. {thought}"


def interleave_benchmarks(records: Sequence[QARecord], rng: random.Random) -> list[QARecord]:
    """Every record once, each benchmark shuffled, then taken in turn (round robin).

    Any prefix is then a balanced, seeded sample. Training files are stored benchmark by
    benchmark, so taking the first ``limit`` records warm-started cpu-long on NQ alone: the
    policy never copied a capitalized multi-hop question and rewrote HotpotQA ones at evaluation.
    """
    groups: dict[str, list[QARecord]] = {}
    for rec in records:
        groups.setdefault(rec.benchmark, []).append(rec)
    for group in groups.values():
        rng.shuffle(group)
    ordered: list[QARecord] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        ordered += [g[i] for g in groups.values() if i < len(g)]
    return ordered


def build_examples(
    records: Sequence[QARecord],
    pool_answers: pd.DataFrame,
    entries: Sequence[PoolEntry],
    descriptors: Sequence[Descriptor],
    tokenizer,
    rollout_cfg: RolloutConfig,
    seed: int = 0,
    limit: int | None = None,
    answer: str = "relay",
    routing: tuple[float, bool] | None = None,
    routing_rule: str = "reward",
    explore: float = 0.0,
    question_kinds: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Pre-tokenized SFT rows: ``input_ids`` and ``completion_mask`` (1 = policy-written token),
    at most ``limit`` of them, from records with pool answers taken evenly across benchmarks
    in a seeded order (`interleave_benchmarks`).

    ``answer`` is "relay" (the final answer repeats the information, skipping questions whose
    target model returned nothing) or "gold" (the first gold answer). ``routing`` is None (the
    cheapest correct model, else the largest) or ``(alpha, cost_on_correct_only)``: the model
    whose answer earns the most reward at that alpha (`pick_target`); with ``routing_rule``
    "predicted", the most reward predictable from the question text (`predicted_routing`);
    "benchmark", the most mean reward on the question's benchmark (`benchmark_routing`).
    With ``routing_rule`` "uniform" (and no ``routing``), each question searches a model drawn
    uniformly among the calls that succeeded: the format is taught, no routing is.

    ``explore`` is the share of trajectories that search another model (drawn uniformly among
    the calls that succeeded) and relay its real answer: the policy then still samples every
    route after SFT, so GRPO's groups differ in reward and their advantages are not zero.

    ``question_kinds`` (benchmark -> phrase) makes each first thought name the question's kind
    before the model (`first_thought`): the model-name tokens then follow type-specific ones,
    so a GRPO update to one kind's route need not move the others' (type-blind thoughts made
    the 135M policy's routes of all kinds move together: docs/testbed.md).

    Segments are tokenized separately, as the rollout concatenates them, so SFT sees the same ids.
    """
    if answer not in ANSWER_SOURCES:
        raise ValueError(f"answer must be one of {ANSWER_SOURCES}, got {answer!r}")
    rng = random.Random(seed)
    pool_answers = pool_answers.reset_index(drop=True)
    rule, scores = None, None
    if routing is not None:
        benchmark_of = {r.question: r.benchmark for r in records}
        pool_answers = pool_answers.assign(benchmark=pool_answers["question"].map(benchmark_of))
        rule, scores = ROUTERS[routing_rule](pool_answers, *routing)
    by_question = {q: g for q, g in pool_answers.groupby("question", sort=False)}
    eos = tokenizer.eos_token or ""
    rows = []
    for rec in interleave_benchmarks(records, rng):
        if limit is not None and len(rows) >= limit:
            break
        answers = by_question.get(rec.question)
        if answers is None or answers.empty:
            continue
        if rule is None and routing_rule == "uniform":
            picked = _other_route(answers, None, rng)
            if picked is None:
                continue  # every call failed: nothing real to relay
            model, reply = picked
        else:
            model, reply = pick_target(answers, entries, rule, scores)
        if explore > 0 and rng.random() < explore:
            model, reply = _other_route(answers, model, rng) or (model, reply)
        body = tokenizer(strip_tags(reply), add_special_tokens=False).input_ids
        reply = tokenizer.decode(body[: rollout_cfg.info_max_tokens], skip_special_tokens=True)
        reply = reply.strip()
        if answer == "relay" and not reply:
            continue
        final = reply if answer == "relay" else rec.golden_answers[0]
        prompt = chat_prompt(
            tokenizer,
            render_router_prompt(rec.question, descriptors, rollout_cfg.compressed_descriptors),
        )
        segments = [
            (prompt, 0),
            (
                f"<think>{first_thought(model, rec.benchmark, question_kinds, rng)}</think>\n"
                f"<search>{model}: {rec.question.strip()}</search>",
                1,
            ),
            (f"\n<information>{reply}</information>\n", 0),
            (
                f"<think>{rng.choice(FINAL_THOUGHTS)}</think>\n<answer>{final}</answer>{eos}",
                1,
            ),
        ]
        ids: list[int] = []
        mask: list[int] = []
        for text, trainable in segments:
            seg = tokenizer(text, add_special_tokens=False).input_ids
            ids += seg
            mask += [trainable] * len(seg)
        rows.append(
            {
                "input_ids": ids,
                "completion_mask": mask,
                "target_model": model,
                "benchmark": rec.benchmark,
                "question": rec.question,
            }
        )
    return rows


def warm_start(
    policy_dir: str | Path,
    examples: Sequence[dict[str, Any]],
    out_dir: str | Path,
    cfg: WarmStartConfig,
    seed: int = 0,
    bf16: bool = False,
    report_to: Sequence[str] = (),
    lora_r: int = 0,
    lora_alpha: int = 32,
    gradient_checkpointing: bool = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """SFT the policy on ``examples``; saves the model to ``out_dir`` atomically.

    ``lora_r > 0`` trains a LoRA adapter (as GRPO does with ``train.lora_r``) and saves the
    merged model, so later stages load a plain one. ``gradient_checkpointing`` trades compute
    for activation memory (the stage passes ``train.gradient_checkpointing``; TRL's SFT default
    is on). With ``cfg.share_prompt_prefix`` each batch's common prefix (the router prompt up to
    the question) runs once (`routerr1.shared_prefix.shared_prefix_sft_trainer`): the same loss
    and gradients, less compute. It needs gradient checkpointing off, as in GRPO.
    ``callbacks`` are TRL/transformers ``TrainerCallback``s (benchmarks time steps with one).
    """
    import shutil

    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from routerr1.shared_prefix import shared_prefix_sft_trainer
    from routerr1.train import load_policy, lora_config

    if not examples:
        # build_examples skips questions whose target call failed or came back empty (relay)
        raise ValueError(
            "warm start: no training trajectories; every question's routed pool call failed or "
            "returned an empty answer (see the pool_answers 'error' column)"
        )
    model, tok = load_policy(policy_dir, "float32")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    data = Dataset.from_list(
        [{"input_ids": e["input_ids"], "completion_mask": e["completion_mask"]} for e in examples]
    )
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".partial")
    args = SFTConfig(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        completion_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        report_to=list(report_to),
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        lr_scheduler_type="constant",
        gradient_checkpointing=gradient_checkpointing,
    )
    # checkpointed layers would append to the prefix cache twice (forward and recompute)
    share = cfg.share_prompt_prefix and not gradient_checkpointing
    if cfg.share_prompt_prefix and not share:
        log.warning("warm_start.share_prompt_prefix is off because gradient checkpointing is on")
    peft_config = lora_config(lora_r, lora_alpha)
    trainer = (shared_prefix_sft_trainer(SFTTrainer) if share else SFTTrainer)(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=list(callbacks) or None,
    )
    result = trainer.train()
    if peft_config is not None:
        trainer.model.merge_and_unload().save_pretrained(str(work / "model"))
    else:
        trainer.save_model(str(work / "model"))
    tok.save_pretrained(str(work / "model"))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (work / "model").rename(out_dir)
    shutil.rmtree(work, ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "examples": len(examples),
        "steps": trainer.state.global_step,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "shared_prefix_batches": getattr(trainer, "shared_prefix_batches", {}).get("shared", 0),
    }


def format_compliance(trajectories, resolver: ModelNameResolver) -> dict[str, float]:
    """Share of trajectories that are well-formed, that searched a pool model, that answered."""
    n = max(1, len(trajectories))
    ok = sum(check_format(t.text, resolver, t.injected).ok for t in trajectories)
    searched = sum(1 for t in trajectories if t.calls)
    answered = sum(1 for t in trajectories if t.answer is not None)
    return {
        "n": len(trajectories),
        "well_formed": ok / n,
        "searched_pool_model": searched / n,
        "answered": answered / n,
        "searched_and_answered": sum(1 for t in trajectories if t.calls and t.answer is not None)
        / n,
    }
