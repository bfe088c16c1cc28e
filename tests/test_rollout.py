"""Multi-turn rollout with a real policy (SmolLM2-135M) and a real local pool.

Greedy decoding after a repeated pattern makes the small model write a well-formed search on its
own, so the whole loop (generate, cut, call the pool, inject, continue) runs for real.
"""

from __future__ import annotations

import pytest
from mlflow.utils.validation import validate_param_and_metric_name

from routerr1.config import PoolEntry, RolloutConfig, TrainConfig
from routerr1.parse import ModelNameResolver
from routerr1.reward import call_cost
from routerr1.rollout import RolloutEngine, cut_at_action
from routerr1.routing import NO_CALL
from routerr1.train import RouterReward

pytestmark = pytest.mark.slow

CHEAP = PoolEntry("SmolLM2-Cheap", "smol", 0.02, 0.04, max_new_tokens=8)


@pytest.fixture(scope="module")
def policy(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smollm2_dir), AutoTokenizer.from_pretrained(
        smollm2_dir
    )


@pytest.fixture(scope="module")
def pool(smollm2_dir):
    from routerr1.pool.base import local_pool

    return local_pool([CHEAP], {"smol": smollm2_dir})


def pattern_prompt(search_line: str) -> str:
    return f"<think>check</think>\n{search_line}\n" * 8 + "<think>check</think>\n"


def run(policy, pool, prompt, **cfg):
    model, tok = policy
    rc = RolloutConfig(max_turns=1, max_turn_tokens=24, max_final_tokens=8, info_max_tokens=12)
    engine = RolloutEngine(tok, pool, RolloutConfig(**{**rc.__dict__, **cfg}))
    return engine.run(model, [prompt, prompt], greedy=True)


def test_injected_tokens_are_masked_and_policy_tokens_are_not(policy, pool):
    _, tok = policy
    prompt = pattern_prompt("<search>SmolLM2-Cheap: capital of France?</search>")
    traj = run(policy, pool, prompt)[0]

    assert traj.prompt_ids == tok(prompt, add_special_tokens=False).input_ids
    assert len(traj.env_mask) == len(traj.completion_ids)
    assert traj.text.startswith("<search>SmolLM2-Cheap: capital of France?</search>")
    assert traj.injected == 1 and len(traj.calls) == 1

    injected = [t for t, m in zip(traj.completion_ids, traj.env_mask, strict=True) if m == 0]
    text = tok.decode(injected)
    assert text.startswith("\n<information>") and text.endswith("</information>\n")
    # the mask is one contiguous block of zeros between policy tokens
    first0 = traj.env_mask.index(0)
    n0 = traj.env_mask.count(0)
    assert traj.env_mask[first0 : first0 + n0] == [0] * n0
    assert all(m == 1 for m in traj.env_mask[:first0])
    assert tok.decode(traj.completion_ids[:first0]).endswith("</search>")

    call = traj.calls[0]
    assert call.model == "SmolLM2-Cheap" and call.query == "capital of France?"
    assert call.in_tokens > 0 and 0 < call.out_tokens <= CHEAP.max_new_tokens
    assert call.cost == pytest.approx(
        call_cost(call.in_tokens, call.out_tokens, CHEAP.price_in, CHEAP.price_out)
    )
    assert traj.cost == pytest.approx(call.cost)


def test_unknown_model_is_an_observation_not_a_crash(policy, pool):
    traj = run(policy, pool, pattern_prompt("<search>GPT-9: capital of France?</search>"))[0]
    assert traj.calls == [] and traj.invalid_actions == 1 and traj.injected == 1
    assert "unknown model" in traj.text
    assert "SmolLM2-Cheap" in traj.text  # the observation lists the valid names


def test_cut_at_action_stops_at_the_closing_tag(policy):
    _, tok = policy
    ids = tok("<think>a</think><search>X: y</search>\nmore text after", add_special_tokens=False)
    cut, action = cut_at_action(tok, ids.input_ids)
    assert action == "search"
    assert tok.decode(ids.input_ids[:cut]).rstrip().endswith("</search>")
    assert "more" not in tok.decode(ids.input_ids[:cut])
    assert cut_at_action(tok, tok("no tags", add_special_tokens=False).input_ids)[1] is None


def test_router_reward_combines_format_outcome_and_cost():
    resolver = ModelNameResolver(["SmolLM2-Cheap"], {})
    good = (
        "<think>ask</think><search>SmolLM2-Cheap: q</search>\n<information>Paris"
        "</information>\n<think>ok</think><answer>Paris</answer>"
    )
    reward = RouterReward(0.5, resolver, TrainConfig(cost_on_correct_only=True))
    logged = {}
    out = reward(
        prompts=["p"] * 3,
        completions=[good, good.replace("<answer>Paris", "<answer>Rome"), "rambling"],
        golden_answers=[["Paris"]] * 3,
        pool_cost=[1e-6, 1e-6, 0.0],
        injected=[1, 1, 0],
        pool_calls=[1, 1, 0],
        invalid_actions=[0, 0, 0],
        pool_errors=[0, 0, 0],
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )
    assert out[2] == -1.0  # bad format
    assert out[1] == pytest.approx(0.0)  # well-formed but wrong: no cost credit either
    assert 0.5 <= out[0] <= 1.0  # correct: 0.5 outcome + 0.5 * normalized cost
    assert logged["router/format_ok"] == pytest.approx(2 / 3)
    # the broken rule is counted by kind, and only failures are
    fails = {k: v for k, v in logged.items() if k.startswith("router/format_fail/")}
    assert fails == {"router/format_fail/does_not_start_with_think": pytest.approx(1 / 3)}
    assert all(validate_param_and_metric_name(name) for name in fails)
    assert logged["router/pool_calls"] == pytest.approx(2 / 3)


