"""Format warm start: trajectories from real pool answers, masked like GRPO, SFT-trained."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import REPO

from routerr1.config import PoolEntry, RolloutConfig
from routerr1.data import QARecord
from routerr1.parse import ModelNameResolver, check_format
from routerr1.prompt import Descriptor
from routerr1.warmstart import (
    WarmStartConfig,
    benchmark_routing,
    build_examples,
    pick_target,
    predicted_routing,
    reward_routing,
    warm_start,
)

ENTRIES = [
    PoolEntry("Tiny", "t", 0.01, 0.02),
    PoolEntry("Mid", "m", 0.05, 0.10),
    PoolEntry("Big", "b", 0.10, 0.20),
]
DESCS = [Descriptor(e.name, "", e.price_in, e.price_out, 0.1, 5.0, 7.0) for e in ENTRIES]


def answers(question: str, correct: set[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": e.name,
                "question": question,
                "prediction": f"{e.name} says <answer>x",
                "em": float(e.name in correct),
            }
            for e in ENTRIES
        ]
    )


def test_pick_target_prefers_cheapest_correct_else_largest():
    assert pick_target(answers("q", {"Mid", "Big"}), ENTRIES)[0] == "Mid"
    assert pick_target(answers("q", {"Tiny", "Big"}), ENTRIES)[0] == "Tiny"
    assert pick_target(answers("q", set()), ENTRIES)[0] == "Big"
    assert pick_target(answers("q", {"Big"}), ENTRIES)[1] == "Big says <answer>x"


def priced_answers(question: str, correct: set[str], failed: frozenset = frozenset()):
    """Answers costed like real calls: the same tokens at each model's prices."""
    rows = answers(question, correct)
    price = {e.name: (e.price_in, e.price_out) for e in ENTRIES}
    rows["cost"] = [(100 * price[m][0] + 10 * price[m][1]) / 1e6 for m in rows["model"]]
    rows["error"] = [("timeout" if m in failed else None) for m in rows["model"]]
    rows.loc[rows["model"].isin(failed), ["cost", "em"]] = 0.0
    return rows


def test_reward_routing_follows_the_grpo_reward_at_each_alpha():
    # over the training set Big is right most often and Tiny least
    train = pd.concat(
        [
            priced_answers("q0", {"Mid"}),
            priced_answers("q1", {"Big"}),
            priced_answers("q2", {"Big", "Mid"}),
            priced_answers("q3", set()),
            priced_answers("q4", {"Tiny", "Big"}),
        ]
    ).reset_index(drop=True)
    rule0, scores0 = reward_routing(train, 0.0, True)
    rule9, scores9 = reward_routing(train, 0.9, False)
    rule9c, scores9c = reward_routing(train, 0.9, True)
    assert rule0.prior["Big"] > rule0.prior["Mid"] > rule0.prior["Tiny"]  # mean EM at alpha 0

    def pick(question, rule, scores):
        return pick_target(train[train["question"] == question], ENTRIES, rule, scores)[0]

    # alpha 0: the correct model; ties (both or none right) go to the better model overall
    assert pick("q0", rule0, scores0) == "Mid"
    assert pick("q2", rule0, scores0) == "Big"
    assert pick("q3", rule0, scores0) == "Big"
    # alpha 0.9, cost paid on every answer: the cheapest model even when it is wrong
    assert {pick(q, rule9, scores9) for q in ("q0", "q1", "q2", "q3", "q4")} == {"Tiny"}
    # alpha 0.9, cost paid on correct answers only: the cheapest correct model
    assert pick("q1", rule9c, scores9c) == "Big"
    assert pick("q2", rule9c, scores9c) == "Mid"
    assert pick("q4", rule9c, scores9c) == "Tiny"


