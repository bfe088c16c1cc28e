"""The vLLM switch: config, GRPO arguments, and a rollout identical to the transformers path.

vLLM itself needs a GPU, so the engine is faked here by one that answers with what the
transformers path generates; the test then checks that everything around the token source
(contexts sent, budgets, cuts, injections, env_mask) is the same.
"""

from __future__ import annotations

import sys
import types

import pytest

from routerr1.config import PoolEntry, RolloutConfig, VllmConfig, validate_config, vllm_config
from routerr1.rollout import STOP_STRINGS, RolloutEngine
from routerr1.train import make_rollout_func
from routerr1.vllm_rollout import (
    VllmRolloutEngine,
    check_runtime,
    grpo_vllm_kwargs,
    sampling_settings,
)


def minimal(**vllm) -> dict:
    raw = {
        "models": {"m": {"source": {"kind": "hub", "repo_id": "org/m"}}},
        "pool": [{"name": "M", "model": "m", "price_in": 0.1, "price_out": 0.2}],
        "policy": {"model": "m"},
    }
    if vllm:
        raw["vllm"] = vllm
    return validate_config(raw)


def test_transformers_is_the_default_path():
    vcfg = vllm_config(minimal())
    assert vcfg == VllmConfig() and not vcfg.enabled
    assert grpo_vllm_kwargs(vcfg) == {}
    check_runtime(vcfg, processes=4, cuda=False, vllm_installed=False)  # nothing to check


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="vllm.mode"):
        VllmConfig(enabled=True, mode="remote")
    with pytest.raises(ValueError, match="vllm.server_base_url"):
        VllmConfig(enabled=True, mode="server")
    with pytest.raises(ValueError, match="vllm.gpu_memory_utilization"):
        VllmConfig(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="vllm.mode"):
        minimal(enabled=True, mode="remote")  # the schema refuses it before any job runs


def test_runtime_checks_before_any_model_loads():
    on = VllmConfig(enabled=True)
    with pytest.raises(ValueError, match="need a GPU"):
        check_runtime(on, processes=1, cuda=False, vllm_installed=True)
    with pytest.raises(ValueError, match="not installed"):
        check_runtime(on, processes=1, cuda=True, vllm_installed=False)
    check_runtime(on, processes=4, cuda=True, vllm_installed=True)  # colocate: one per GPU
    server = VllmConfig(enabled=True, mode="server", server_base_url="http://h:8000")
    check_runtime(server, processes=1, cuda=True, vllm_installed=True)
    with pytest.raises(ValueError, match="vllm.mode"):
        check_runtime(server, processes=2, cuda=True, vllm_installed=True)


def test_grpo_arguments_for_each_mode(tmp_path):
    from trl import GRPOConfig

    colocate = grpo_vllm_kwargs(VllmConfig(enabled=True, gpu_memory_utilization=0.4))
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **colocate)
    assert args.use_vllm and args.vllm_mode == "colocate"
    assert args.vllm_gpu_memory_utilization == 0.4 and args.vllm_tensor_parallel_size == 1
    assert not args.vllm_importance_sampling_correction  # our rollout returns no logprobs
    server = grpo_vllm_kwargs(
        VllmConfig(enabled=True, mode="server", server_base_url="http://h:8000")
    )
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **server)
    assert args.vllm_mode == "server" and args.vllm_server_base_url == "http://h:8000"


def test_sampling_matches_the_transformers_settings():
    greedy = sampling_settings(24, True, temperature=1.0, top_p=0.9)
    assert greedy["temperature"] == 0.0 and greedy["max_tokens"] == 24 and greedy["n"] == 1
    assert greedy["stop"] == STOP_STRINGS and greedy["include_stop_str_in_output"]
    sampled = sampling_settings(8, False, temperature=0.7, top_p=0.9)
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (0.7, 0.9, 0)


