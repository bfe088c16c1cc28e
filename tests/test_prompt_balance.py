"""train.prompt_balance: every GRPO step shares its prompts equally among the benchmarks."""

from __future__ import annotations

from collections import Counter

import pytest
from test_grpo_env_mask import POOL_NAME, ScriptedEngine, StubPool, byte_tokenizer

from routerr1.config import ConfigError, RolloutConfig, TrainConfig
from routerr1.data import QARecord
from routerr1.prompt import Descriptor
from routerr1.train import balanced_schedule


def _records(counts: dict[str, int]) -> list[QARecord]:
    return [
        QARecord(f"{b}{i}", f"{b} question {i}?", ("x",), b, "train")
        for b, n in counts.items()
        for i in range(n)
    ]


def test_each_step_shares_its_prompts_equally_whatever_the_benchmark_sizes():
    records = _records({"gsm8k": 23, "hotpotqa": 11, "nq": 8})  # the routes_differ keeps
    schedule = balanced_schedule(records, prompts_per_step=8, steps=15, seed=0)
    assert len(schedule) == 8 * 15
    per_step = [Counter(r.benchmark for r in schedule[i : i + 8]) for i in range(0, 120, 8)]
    for counts in per_step:
        assert sorted(counts.values()) == [2, 3, 3]  # 8 over 3 benchmarks
    # the benchmark left with 2 rotates, so over 3 steps each gets 8
    for start in range(0, 15, 3):
        window = sum(per_step[start : start + 3], Counter())
        assert window == Counter({"gsm8k": 8, "hotpotqa": 8, "nq": 8})


def test_a_benchmark_repeats_only_after_all_its_questions_were_drawn():
    records = _records({"gsm8k": 6, "nq": 2})
    schedule = balanced_schedule(records, prompts_per_step=4, steps=3, seed=1)
    gsm8k = [r.id for r in schedule if r.benchmark == "gsm8k"]
    nq = [r.id for r in schedule if r.benchmark == "nq"]
    assert sorted(gsm8k) == sorted(f"gsm8k{i}" for i in range(6))  # 6 drawn, each once
    for cycle in range(3):  # nq: 6 draws = 3 full passes over its 2 questions
        assert sorted(nq[2 * cycle : 2 * cycle + 2]) == ["nq0", "nq1"]


def test_the_seed_fixes_the_schedule_and_a_different_seed_changes_it():
    records = _records({"gsm8k": 10, "nq": 10})
    same = balanced_schedule(records, 4, 5, seed=3), balanced_schedule(records, 4, 5, seed=3)
    assert [r.id for r in same[0]] == [r.id for r in same[1]]
    other = balanced_schedule(records, 4, 5, seed=4)
    assert [r.id for r in other] != [r.id for r in same[0]]


def test_one_benchmark_is_a_plain_shuffled_cycle():
    records = _records({"nq": 3})
    schedule = balanced_schedule(records, prompts_per_step=2, steps=3, seed=0)
    assert sorted(r.id for r in schedule[:3]) == ["nq0", "nq1", "nq2"]


def test_bad_values_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="train.prompt_balance"):
        TrainConfig(prompt_balance="per_model")
    with pytest.raises(ValueError, match="prompt_balance: no training questions"):
        balanced_schedule([], 4, 2, seed=0)


def test_trl_draws_the_schedule_in_order(tmp_path, monkeypatch):
    """A real GRPOTrainer with `prompt_balance: benchmark`: each step's group prompts are one
    question of each benchmark, though one benchmark holds five of six questions."""
    from conftest import tiny_llama

    import routerr1.train as train_module

    tok = byte_tokenizer()
    model = tiny_llama(len(tok), pad_token_id=0, eos_token_id=1, bos_token_id=1)
    batches: list[list[str]] = []

    class RecordingEngine(ScriptedEngine):
        def run(self, model, prompts, greedy=False):
            batches.append(list(prompts))
            return super().run(model, prompts, greedy)

    monkeypatch.setattr(train_module, "load_policy", lambda path, dtype: (model, tok))
    monkeypatch.setattr(train_module, "RolloutEngine", RecordingEngine)
    records = _records({"gsm8k": 5, "nq": 1})
    train_module.train_router(
        policy_dir=tmp_path / "unused",
        policy_dtype="float32",
        records=records,
        descriptors=[Descriptor(POOL_NAME, "knows capitals", 0.1, 0.2, 0.1, 50.0, 60.0)],
        pool=StubPool(),
        alpha=0.0,
        train_cfg=TrainConfig(
            max_steps=3,
            prompts_per_step=2,
            num_generations=2,
            micro_batch_size=4,
            beta=0.0,
            save_steps=100,
            prompt_balance="benchmark",
        ),
        rollout_cfg=RolloutConfig(max_turns=1, max_total_tokens=256, max_final_tokens=8),
        checkpoint_dir=tmp_path / "ckpt",
        model_out=tmp_path / "model",
        mlflow_active=False,
    )
    assert len(batches) == 3  # one generation batch per step
    for prompts in batches:
        assert len(prompts) == 4  # 2 prompts x 2 generations
        kinds = Counter("gsm8k question" in p for p in prompts)
        assert kinds == Counter({True: 2, False: 2}), "a step was not one gsm8k and one nq"