def test_reward_routing_never_targets_a_failed_call():
    train = pd.concat(
        [priced_answers("q0", set(), failed=frozenset({"Tiny"})), priced_answers("q1", {"Mid"})]
    ).reset_index(drop=True)
    rule, scores = reward_routing(train, 0.9, False)
    without = reward_routing(train[train["error"].isna()], 0.9, False)[0]
    assert rule.prior == without.prior  # a failed call is no evidence, and not a free route
    q0 = train[train["question"] == "q0"]
    assert pick_target(q0, ENTRIES, rule, scores)[0] == "Mid"  # cheapest call that succeeded
    with pytest.raises(ValueError, match="scores"):
        pick_target(q0, ENTRIES, rule)
    with pytest.raises(ValueError, match="cost"):
        reward_routing(train.drop(columns="cost"), 0.9, False)


def test_predicted_routing_follows_what_the_question_text_predicts():
    # "sum" questions: only Big is right; "capital" questions: Tiny and Big are right, and a
    # few exceptions no text predicts (the oracle would chase them; a text router cannot)
    rows = []
    for i in range(12):
        rows.append(priced_answers(f"what is the sum of {i} and {i + 3}", {"Big"}))
        right = {"Mid"} if i == 5 else {"Tiny", "Big"}  # one unpredictable exception
        rows.append(priced_answers(f"what is the capital of country {i}", right))
    train = pd.concat(rows).reset_index(drop=True)
    rule0, scores0 = predicted_routing(train, 0.0, True)
    rule5, scores5 = predicted_routing(train, 0.5, True)

    def pick(question, rule, scores):
        return pick_target(train[train["question"] == question], ENTRIES, rule, scores)[0]

    # alpha 0: the best predicted model per kind of question (ties go to the better prior)
    assert {pick(f"what is the sum of {i} and {i + 3}", rule0, scores0) for i in range(12)} == {
        "Big"
    }
    # a cost weight sends the capitals, which Tiny answers as well as Big, to Tiny
    capitals = {pick(f"what is the capital of country {i}", rule5, scores5) for i in range(12)}
    assert capitals == {"Tiny"}  # the exception (Mid right) is not predictable: no Mid target
    assert {pick(f"what is the sum of {i} and {i + 3}", rule5, scores5) for i in range(12)} == {
        "Big"
    }
    with pytest.raises(ValueError, match="question"):
        predicted_routing(train.drop(columns="question"), 0.5, True)


def test_benchmark_routing_gives_each_benchmark_its_best_model_at_each_alpha():
    # maths: only Big is ever right; capitals: Tiny and Big mostly right, Mid once (which no
    # reading of the text predicts, so no capital question is routed to Mid)
    rows, benchmark_of = [], {}
    for i in range(6):
        q = f"sum of {i} and {i + 3}"
        rows.append(priced_answers(q, {"Big"} if i % 2 else set()))
        benchmark_of[q] = "maths"
        q = f"capital of country {i}"
        rows.append(priced_answers(q, {"Mid"} if i == 5 else {"Tiny", "Big"}))
        benchmark_of[q] = "capitals"
    train = pd.concat(rows).reset_index(drop=True)
    train["benchmark"] = train["question"].map(benchmark_of)

    def targets(alpha):
        rule, scores = benchmark_routing(train, alpha, True)
        return {
            q: pick_target(train[train["question"] == q], ENTRIES, rule, scores)[0]
            for q in benchmark_of
        }

    at0, at9 = targets(0.0), targets(0.9)
    # alpha 0: Big on both kinds (it is as right as Tiny on capitals; ties go to the prior),
    # even on the maths questions Big got wrong: the target is the kind's, not the question's
    assert {at0[q] for q in benchmark_of if q.startswith("sum")} == {"Big"}
    assert {at9[q] for q in benchmark_of if q.startswith("sum")} == {"Big"}
    # a cost weight sends every capital, the exception included, to the cheap model
    assert {at9[q] for q in benchmark_of if q.startswith("capital")} == {"Tiny"}
    with pytest.raises(ValueError, match="no benchmark"):
        only_one = train["question"].map({"sum of 0 and 3": "maths"})
        benchmark_routing(train.assign(benchmark=only_one), 0.0, True)
    with pytest.raises(ValueError, match="cost"):
        benchmark_routing(train.drop(columns="cost"), 0.0, True)