class FakeVllm:
    """TRL's VLLMGeneration stand-in that replays what the transformers path generated."""

    def __init__(self, mode: str, replies: dict[tuple[int, ...], list[int]]) -> None:
        self.mode = mode
        self.replies = replies
        self.requests: list[dict] = []
        self.llm = types.SimpleNamespace(generate=self._llm_generate)
        self.vllm_client = types.SimpleNamespace(generate=self._client_generate)

    def _answer(self, contexts, settings):
        self.requests.append({"contexts": contexts, **settings})
        return [self.replies[tuple(c)] for c in contexts]

    def _llm_generate(self, prompts, sampling_params, use_tqdm):
        rows = self._answer([p["prompt_token_ids"] for p in prompts], dict(sampling_params))
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=r)]) for r in rows]

    def _client_generate(self, prompts, n, generation_kwargs, **settings):
        assert n == 1 and generation_kwargs["stop"] == STOP_STRINGS
        return {"completion_ids": self._answer(prompts, settings)}


@pytest.fixture(scope="module")
def reference(smollm2_dir):
    """The transformers rollout, with every generate call's contexts and replies recorded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from routerr1.pool.base import local_pool

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    pool = local_pool(
        [PoolEntry("SmolLM2-Cheap", "smol", 0.02, 0.04, max_new_tokens=8)], {"smol": smollm2_dir}
    )
    rc = RolloutConfig(max_turns=1, max_turn_tokens=24, max_final_tokens=8, info_max_tokens=12)
    search = "<think>check</think>\n<search>SmolLM2-Cheap: capital of France?</search>\n"
    prompts = [search * 8 + "<think>check</think>\n", "Q: what is 2+2?\nA:"]
    engine = RolloutEngine(tok, pool, rc)
    calls: list[tuple[list[list[int]], int]] = []
    replies: dict[tuple[int, ...], list[int]] = {}
    generate = engine._generate

    def recording(model, contexts, max_new, greedy):
        rows = generate(model, contexts, max_new, greedy)
        calls.append(([list(c) for c in contexts], max_new))
        replies.update({tuple(c): r for c, r in zip(contexts, rows, strict=True)})
        return rows

    engine._generate = recording
    trajs = engine.run(model, prompts, greedy=True)
    return types.SimpleNamespace(
        tok=tok, pool=pool, rc=rc, prompts=prompts, trajs=trajs, calls=calls, replies=replies
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_vllm_rollout_equals_the_transformers_rollout(reference, monkeypatch, mode):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=dict))
    engine = VllmRolloutEngine(reference.tok, reference.pool, reference.rc)
    fake = FakeVllm(mode, reference.replies)
    engine.attach(fake)
    got = engine.run(None, reference.prompts, greedy=True)

    expected = reference.trajs
    assert expected[0].injected == 1  # the loop really went through a pool call
    for e, g in zip(expected, got, strict=True):
        assert g.completion_ids == e.completion_ids and g.env_mask == e.env_mask
        assert [(c.model, c.query) for c in g.calls] == [(c.model, c.query) for c in e.calls]
    # vLLM was asked for the same contexts at the same budgets, greedily
    assert [(r["contexts"], r["max_tokens"]) for r in fake.requests] == reference.calls
    assert [r["max_tokens"] for r in fake.requests] == [24, 8]
    assert {r["temperature"] for r in fake.requests} == {0.0}
    # turn 2's context carries the injected <information> block
    first, context = expected[0], fake.requests[1]["contexts"][0]
    k = len(context) - len(first.prompt_ids)
    assert context == first.prompt_ids + first.completion_ids[:k]
    assert first.env_mask[k - 1] == 0

    # through TRL's rollout_func: the trainer's vLLM engine is attached and samples
    trainer = types.SimpleNamespace(vllm_generation=fake)
    out = make_rollout_func(engine)(reference.prompts, trainer)
    assert out["env_mask"] == [t.env_mask for t in expected] and out["logprobs"] is None
    assert fake.requests[-1]["temperature"] == reference.rc.temperature
