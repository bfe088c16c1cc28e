"""Per-entry pool prompts and answer extraction: the registries in routerr1.pool.messages, their
cache keys, and one model serving two pool names with two prompts from one copy of its weights."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

import pytest
from test_pool_local import _toy_model

from routerr1.config import PoolEntry
from routerr1.metrics import exact_match
from routerr1.pool.base import build_pool
from routerr1.pool.cache import call_key, call_request
from routerr1.pool.messages import (
    CHAT_INSTRUCTION,
    EXTRACTORS,
    PROGRAM_INSTRUCTION,
    PROMPTS,
    REASON_INSTRUCTION,
    after_answer,
    canonical_number,
    clean_answer,
    extract_answer,
    last_number,
    question_messages,
    render_fewshot,
    resolve_extract,
)
from routerr1.pool.program import ProgramError, program_answer, run_program

# dtype as build_pool resolves it (auto -> bfloat16 on a CPU with native bf16): the key below
# was computed when bfloat16 was the default
ENTRY = PoolEntry(
    "Small", "small", price_in=0.5, price_out=1.5, revision="r1", max_new_tokens=8, dtype="bfloat16"
)
GSM = "Janet's ducks lay 16 eggs per day. She eats three. How much does she make at $2 an egg?"


# -- prompt builders -----------------------------------------------------------------------
def test_short_prompt_is_the_original_chat_and_fewshot_prompt() -> None:
    chat = question_messages("  who wrote hamlet ", "chat", prompt="short")
    assert chat == [
        {"role": "user", "content": CHAT_INSTRUCTION.format(question="who wrote hamlet")}
    ]
    assert chat == question_messages("who wrote hamlet")  # short is the default
    shots = (("q1", "a1"),)
    fewshot = question_messages("who wrote hamlet", "fewshot", fewshot=shots, prompt="short")
    assert (
        render_fewshot(fewshot) == "Question: q1\nAnswer: a1\n\nQuestion: who wrote hamlet\nAnswer:"
    )


def test_reason_prompt_asks_for_steps_and_a_final_answer_line() -> None:
    msgs = question_messages(f"  {GSM}\n", "chat", prompt="reason", system_prompt="Be terse.")
    assert msgs[0] == {"role": "system", "content": "Be terse."}
    assert msgs[1] == {"role": "user", "content": REASON_INSTRUCTION.format(question=GSM)}
    assert "step by step" in msgs[1]["content"]
    assert "'Answer: <answer>'" in msgs[1]["content"]
    assert msgs[1]["content"].endswith(f"Question: {GSM}")


def test_program_prompt_asks_for_code_that_stores_answer() -> None:
    msgs = question_messages(GSM, "chat", prompt="program")
    assert msgs == [{"role": "user", "content": PROGRAM_INSTRUCTION.format(question=GSM)}]
    assert "variable named answer" in msgs[0]["content"]
    assert resolve_extract("program", None) == "run_program"
    with pytest.raises(ValueError, match=r"prompt: 'program' needs a model"):
        question_messages(GSM, "fewshot", prompt="program")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"prompt": "router-r1"}, r"prompt: unknown pool prompt 'router-r1'"),
        ({"prompt": "reason", "prompt_style": "fewshot"}, r"prompt: 'reason' needs a model"),
        ({"prompt": "reason", "chat_examples": True}, r"chat_examples: not supported"),
        ({"prompt_style": "poetry"}, r"prompt_style: 'poetry'"),
    ],
)
def test_prompt_builder_refuses_what_it_cannot_build(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        question_messages("q", **kwargs)


def test_every_prompt_defaults_to_a_known_extractor() -> None:
    for name, variant in PROMPTS.items():
        assert variant.extract in EXTRACTORS, name
        assert resolve_extract(name, None) == variant.extract
    assert resolve_extract("reason", "last_number") == "last_number"
    with pytest.raises(ValueError, match="extract: unknown answer extractor 'nope'"):
        resolve_extract("short", "nope")
    with pytest.raises(ValueError, match="extract: unknown"):
        extract_answer("x", "nope")


# -- extractors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16 - 3 - 4 = 9 eggs; 9 * 2 = 18 dollars.\nAnswer: $18", "18"),
        ("She makes 9 * $2 = $18.\n\nAnswer: 18.00", "18"),
        ("**Final Answer:** 1,080", "1080"),
        ("Steps...\nFinal answer: $1,234.50.", "1234.5"),
        ("The answer is 42.", "42"),
        ("answer: -7", "-7"),
        ("Reasoning.\nAnswer: 0.50", "0.5"),
        ("Answer: 25%", "25"),
        ("Answer:\n\n  Paris.", "Paris"),
        ("He was the 44th president.\nAnswer: **Barack Obama**", "Barack Obama"),
        ("Answer: Jane Austen\n", "Jane Austen"),
        ("Answer: 1989", "1989"),
        ("Answer: 3 apples", "3 apples"),  # not a pure number: kept as written
        # markup real replies carried: tags copied from the instruction, inline LaTeX
        ("Answer: <answer>Bill Gates</answer>", "Bill Gates"),
        ("So 15 in all.\nAnswer: \\(15\\)", "15"),
        ("Answer: \\[ 42 \\text{ cups} \\]", "42  cups"),
        # "to answer this" is not a marker; the last marker wins
        ("To answer this we add.\nThe answer is: 5\nAnswer: 6", "6"),
        # a marker with a colon beats a later "answer is" in prose
        ("So the answer is: 10\nThis answer is based on the show's history.", "10"),
        # no marker: the last \boxed{}, else the last line with a letter or digit, reduced to
        # the result of a calculation (a reply cut off by the token limit)
        ("x = 3 + 4\nSo \\(\\boxed{7}\\) cups.", "7"),
        ("We compute 5 + 5.\nSo she has 10\n\n", "So she has 10"),
        ("Profit = $200,000 - $130,000 = $70,000", "70000"),
        ("3. She sells them:\n   \\[\n   9 \\times 2 = 18\n   \\", "18"),
        ("Step 3: subtract the cost = the profit", "Step 3: subtract the cost = the profit"),
        ("", ""),
        ("   \n ", ""),
    ],
)
def test_after_answer(text: str, expected: str) -> None:
    assert after_answer(text) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # a fenced program: the answer variable wins over later prints and assignments
        (
            "```python\neggs = 16\nused = 3 + 4\nanswer = (eggs - used) * 2\nprint(answer)\n"
            "left = 1\n```\nThis prints 18.",
            "18",
        ),
        # no fence; no answer variable: the last print, else the last assignment
        ("x = 10 / 4\nprint(x)\ny = 3", "2.5"),
        ("total = 7 * 3\ntotal -= 1", "20"),
        # float results: integral ones as integers, others without float noise
        ("answer = 0.1 + 0.2", "0.3"),
        ("answer = 9 / 3", "3"),
        ("answer = -(5 // 2) % 7", "5"),  # Python semantics: -2 % 7
        # tuple unpacking, lists through sum/min/max, round and math, an unclosed fence
        ("a, b = 3, 4\nanswer = sum([a, b, max(a, b)])", "11"),
        ("import math\nanswer = math.ceil(7 / 2) + round(2.345, 2)", "6.35"),
        ("from math import floor\nanswer = floor(9.9)", "9"),
        ("```py\nanswer = 2 ** 10", "1024"),
    ],
)
def test_program_answer_computes_the_result(reply: str, expected: str) -> None:
    assert program_answer(reply) == expected
    assert extract_answer(reply, "run_program") == expected


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("import os\nos.system('rm -rf /')", "unsupported statement Import"),
        ("answer = open('/etc/passwd')", "undefined name 'open'"),
        ("answer = (1).__class__", "unsupported expression Attribute"),
        ("answer = 'abc'", "not a number"),
        ("for i in range(3):\n    x = i", "unsupported statement For"),
        ("answer = 9 ** 9 ** 9", "exponent out of range"),
        ("answer = 10 ** 20", "number out of range"),
        ("answer = 1 / 0", "division by zero"),
        ("answer = undefined_name + 1", "undefined name"),
        ("answer = (" * 400 + "1" + ")" * 400, "nested too deeply|not Python"),
        ("The answer is 18.", "not Python"),
        ("import math", "computes nothing"),
    ],
)
def test_program_interpreter_refuses_what_it_does_not_run(code: str, needle: str) -> None:
    with pytest.raises(ProgramError, match=needle):
        run_program(code)
    assert program_answer(code) == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16 - 3 - 4 = 9; 9 * 2 = 18.\nAnswer: $18", "18"),
        ("Answer: 18 (that is 9 * 2)", "18"),  # the first number after the marker
        ("So the total is $1,080.00.", "1080"),  # no marker: the last number
        ("3,4 and 5", "5"),  # "3,4" is not a thousands group
        ("It drops to -12 degrees", "-12"),
        ("Total: 2.50 + 2.50 = 5.00", "5"),
        ("Answer: .5", "0.5"),
        ("Answer: Paris", "Paris"),  # no number anywhere: the after_answer text
        ("no digits here", "no digits here"),
        ("", ""),
    ],
)
def test_last_number(text: str, expected: str) -> None:
    assert last_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", "18"),
        ("$18", "18"),
        ("18.00", "18"),
        ("1,000", "1000"),
        ("-0.0", "0"),
        ("1200", "1200"),  # trailing zeros of an integer stay
        ("12a", None),
        ("1,00", None),
        ("", None),
    ],
)
def test_canonical_number(text: str, expected: str | None) -> None:
    assert canonical_number(text) == expected


def test_first_line_is_the_original_cleaning() -> None:
    assert EXTRACTORS["first_line"] is clean_answer
    assert extract_answer("Answer: Jane Austen\nQuestion: next", "first_line") == "Jane Austen"


def test_exact_match_on_extracted_numbers() -> None:
    # SQuAD normalization drops "$" and "," but would read "18.00" as "1800": the extractors
    # make pure numbers canonical first, so EM against GSM8K's integer golds works.
    assert exact_match("$18", ["18"]) == 1.0
    assert exact_match("1,000", ["1000"]) == 1.0
    assert exact_match("18.00", ["18"]) == 0.0
    assert exact_match(after_answer("Answer: 18.00"), ["18"]) == 1.0
    assert exact_match(last_number("so $1,000.00 in all"), ["1000"]) == 1.0


# -- cache keys ----------------------------------------------------------------------------
def test_default_prompt_keeps_the_original_cache_key() -> None:
    # computed with the code before prompts were configurable: cached answers stay valid
    old = "c0a6a8fff172d10b4cd701463a9983c695d26425d979a216f6099b8e43459ebc"
    assert call_key(ENTRY, "who wrote hamlet", 8) == old
    assert (
        call_key(replace(ENTRY, prompt="short", extract="first_line"), "who wrote hamlet", 8) == old
    )
    assert "prompt" not in call_request(ENTRY, "who wrote hamlet", 8)


def test_cache_keys_differ_between_prompts_and_extractors() -> None:
    keys = {
        call_key(ENTRY, GSM, 8),
        call_key(replace(ENTRY, prompt="reason"), GSM, 8),
        call_key(replace(ENTRY, prompt="reason", extract="last_number"), GSM, 8),
        call_key(replace(ENTRY, extract="last_number"), GSM, 8),
        call_key(replace(ENTRY, prompt="program"), GSM, 8),
    }
    assert len(keys) == 5
    # a changed extractor must not be served answers cached under its old behaviour
    assert call_request(replace(ENTRY, prompt="reason"), GSM, 8)["extract_version"] >= 1
    # extract None means the prompt's own extractor: the same call as naming it
    assert call_key(replace(ENTRY, prompt="reason"), GSM, 8) == call_key(
        replace(ENTRY, prompt="reason", extract="after_answer"), GSM, 8
    )


# -- one model, two names, two prompts -------------------------------------------------------
def test_two_entries_of_one_model_share_weights_but_not_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import routerr1.pool.local as local

    folder = _toy_model(tmp_path / "toy", "paris")
    loads: list[tuple[Path, str]] = []
    real_load = local.load_weights

    def counting_load(path: Path, dtype: str = "bfloat16", linear_kernel: str = "auto"):
        loads.append((Path(path), dtype))
        return real_load(path, dtype, linear_kernel)

    monkeypatch.setattr(local, "load_weights", counting_load)
    direct = PoolEntry("Toy", "toy", 0.1, 0.2, dtype="float32", max_new_tokens=3)
    reason = replace(direct, name="Toy-Reason", prompt="reason", price_out=0.4)
    other_dtype = replace(direct, name="Toy-BF16", dtype="bfloat16")
    pool = build_pool([direct, reason, other_dtype], {"toy": folder})
    try:
        calls = pool.call([("Toy", "who is the king"), ("Toy-Reason", "who is the king")])
        pool.call([("Toy-BF16", "who")])
        assert loads == [(folder, "float32"), (folder, "bfloat16")]
        a, b = pool.backend("Toy"), pool.backend("Toy-Reason")
        assert a is not b and a.model is b.model and a.tokenizer is b.tokenizer
        assert pool.backend("Toy-BF16").model is not a.model
        assert a.prompt("who") != b.prompt("who")
        assert REASON_INSTRUCTION.split("{")[0] in b.prompt("who")
        assert (a.extract, b.extract) == ("first_line", "after_answer")
        # the reasoned prompt is longer, so the same question costs more input tokens
        assert calls[1].in_tokens > calls[0].in_tokens
        assert calls[0].text == calls[1].text == "paris paris paris"
        # released backends drop their references: the next use loads the weights again
        del a, b
        pool.release()
        gc.collect()
        pool.call([("Toy-Reason", "who")])
        assert len(loads) == 3
    finally:
        pool.close()


def test_pool_hash_tells_prompts_apart_and_keeps_older_hashes() -> None:
    import yaml

    from routerr1.config import pool_entries, validate_config
    from routerr1.stages.common import pool_hash

    raw = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    # the default pool's hash before prompts were configurable: older MLflow runs still group
    before = "b1d0b65a09f978573e26eabced8d80bcd06cb368362dc877a74220a94ca8e7d2"
    assert pool_hash(pool_entries(validate_config(raw))) == before
    raw["pool"][3]["prompt"] = "reason"
    assert pool_hash(pool_entries(validate_config(raw))) != before