def test_config_rejects_an_unknown_routing_rule_and_explore_share():
    with pytest.raises(ValueError, match="warm_start.routing"):
        WarmStartConfig(routing="cheapest")
    with pytest.raises(ValueError, match="warm_start.explore"):
        WarmStartConfig(explore=1.0)


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.slow
def test_examples_mask_prompt_and_information_and_are_well_formed(tokenizer):
    recs = [
        QARecord("1", "who wrote hamlet", ("Shakespeare",), "nq", "train"),
        QARecord("2", "capital of peru", ("Lima",), "nq", "train"),
    ]
    pool_answers = pd.concat([answers(recs[0].question, {"Mid"}), answers(recs[1].question, set())])
    rows = build_examples(recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig())
    targets = {r["question"]: r["target_model"] for r in rows}
    assert targets == {"who wrote hamlet": "Mid", "capital of peru": "Big"}
    one = build_examples(recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig(), limit=1)
    assert [r["input_ids"] for r in one] == [rows[0]["input_ids"]]
    resolver = ModelNameResolver([e.name for e in ENTRIES], {})
    for row in rows:
        ids, mask = row["input_ids"], row["completion_mask"]
        assert len(ids) == len(mask)
        first = mask.index(1)
        completion = tokenizer.decode(ids[first:], skip_special_tokens=True)
        assert check_format(completion, resolver, 1).ok, completion
        trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
        masked = tokenizer.decode(
            [t for t, m in zip(ids[first:], mask[first:], strict=True) if not m]
        )
        info = masked.strip().removeprefix("<information>").split("</information>")[0]
        assert info == f"{row['target_model']} says x"  # the pool reply's stray tags stripped
        assert "<search>" in trained and f"<answer>{info}</answer>" in trained
        assert "<information>" not in trained
        assert masked.strip().startswith("<information>")
        assert "<answer>" not in masked
    gold = build_examples(
        recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig(), answer="gold"
    )
    for row, rec in zip(gold, recs, strict=True):
        pairs = zip(row["input_ids"], row["completion_mask"], strict=True)
        trained = tokenizer.decode([t for t, m in pairs if m])
        assert f"<answer>{rec.golden_answers[0]}</answer>" in trained
    with pytest.raises(ValueError, match="answer"):
        build_examples(recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig(), answer="x")


def test_limit_samples_every_benchmark_evenly_whatever_the_file_order(tokenizer):
    # training files come benchmark by benchmark; a prefix of them would be one benchmark only
    recs = [QARecord(f"n{i}", f"nq question {i}", ("a",), "nq", "train") for i in range(6)]
    recs += [
        QARecord(f"h{i}", f"Hotpot Question {i}?", ("b",), "hotpotqa", "train") for i in range(6)
    ]
    pool_answers = pd.concat([answers(r.question, {"Tiny"}) for r in recs])

    def sample(seed):
        rows = build_examples(
            recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig(), seed=seed, limit=4
        )
        return [r["question"] for r in rows], [r["benchmark"] for r in rows]

    questions, benchmarks = sample(0)
    assert sorted(benchmarks) == ["hotpotqa"] * 2 + ["nq"] * 2
    assert sample(0)[0] == questions  # seeded: the same run makes the same examples
    assert {tuple(sample(s)[0]) for s in range(1, 6)} != {tuple(questions)}
    everything = build_examples(recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig())
    assert sorted(r["question"] for r in everything) == sorted(r.question for r in recs)


