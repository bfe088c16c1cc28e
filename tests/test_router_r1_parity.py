"""The Router-R1 parity switches (docs/router-r1.md): each one under both of its values.

The rollout tests script the policy's turns (``RolloutEngine._generate`` returns fixed text)
over a byte-level tokenizer and a real ``Pool`` with a stub backend, so the turn loop, the
parsing and the injected observations run for real without a model.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import run_config
from test_grpo_env_mask import byte_tokenizer

from routerr1.config import (
    ConfigError,
    PoolEntry,
    RolloutConfig,
    TrainConfig,
    load_config,
    rollout_config,
    train_config,
)
from routerr1.data import QARecord, with_question_mark
from routerr1.parse import ModelNameResolver, check_format, parse_search
from routerr1.pool.base import Generation, Pool
from routerr1.reward import CostNormalizer
from routerr1.rollout import RolloutEngine, Trajectory
from routerr1.stages import data as data_stages
from routerr1.train import RouterReward, optimizer_args, reward_cost

REPO = Path(__file__).resolve().parents[1]
NAMES = ["Qwen2.5-7B-Instruct", "LLaMA-3.1-8B-Instruct", "LLaMA-3.1-70B-Instruct"]


def test_defaults_are_our_behaviour_and_paper_yaml_runs_router_r1s():
    ours = load_config(REPO / "config" / "config.yaml")
    assert ours["data"]["question_mark"] is False
    assert rollout_config(ours) == RolloutConfig(**ours["rollout"])
    r, t = rollout_config(ours), train_config(ours)
    assert (r.model_match, r.no_action, r.observations) == ("exact", "stop", "routerr1")
    assert (t.format_rules, t.cost_tie_value, t.cost_tokens) == ("routerr1", None, "input_output")
    assert (t.lr_scheduler, t.weight_decay) == ("linear", 0.0)

    paper = load_config(REPO / "config" / "paper.yaml")
    r, t = rollout_config(paper), train_config(paper)
    assert paper["data"]["question_mark"] is True
    assert (r.model_match, r.no_action, r.observations) == ("substring", "continue", "router-r1")
    assert (r.temperature, r.top_p, r.info_max_tokens, r.max_turns) == (1.0, 0.95, 600, 4)
    assert (t.format_rules, t.cost_tie_value, t.cost_tokens) == ("router-r1", 0.5, "output")
    assert (t.lr_scheduler, t.weight_decay, t.cost_window) == ("constant", 0.01, 1000)
    assert paper["eval"]["temperature"] == 0  # Router-R1 evaluates greedily


# -- data.question_mark ------------------------------------------------------------------------


def test_with_question_mark_appends_only_when_missing():
    recs = [QARecord("1", " who wrote hamlet ", ("Shakespeare",), "nq", "test")]
    recs.append(QARecord("2", "Is it?", ("yes",), "nq", "test"))
    out = with_question_mark(recs)
    assert [r.question for r in out] == ["who wrote hamlet?", "Is it?"]
    assert out[0].golden_answers == ("Shakespeare",) and out[0].id == "1"


@pytest.mark.parametrize("question_mark", [False, True])
def test_download_data_question_mark(tiny_mirror, tmp_path, question_mark):
    cfg = {
        "seed": 0,
        "data_mirror": str(tiny_mirror),
        "data": {
            "train_benchmarks": ["nq"],
            "eval_benchmarks": ["nq"],
            "n_train": 4,
            "n_eval": 3,
            "n_profile": 2,
            "hub_repo": "unused",
            "hub_revision": "main",
            "question_mark": question_mark,
        },
    }
    outs = [str(tmp_path / f"{n}.parquet") for n in ("train", "eval", "profile")]
    data_stages.download_data(run_config(**cfg), *outs)
    questions = [q for path in outs for q in pd.read_parquet(path)["question"]]
    assert len(questions) == 9
    # the mirror's questions have no '?'
    assert all(q.endswith("?") for q in questions) is question_mark
    assert any(q.endswith("?") for q in questions) is question_mark


# -- rollout.model_match -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "substring"),
    [
        ("Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct"),  # exact in both modes
        ("qwen", "Qwen2.5-7B-Instruct"),  # contained in one name
        ("llama-3.1-70b", "LLaMA-3.1-70B-Instruct"),
        ("LLaMA-3.1-8B-Instruct-Turbo", "LLaMA-3.1-8B-Instruct"),  # contains a name
        ("llama", None),  # in two names: ambiguous, as in Router-R1 (no size given)
        ("GPT-4o", None),
    ],
)
def test_model_match(written, substring):
    exact = ModelNameResolver(NAMES)
    loose = ModelNameResolver(NAMES, match="substring")
    assert exact.resolve(written) == (written if written in NAMES else None)
    assert loose.resolve(written) == substring


def test_model_match_bad_value_names_the_field():
    with pytest.raises(ValueError, match="match must be one of"):
        ModelNameResolver(NAMES, match="fuzzy")


# -- rollout.no_action and rollout.observations: a scripted policy ------------------------------


class StubBackend:
    def __init__(self, reply: str, fail: bool = False) -> None:
        self.reply, self.fail = reply, fail

    def answer(self, questions, max_new_tokens=32):
        if self.fail:
            raise RuntimeError("connection refused")
        return [Generation(self.reply, 10, 4, 0.01) for _ in questions]


def scripted_run(turns: list[str], reply: str = "Paris", fail: bool = False, **cfg) -> Trajectory:
    """One trajectory whose policy writes ``turns`` in order ('</s>' is the EOS token)."""
    tok = byte_tokenizer()
    entry = PoolEntry("Oracle", "oracle", 0.1, 0.2)
    pool = Pool([entry], lambda e: StubBackend(reply, fail))
    rc = RolloutConfig(**{"max_turns": 3, "info_max_tokens": 64, "reuse_kv_cache": False, **cfg})
    engine = RolloutEngine(tok, pool, rc)
    script = iter(turns)

    def generate(model, contexts, max_new, greedy):
        return [tok(next(script), add_special_tokens=False).input_ids for _ in contexts]

    engine._generate = generate
    return engine.run(None, ["Q: capital of France?\n"], greedy=True)[0]


def test_no_action_stop_ends_the_trajectory():
    traj = scripted_run(["<think>hmm</think></s>", "<answer>Paris</answer>"], no_action="stop")
    assert traj.done and traj.text == "<think>hmm</think>"
    assert traj.answer is None


def test_no_action_continue_goes_on_without_observation_or_eos():
    traj = scripted_run(["<think>hmm</think></s>", "<answer>Paris</answer>"], no_action="continue")
    assert traj.text == "<think>hmm</think><answer>Paris</answer>"
    assert traj.answer == "Paris" and traj.injected == 0
    assert 1 not in traj.completion_ids  # the EOS the policy wrote mid-way was dropped
    assert set(traj.env_mask) == {1}


def injected_text(traj: Trajectory) -> str:
    ids = [t for t, m in zip(traj.completion_ids, traj.env_mask, strict=True) if m == 0]
    return byte_tokenizer().decode(ids)


@pytest.mark.parametrize("observations", ["routerr1", "router-r1"])
def test_observations_wrapper_and_cap(observations):
    long_reply = "Paris is the capital and largest city of France. " * 3
    turns = [
        "<think>ask</think><search>Oracle: capital of France?</search>",
        "<think>ok</think><answer>Paris</answer>",
    ]
    traj = scripted_run(turns, reply=long_reply, info_max_tokens=40, observations=observations)
    text = injected_text(traj)
    if observations == "routerr1":  # the reply is capped inside the tags: the block closes
        assert text.startswith("\n<information>Paris") and text.endswith("</information>\n")
        assert len(text) > 40
    else:  # the wrapped block is capped at 40 tokens: the closing tag is lost
        assert text.startswith("\n\n<information>Paris") and "</information>" not in text
        assert len(text) == 40
    fmt = check_format(traj.text, ModelNameResolver(["Oracle"]), traj.injected)
    assert fmt.ok is (observations == "routerr1")


@pytest.mark.parametrize("observations", ["routerr1", "router-r1"])
def test_observations_after_bad_searches_and_failed_calls(observations):
    answer = "<answer>Paris</answer>"
    malformed = scripted_run(
        ["<search>no separator here</search>", answer], observations=observations
    )
    unknown = scripted_run(["<search>GPT-9: capital?</search>", answer], observations=observations)
    failed = scripted_run(
        ["<search>Oracle: capital?</search>", answer], fail=True, observations=observations
    )
    assert malformed.invalid_actions == unknown.invalid_actions == 1
    assert failed.pool_errors == 1 and failed.answer == "Paris"
    if observations == "routerr1":  # each one explained
        assert malformed.injected == 1 and "Invalid search" in injected_text(malformed)
        assert "unknown model 'GPT-9'" in injected_text(unknown)
        assert "Model Oracle failed: RuntimeError: connection refused" in injected_text(failed)
    else:  # Router-R1: nothing after a malformed search, None after the others
        assert malformed.injected == 0 and injected_text(malformed) == ""
        assert injected_text(unknown) == "\n\n<information>None</information>\n\n"
        assert injected_text(failed) == "\n\n<information>None</information>\n\n"


def test_engine_resolves_names_with_the_configured_match():
    tok = byte_tokenizer()
    pool = Pool([PoolEntry(n, "m", 0.1, 0.2) for n in NAMES], lambda e: StubBackend("x"))
    for match, expected in (("exact", None), ("substring", "Qwen2.5-7B-Instruct")):
        engine = RolloutEngine(tok, pool, RolloutConfig(model_match=match))
        assert parse_search("qwen: capital of France?", engine.resolver).model == expected


# -- train.format_rules ------------------------------------------------------------------------

BODY = "<think>ask</think>\n<search>{search}</search>\n<information>Paris</information>\n"
END = "<think>{think}</think>\n<answer>Paris</answer>"


@pytest.mark.parametrize(
    ("search", "think", "reason"),
    [
        ("Oracle: Paris: the capital?", "ok", "exactly one"),
        ("Oracle: what does oracle know about Paris?", "ok", "repeats the model name"),
        ("Oracle: answer your-query please", "ok", "placeholder"),
        ("Oracle: capital of France?", "...", "only '...'"),
    ],
)
def test_format_rules(search, think, reason):
    text = BODY.format(search=search) + END.format(think=think)
    resolver = ModelNameResolver(["Oracle"])
    assert check_format(text, resolver, 1, rules="routerr1").ok
    bad = check_format(text, resolver, 1, rules="router-r1")
    assert not bad.ok and reason in bad.reason
    good = BODY.format(search="Oracle: capital of France?") + END.format(think="ok")
    assert check_format(good, resolver, 1, rules="router-r1").ok
    with pytest.raises(ValueError, match="rules must be one of"):
        check_format(good, resolver, 1, rules="strict")


@pytest.mark.parametrize("rules", ["routerr1", "router-r1"])
def test_router_reward_uses_the_format_rules(rules):
    text = BODY.format(search="Oracle: Paris: the capital?") + END.format(think="ok")
    reward = RouterReward(0.0, ModelNameResolver(["Oracle"]), TrainConfig(format_rules=rules))
    out = reward(
        prompts=["p"],
        completions=[text],
        golden_answers=[["Paris"]],
        pool_cost=[1e-6],
        injected=[1],
        pool_calls=[1],
        invalid_actions=[0],
        pool_errors=[0],
    )
    assert out == [1.0 if rules == "routerr1" else -1.0]


# -- train.cost_tie_value ----------------------------------------------------------------------


@pytest.mark.parametrize("tie_value", [None, 0.5])
def test_cost_tie_value(tie_value):
    norm = CostNormalizer(window=10, tie_value=tie_value)
    norm.observe([4e-6] * 10)  # every percentile is the same
    cheap, dear = norm.normalize(0.0), norm.normalize(9e-6)
    if tie_value is None:  # as cheap as anything seen is 1, dearer is neutral
        assert (cheap, dear, norm.normalize(4e-6)) == (1.0, 0.5, 1.0)
    else:  # Router-R1: 0.5 for every trajectory
        assert cheap == dear == norm.normalize(4e-6) == 0.5
    reward = RouterReward(0.5, ModelNameResolver(["Oracle"]), TrainConfig(cost_tie_value=tie_value))
    assert reward.normalizer.tie_value == tie_value


def test_cost_tie_value_out_of_range_names_the_field():
    with pytest.raises(ValueError, match="tie_value"):
        CostNormalizer(tie_value=1.5)


# -- train.cost_tokens -------------------------------------------------------------------------


def test_cost_tokens():
    from routerr1.pool.base import PoolCall

    pool = Pool([PoolEntry("Oracle", "m", 1.0, 3.0)], lambda e: StubBackend("x"))
    traj = Trajectory(prompt_ids=[])
    traj.calls = [PoolCall("Oracle", "q", "a", 1000, 100, (1000 * 1.0 + 100 * 3.0) / 1e6, 0.1)]
    assert reward_cost(traj, pool, "input_output") == pytest.approx(1.3e-3)
    assert reward_cost(traj, pool, "output") == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="train.cost_tokens"):
        reward_cost(traj, pool, "input")


# -- train.lr_scheduler and train.weight_decay ------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "decay", "warmup", "rates"),
    [
        ("linear", 0.0, 0, {1: 9e-4, 5: 5e-4}),
        ("constant", 0.01, 0, {1: 1e-3, 5: 1e-3}),
        # warmup ramps 0 -> lr over 4 steps, then the schedule: constant holds, linear decays
        ("constant", 0.0, 4, {0: 0.0, 2: 5e-4, 4: 1e-3, 8: 1e-3}),
        ("linear", 0.0, 4, {2: 5e-4, 4: 1e-3, 7: 5e-4}),
    ],
)
def test_optimizer_args(tmp_path, schedule, decay, warmup, rates):
    import torch
    from transformers import get_scheduler
    from trl import GRPOConfig

    args = optimizer_args(
        TrainConfig(lr_scheduler=schedule, weight_decay=decay, warmup_steps=warmup)
    )
    grpo = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, learning_rate=1e-3, **args)
    assert grpo.weight_decay == decay
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW(params, lr=grpo.learning_rate, weight_decay=grpo.weight_decay)
    total = 10
    sched = get_scheduler(
        grpo.lr_scheduler_type, opt, num_warmup_steps=grpo.warmup_steps, num_training_steps=total
    )
    seen = {0: sched.get_last_lr()[0]}
    for step in range(1, total):
        opt.step()
        sched.step()
        seen[step] = sched.get_last_lr()[0]
    for step, rate in rates.items():
        assert seen[step] == pytest.approx(rate, abs=1e-12), f"step {step}"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: RolloutConfig(model_match="fuzzy"), "rollout.model_match"),
        (lambda: RolloutConfig(no_action="retry"), "rollout.no_action"),
        (lambda: RolloutConfig(observations="verbose"), "rollout.observations"),
        (lambda: TrainConfig(format_rules="strict"), "train.format_rules"),
        (lambda: TrainConfig(cost_tokens="input"), "train.cost_tokens"),
        (lambda: TrainConfig(lr_scheduler="cosine"), "train.lr_scheduler"),
        (lambda: TrainConfig(cost_tie_value=2.0), "train.cost_tie_value"),
        (lambda: TrainConfig(warmup_steps=-1), "train.warmup_steps"),
    ],
)
def test_a_bad_parity_value_names_its_field(make, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()
