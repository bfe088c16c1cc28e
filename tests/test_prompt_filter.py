"""train.prompt_filter: GRPO samples only the questions where the pool model's choice matters."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from test_seeds import REPO, _plan

from routerr1.config import ConfigError, RunConfig, TrainConfig, validate_config
from routerr1.data import QARecord, records_to_frame
from routerr1.io import write_parquet_atomic
from routerr1.metrics import exact_match, f1_score
from routerr1.stages.train import training_questions
from routerr1.train import routes_differ


def _records() -> list[QARecord]:
    return [
        QARecord(id=str(i), question=q, golden_answers=(gold,), benchmark=b, split="test")
        for i, (q, gold, b) in enumerate(
            [
                ("How many apples?", "12", "gsm8k"),  # only the reasoner is right
                ("Who wrote Hamlet?", "Shakespeare", "nq"),  # every model is wrong
                ("Capital of France?", "Paris", "nq"),  # every model is right
                ("Where is the Louvre?", "Paris France", "hotpotqa"),  # F1 differs, EM does not
                ("Which river?", "Nile", "nq"),  # the cheap model failed, the other is wrong
            ]
        )
    ]


def _answers(records: list[QARecord]) -> pd.DataFrame:
    predictions = {
        "How many apples?": {"Cheap": "7", "Reason": "12"},
        "Who wrote Hamlet?": {"Cheap": "Marlowe", "Reason": "Bacon"},
        "Capital of France?": {"Cheap": "Paris", "Reason": "paris"},
        "Where is the Louvre?": {"Cheap": "Paris", "Reason": "Lyon"},
        "Which river?": {"Cheap": "", "Reason": "Amazon"},  # a failed call: empty text
    }
    gold = {r.question: list(r.golden_answers) for r in records}
    return pd.DataFrame(  # scored as the pool_answers job scores them (pool.profile)
        [
            {
                "question": q,
                "model": m,
                "prediction": p,
                "golden_answers": gold[q],
                "em": exact_match(p, gold[q]),
                "f1": f1_score(p, gold[q]),
            }
            for q, by_model in predictions.items()
            for m, p in by_model.items()
        ]
    )


def test_keeps_the_questions_whose_models_score_differently():
    records = _records()
    kept = routes_differ(records, _answers(records), "em")
    assert [r.question for r in kept] == ["How many apples?"]
    # F1 credits "Paris" against "Paris France", so the Louvre question joins, in order
    kept_f1 = routes_differ(records, _answers(records), "f1")
    assert [r.question for r in kept_f1] == ["How many apples?", "Where is the Louvre?"]


def test_a_question_without_pool_answers_or_an_empty_result_names_the_key():
    records = _records()
    answers = _answers(records)
    with pytest.raises(ValueError, match=r"train.prompt_filter: .*miss 1 of 5.*Which river"):
        routes_differ(records, answers[answers["question"] != "Which river?"], "em")
    with pytest.raises(ValueError, match=r"train.prompt_filter: .*keeps none of the 2"):
        routes_differ(records[1:3], answers, "em")
    with pytest.raises(ValueError, match=r"train.prompt_filter: .*\['f1'\]"):
        routes_differ(records, answers.drop(columns="f1"), "f1")


def _run(**train) -> RunConfig:
    raw = {
        "models": {"m": {"source": {"kind": "hub", "repo_id": "org/m"}}},
        "pool": [{"name": "M", "model": "m", "price_in": 0.1, "price_out": 0.2}],
        "policy": {"model": "m"},
        "train": train,
    }
    return RunConfig.from_dict(validate_config(raw))


def test_the_train_stage_reads_the_filter_from_the_files_the_rule_hands_over(tmp_path):
    records = _records()
    train_in = tmp_path / "train.parquet"
    write_parquet_atomic(records_to_frame(records), train_in)
    answers_in = tmp_path / "pool_answers.parquet"
    write_parquet_atomic(_answers(records), answers_in)
    assert len(training_questions(_run(), str(train_in), None)) == 5  # the default samples all
    kept = training_questions(_run(prompt_filter="routes_differ"), str(train_in), str(answers_in))
    assert [r.id for r in kept] == ["0"]
    with pytest.raises(ValueError, match="train.prompt_filter: routes_differ needs the pool"):
        training_questions(_run(prompt_filter="routes_differ"), str(train_in), None)


def test_an_unknown_filter_is_refused_with_the_key():
    with pytest.raises(ConfigError, match="train.prompt_filter"):
        TrainConfig(prompt_filter="hardest")
    with pytest.raises(ConfigError, match="prompt_filter"):
        _run(prompt_filter="hardest")


@pytest.mark.parametrize("prompt_filter", ["none", "routes_differ"])
def test_training_waits_for_the_pool_answers_only_with_the_filter(
    tmp_path, tiny_mirror, prompt_filter
):
    cfg = yaml.safe_load((REPO / "tests" / "data" / "smoke.yaml").read_text())
    cfg["warm_start"]["enabled"] = False  # else the warm start needs the answers anyway
    target = "results/train/alpha~0.0/model"
    cfg["train"]["prompt_filter"] = prompt_filter
    path = tmp_path / "filter.yaml"
    path.write_text(yaml.safe_dump(cfg))
    jobs = {
        line.split()[0]: int(line.split()[1])
        for line in _plan(tmp_path, tiny_mirror, path, target).splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert jobs["train_router"] == 1
    assert jobs.get("pool_answers", 0) == (1 if prompt_filter == "routes_differ" else 0)