def test_explore_routes_a_share_of_trajectories_to_other_models_with_their_answers(tokenizer):
    recs = [QARecord(f"q{i}", f"capital of country {i}", ("a",), "nq", "train") for i in range(40)]
    pool_answers = pd.concat([priced_answers(r.question, {"Tiny"}) for r in recs])

    def targets(explore, seed=0):
        rows = build_examples(
            recs,
            pool_answers,
            ENTRIES,
            DESCS,
            tokenizer,
            RolloutConfig(),
            seed=seed,
            routing=(0.5, True),
            explore=explore,
        )
        return rows, [r["target_model"] for r in rows]

    rows, plain = targets(0.0)
    assert set(plain) == {"Tiny"}
    rows, explored = targets(0.3)
    others = [m for m in explored if m != "Tiny"]
    assert 4 <= len(others) <= 20 and {"Mid", "Big"} <= set(others)
    assert targets(0.3)[1] == explored  # seeded
    for row in rows:  # each trajectory relays the answer of the model it searched
        model = row["target_model"]
        text = tokenizer.decode(row["input_ids"])
        assert f"<search>{model}:" in text and f"<answer>{model} says x</answer>" in text


def test_uniform_routing_teaches_the_format_and_no_route(tokenizer):
    """routing: uniform draws each question's model evenly, whatever the answers' rewards."""
    recs = [QARecord(f"q{i}", f"capital of country {i}", ("a",), "nq", "train") for i in range(60)]
    pool_answers = pd.concat([priced_answers(r.question, {"Tiny"}) for r in recs])

    def build(seed):
        return build_examples(
            recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig(), seed=seed,
            routing_rule="uniform",
        )  # fmt: skip

    rows = build(0)
    counts = pd.Series([r["target_model"] for r in rows]).value_counts()
    # Tiny is the only correct (and cheapest) model, yet each model gets about a third
    assert set(counts.index) == {"Tiny", "Mid", "Big"} and counts.min() >= 10
    assert [r["target_model"] for r in build(0)] == [r["target_model"] for r in rows]  # seeded
    for row in rows:  # each trajectory relays the answer of the model it searched
        model = row["target_model"]
        text = tokenizer.decode(row["input_ids"])
        assert f"<search>{model}:" in text and f"<answer>{model} says x</answer>" in text
    # a failed call is never a target; a question whose calls all failed is skipped
    broken = pd.concat(
        [
            priced_answers("capital of country 0", {"Tiny"}, failed=frozenset({"Mid", "Big"})),
            priced_answers("capital of country 1", set(), failed=frozenset({"Tiny", "Mid", "Big"})),
        ]
    )
    kept = build_examples(
        recs[:2], broken, ENTRIES, DESCS, tokenizer, RolloutConfig(), routing_rule="uniform"
    )
    assert [(r["question"], r["target_model"]) for r in kept] == [("capital of country 0", "Tiny")]
    assert WarmStartConfig(routing="uniform").routing == "uniform"


def test_question_kinds_put_the_kind_before_the_model_in_the_trained_thought(tokenizer):
    """With warm_start.question_kinds the first thought names the question's kind, then the
    model: the policy writes type-specific tokens before the route."""
    recs = [
        QARecord("m", "sum of 2 and 3", ("5",), "maths", "train"),
        QARecord("c", "capital of peru", ("Lima",), "capitals", "train"),
    ]
    pool_answers = pd.concat([answers(r.question, {"Tiny"}) for r in recs])
    kinds = {"maths": "an arithmetic word problem", "capitals": "a question about a capital"}
    rows = build_examples(
        recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig(), question_kinds=kinds
    )
    blind = build_examples(recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig())
    resolver = ModelNameResolver([e.name for e in ENTRIES], {})
    for row, plain in zip(rows, blind, strict=True):
        ids, mask = row["input_ids"], row["completion_mask"]
        trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
        kind = kinds[row["benchmark"]]
        thought = trained.split("<think>")[1].split("</think>")[0]
        assert thought.startswith(f"This is {kind}. ")
        assert thought.index(kind) < thought.index(row["target_model"])
        completion = tokenizer.decode(ids[mask.index(1) :], skip_special_tokens=True)
        assert check_format(completion, resolver, 1).ok
        assert "This is" not in tokenizer.decode(plain["input_ids"])  # empty map: type-blind
    with pytest.raises(ValueError, match="question_kinds.*'capitals'"):
        build_examples(
            recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig(),
            question_kinds={"maths": "an arithmetic word problem"},
        )  # fmt: skip


