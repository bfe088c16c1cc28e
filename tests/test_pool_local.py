"""Tests for routerr1.pool.local.LocalModel.

Fast tests use a toy Llama whose final norm is zeroed: every logit is 0, so greedy decoding
always picks token id 0, which lets a test choose what the model "says" (a word, a newline or
EOS) by choosing the vocabulary order. Slow tests use the real SmolLM2-135M conversion.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from routerr1.kvcache import MIN_SHARED_PREFIX, common_prefix_length
from routerr1.pool.local import Generation, LocalModel, clean_answer
from routerr1.precision import resolve_dtype

WORDS = ["<pad>", "<eos>", "<unk>", "\n", "paris", "Question:", "Answer:", "who", "is", "the"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
QUESTIONS = [
    "who is the king of the north and the south",
    "who",
    "who is the queen",
    "is the sky blue today",
    "the end",
]


def _toy_model(
    folder: Path, first: str, chat_template: bool = True, constant: bool = True, seed: int = 0
) -> Path:
    """Save a toy tokenizer+model that always generates the token ``first`` (``constant``), or
    a random one (seeded) whose rows stop at different lengths."""
    words = [first] + [w for w in WORDS if w != first]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<pad>"],
        initializer_range=0.02 if constant else 1.0,  # large weights: the question matters
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if constant:
        with torch.no_grad():
            model.model.norm.weight.zero_()  # all logits 0: greedy picks id 0
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def toy_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("toy")
    return {
        "word": _toy_model(base / "word", "paris"),
        "newline": _toy_model(base / "newline", "\n"),
        "eos": _toy_model(base / "eos", "<eos>"),
        "base": _toy_model(base / "base", "paris", chat_template=False),
        "random": _toy_model(base / "random", "paris", constant=False, seed=10),
    }


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Paris  ", "Paris"),
        ("Paris\nQuestion: next", "Paris"),
        ("\n\nParis\n", "Paris"),
        ("Answer: Jane Austen", "Jane Austen"),
        ("The answer is: 1989", "1989"),
        ("the answer is Canberra.", "Canberra."),
        ("A: Tokyo", "Tokyo"),
        ("Answers vary", "Answers vary"),
        ("", ""),
    ],
)
def test_clean_answer(raw: str, clean: str) -> None:
    assert clean_answer(raw) == clean


def test_results_follow_input_order_with_honest_token_counts(toy_dirs: dict[str, Path]) -> None:
    model = LocalModel(toy_dirs["word"], prompt_style="chat", dtype="float32", max_batch_size=2)
    gens = model.answer(QUESTIONS, max_new_tokens=3)
    assert len(gens) == len(QUESTIONS)
    for question, gen in zip(QUESTIONS, gens, strict=True):
        prompt = model.prompt(question)
        assert question in prompt
        expected_in = len(model.tokenizer(prompt, add_special_tokens=False).input_ids)
        assert gen.in_tokens == expected_in
        assert gen.out_tokens == 3  # never stopped: ran to max_new_tokens
        assert gen.text == "paris paris paris"
        assert gen.error is None
    # Five requests in batches of two: three batches, each with one shared wall time.
    assert len({g.latency_s for g in gens}) == math.ceil(len(QUESTIONS) / 2)
    assert all(g.latency_s > 0 for g in gens)


def test_batches_group_prompts_of_similar_length(toy_dirs: dict[str, Path]) -> None:
    model = LocalModel(toy_dirs["word"], prompt_style="chat", dtype="float32", max_batch_size=2)
    gens = model.answer(QUESTIONS, max_new_tokens=1)
    by_length = sorted(gens, key=lambda g: g.in_tokens)
    # Sorted by prompt length, neighbours share a batch (and so a latency).
    assert by_length[0].latency_s == by_length[1].latency_s
    assert by_length[2].latency_s == by_length[3].latency_s


def test_fewshot_stops_at_newline_and_counts_the_stop_token(toy_dirs: dict[str, Path]) -> None:
    model = LocalModel(toy_dirs["newline"], prompt_style="fewshot", dtype="float32")
    prompt = model.prompt("who is the king")
    assert prompt.endswith("Question: who is the king\nAnswer:")
    assert prompt.count("Question:") == 4
    gens = model.answer(["who is the king", "who"], max_new_tokens=8)
    assert [g.out_tokens for g in gens] == [1, 1]
    assert [g.text for g in gens] == ["", ""]


def test_chat_style_does_not_stop_at_newline_by_default(toy_dirs: dict[str, Path]) -> None:
    model = LocalModel(toy_dirs["newline"], prompt_style="chat", dtype="float32")
    assert model.answer(["who"], max_new_tokens=4)[0].out_tokens == 4


def test_shared_prefix_and_segments_change_nothing(
    toy_dirs: dict[str, Path],
) -> None:
    questions = [f"{q} {extra}" for q in QUESTIONS for extra in ("", "who", "is the")]
    kwargs = dict(prompt_style="fewshot", dtype="float32", max_batch_size=8)
    plain = LocalModel(toy_dirs["random"], decode_segment=0, share_prefix=False, **kwargs)
    whole = plain.answer(questions, 12)
    fast = LocalModel(toy_dirs["random"], decode_segment=2, **kwargs)
    # the few-shot examples are a long common prefix: prefilled once, shared by the batch
    encoded = [fast.encode(q) for q in questions]
    common = common_prefix_length(encoded)
    assert common >= MIN_SHARED_PREFIX
    assert fast._prefix_cache(encoded[0][:common], 3) is not None
    segmented = fast.answer(questions, 12)
    lengths = {g.out_tokens for g in whole}
    assert len(lengths) > 2, f"the toy model should stop rows at several lengths: {lengths}"
    for a, b in zip(whole, segmented, strict=True):
        assert (a.text, a.out_tokens, a.in_tokens, a.finish_reason) == (
            b.text,
            b.out_tokens,
            b.in_tokens,
            b.finish_reason,
        )
    assert {g.finish_reason for g in whole} == {"stop", "length"}


def test_eos_ends_generation_and_is_counted(toy_dirs: dict[str, Path]) -> None:
    model = LocalModel(toy_dirs["eos"], prompt_style="chat", dtype="float32")
    [gen] = model.answer(["who is the king"], max_new_tokens=8)
    assert gen.out_tokens == 1
    assert gen.text == ""


def test_chat_examples_become_earlier_turns(toy_dirs: dict[str, Path]) -> None:
    model = LocalModel(toy_dirs["word"], prompt_style="chat", chat_examples=True)
    prompt = model.prompt("who is the king")
    assert prompt.count("user:") == 4 and prompt.count("assistant:") == 4
    assert "assistant: Jane Austen" in prompt


def test_a_failing_batch_returns_errors_instead_of_raising(
    toy_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = LocalModel(toy_dirs["word"], prompt_style="chat", dtype="float32")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model.model, "generate", boom)
    gens = model.answer(QUESTIONS[:2])
    assert [g.error for g in gens] == ["RuntimeError: out of memory"] * 2
    assert all(g.text == "" and g.out_tokens == 0 and g.in_tokens > 0 for g in gens)


def test_empty_question_list(toy_dirs: dict[str, Path]) -> None:
    model = LocalModel(toy_dirs["word"], prompt_style="chat", dtype="float32")
    assert model.answer([]) == []


def test_bad_arguments_name_the_field(toy_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="prompt_style"):
        LocalModel(toy_dirs["word"], prompt_style="completion")
    with pytest.raises(ValueError, match="dtype"):
        LocalModel(toy_dirs["word"], dtype="int8")
    with pytest.raises(ValueError, match="prompt_style.*chat template"):
        LocalModel(toy_dirs["base"], prompt_style="chat")
    model = LocalModel(toy_dirs["base"], prompt_style="fewshot", dtype="auto")
    # auto is bf16 only on a CPU with native bf16 (routerr1.precision)
    native = resolve_dtype("auto", "dtype", "cpu").value == "bfloat16"
    assert model.model.dtype == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.answer(["who"], max_new_tokens=0)


# ---------------------------------------------------------------------------------------------
# Real SmolLM2 (slow)

REAL_QUESTIONS = [
    "What is the capital of Japan?",
    "Who wrote the play Romeo and Juliet?",
    "What is the chemical symbol for gold?",
    "Which language is spoken in Brazil?",
]


@pytest.mark.slow
def test_smollm2_chat_answers_in_order_with_consistent_counts(smollm2_dir: Path) -> None:
    model = LocalModel(smollm2_dir, prompt_style="chat", dtype="bfloat16", max_batch_size=3)
    gens = model.answer(REAL_QUESTIONS, max_new_tokens=32)
    assert len(gens) == len(REAL_QUESTIONS)
    for question, gen in zip(REAL_QUESTIONS, gens, strict=True):
        assert isinstance(gen, Generation) and gen.error is None
        assert gen.in_tokens == len(model.encode(question))
        assert 1 <= gen.out_tokens <= 32
        assert gen.text and "\n" not in gen.text
        # Generated tokens cover the (cleaned) text: re-tokenizing it never needs more.
        assert len(model.tokenizer(gen.text, add_special_tokens=False).input_ids) <= gen.out_tokens
    assert "Tokyo" in gens[0].text


@pytest.mark.slow
def test_smollm2_fewshot_mode_stops_at_newline(smollm2_dir: Path) -> None:
    model = LocalModel(smollm2_dir, prompt_style="fewshot", dtype="bfloat16")
    gens = model.answer(REAL_QUESTIONS, max_new_tokens=32)
    for gen in gens:
        assert gen.error is None and gen.text and "\n" not in gen.text
        assert gen.out_tokens < 32  # stopped at the newline, not at the token limit
    assert gens[0].text == "Tokyo"