def test_router_reward_logs_first_call_shares_per_benchmark():
    resolver = ModelNameResolver(["Cheap", "Dear"], {})
    reward = RouterReward(0.0, resolver, TrainConfig())
    logged = {}
    reward(
        prompts=["p"] * 4,
        completions=["rambling"] * 4,
        golden_answers=[["x"]] * 4,
        pool_cost=[0.0] * 4,
        injected=[0] * 4,
        pool_calls=[1, 1, 1, 0],
        invalid_actions=[0] * 4,
        pool_errors=[0] * 4,
        first_model=["Dear", "Dear", "Cheap", NO_CALL],
        qid=["gsm8k/1", "gsm8k/1", "nq/7", "nq/7"],
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )
    assert logged["router/first/Dear"] == pytest.approx(0.5)
    assert logged["router/first/Cheap"] == pytest.approx(0.25)
    assert logged["router/first/no_call"] == pytest.approx(0.25)  # a name MLflow accepts
    assert logged["router/first/gsm8k/Dear"] == 1.0 and logged["router/first/gsm8k/Cheap"] == 0.0
    assert logged["router/first/nq/Cheap"] == 0.5 and logged["router/first/nq/no_call"] == 0.5
    assert all(validate_param_and_metric_name(name) for name in logged)  # MLflow logs them
    # without question ids (a dataset without them) only the overall shares are logged
    logged.clear()
    reward(
        prompts=["p"],
        completions=["rambling"],
        golden_answers=[["x"]],
        pool_cost=[0.0],
        injected=[0],
        pool_calls=[1],
        invalid_actions=[0],
        pool_errors=[0],
        first_model=["Cheap"],
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )
    shares = {k: v for k, v in logged.items() if k.startswith("router/first/")}
    assert shares == {
        "router/first/Cheap": 1.0,
        "router/first/Dear": 0.0,
        "router/first/no_call": 0.0,
    }


def test_kv_cache_reuse_gives_the_same_trajectories(policy, pool):
    """Group-shared prefill and turn-to-turn cache reuse change the cost, never the tokens."""
    model, tok = policy
    preamble = "Route each question to a model of the pool and answer it.\n" * 3
    prompts = [  # a long shared preamble (like the router instructions), then different rows
        preamble + pattern_prompt("<search>SmolLM2-Cheap: capital of France?</search>"),
        preamble + pattern_prompt("<search>GPT-9: who wrote Hamlet?</search>"),  # invalid
        preamble + pattern_prompt("<search>SmolLM2-Cheap: largest planet?</search>")[:-40],
    ]
    batch = [p for p in prompts for _ in range(2)]  # GRPO groups: duplicates share the prefill
    rc = RolloutConfig(max_turns=2, max_turn_tokens=24, max_final_tokens=8, info_max_tokens=12)
    runs = {}
    for reuse in (False, True):
        engine = RolloutEngine(tok, pool, RolloutConfig(**{**rc.__dict__, "reuse_kv_cache": reuse}))
        runs[reuse] = engine.run(model, batch, greedy=True)
        assert engine._states == []  # caches never outlive a run (the weights change)
        if reuse:  # every row of turn 1 shared its group's prefill; turns 2 and 3 continued
            assert engine.run_log[-1]["shared_prefill_rows"] == 6
            assert engine.run_log[-1]["continued_rows"] >= 4
        # the floor a shared-prefix step computes: each of the 3 distinct prompts once
        log, trajs = engine.run_log[-1], runs[reuse]
        prompt_tokens = sum(len(t.prompt_ids) for t in trajs)
        assert log["sequence_tokens"] - log["shared_prefix_tokens"] == prompt_tokens // 2
    for plain, reused in zip(runs[False], runs[True], strict=True):
        assert reused.completion_ids == plain.completion_ids
        assert reused.env_mask == plain.env_mask
    assert sum(t.injected for t in runs[True]) >= 4  # the second turn really continued
    assert max(t.injected for t in runs[True]) == 2


def test_budget_refuses_calls_and_steps_are_reported_as_they_happen(policy, pool):
    from routerr1.rollout import CallBudget

    model, tok = policy
    prompt = pattern_prompt("<search>SmolLM2-Cheap: capital of France?</search>")
    cfg = RolloutConfig(max_turns=2, max_turn_tokens=24, max_final_tokens=8, info_max_tokens=12)
    events: list[tuple[int, str, object]] = []
    budgets = [None, CallBudget(max_calls=1), CallBudget(max_cost=0.0)]
    free, one, broke = RolloutEngine(tok, pool, cfg).run(
        model,
        [prompt] * 3,
        greedy=True,
        budgets=budgets,
        on_step=lambda i, e: events.append((i, e.kind, e.call)),
    )

    assert len(free.calls) == 2 and free.refused_calls == 0
    assert len(one.calls) == 1 and one.refused_calls == 1  # the second search was refused
    assert broke.calls == [] and broke.refused_calls == 2 and broke.cost == 0
    assert "No model was called: the limit of 1 model calls" in one.text
    assert "the cost limit of $0 is reached" in broke.text
    # each sample's events alternate what it wrote and what it was shown, in order
    kinds = {i: [k for j, k, _ in events if j == i] for i in range(3)}
    assert kinds[0] == ["generated", "information", "generated", "information", "generated"]
    assert kinds[1] == ["generated", "information", "generated", "refused", "generated"]
    assert kinds[2] == ["generated", "refused", "generated", "refused", "generated"]
    assert [c for j, k, c in events if j == 0 and k == "information"] == free.calls
    # the batch's first turn is reported for every sample before any pool call returns
    assert [k for _, k, _ in events[:3]] == ["generated"] * 3