def test_config_names_a_training_benchmark_without_a_question_kind(tmp_path):
    from routerr1.config import ConfigError, load_configs

    overlay = tmp_path / "kinds.yaml"
    overlay.write_text(
        "data: {train_benchmarks: [nq, hotpotqa]}\n"
        "warm_start: {question_kinds: {nq: a single-fact question}}\n"
    )
    with pytest.raises(ConfigError, match=r"warm_start.question_kinds.*hotpotqa"):
        load_configs([REPO / "config" / "config.yaml", overlay])
    overlay.write_text("warm_start: {question_kinds: {nq: ''}}\n")
    with pytest.raises(ConfigError, match="question_kinds"):
        load_configs([REPO / "config" / "config.yaml", overlay])


def test_relay_skips_questions_whose_target_returned_nothing(tokenizer):
    rec = QARecord("1", "who wrote hamlet", ("Shakespeare",), "nq", "train")
    empty = answers(rec.question, set()).assign(prediction="")
    assert build_examples([rec], empty, ENTRIES, DESCS, tokenizer, RolloutConfig()) == []
    gold = build_examples([rec], empty, ENTRIES, DESCS, tokenizer, RolloutConfig(), answer="gold")
    assert len(gold) == 1


def test_sft_without_trajectories_names_the_failed_calls(tmp_path):
    # every routed call failed: a clear error before the policy loads, no partial output
    with pytest.raises(ValueError, match="no training trajectories.*failed"):
        warm_start(tmp_path / "no-policy", [], tmp_path / "warm", WarmStartConfig())
    assert not (tmp_path / "warm").exists() and not (tmp_path / "warm.partial").exists()


def test_config_rejects_an_unknown_answer_source():
    with pytest.raises(ValueError, match="warm_start.answer"):
        WarmStartConfig(answer="pool")


@pytest.mark.slow
@pytest.mark.parametrize("lora_r", [0, 8])
def test_sft_runs_and_lowers_the_loss(smollm2_dir, tokenizer, tmp_path, lora_r):
    recs = [
        QARecord(str(i), q, (a,), "nq", "train")
        for i, (q, a) in enumerate(
            [
                ("who wrote hamlet", "Shakespeare"),
                ("capital of peru", "Lima"),
                ("largest planet", "Jupiter"),
                ("author of 1984", "Orwell"),
            ]
        )
    ]
    pool_answers = pd.concat([answers(r.question, {"Tiny"}) for r in recs])
    rows = build_examples(
        recs, pool_answers, ENTRIES, DESCS, tokenizer, RolloutConfig(compressed_descriptors=True)
    )
    out = tmp_path / "warm"
    info = warm_start(
        smollm2_dir,
        rows,
        out,
        WarmStartConfig(epochs=3, batch_size=4, learning_rate=1e-4 if lora_r == 0 else 1e-3),
        lora_r=lora_r,
    )
    assert info["steps"] == 3 and (out / "config.json").is_file()
    assert info["last_loss"] < info["first_loss"]
    assert not (tmp_path / "warm.partial").exists()
    if lora_r:  # merged into a plain model that differs from the base
        from transformers import AutoModelForCausalLM

        assert not (out / "adapter_config.json").exists()
        base = AutoModelForCausalLM.from_pretrained(smollm2_dir).state_dict()
        tuned = AutoModelForCausalLM.from_pretrained(out).state_dict()
        assert tuned.keys() == base.keys()
        name = next(k for k in base if k.endswith("self_attn.q_proj.weight"))
        assert not torch.equal(tuned[name], base[name])
