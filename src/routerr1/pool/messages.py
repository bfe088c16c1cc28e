"""What a pool model is asked, as chat messages shared by every backend, and how its answer is
read back.

Two registries, both chosen per pool entry in the config: :data:`PROMPTS` (``pool[].prompt``:
how the question is put) and :data:`EXTRACTORS` (``pool[].extract``: how the short answer is cut
out of the generated text; by default the prompt's own). ``short`` with ``first_line`` is the
original behaviour. ``reason`` asks for brief step-by-step reasoning ending in
``Answer: <short answer>``: it lets a model solve maths word problems, at the price of many
output tokens. ``program`` with ``run_program`` asks a coder model for a short arithmetic
program and computes its result (:mod:`routerr1.pool.program`): the same skill in fewer
tokens, where the model writes code well. Add a variant by adding a registry entry; nothing
else dispatches on its name.

The in-process backend renders these messages with the model's chat template (``chat`` style)
or as a ``Question: ...\\nAnswer: ...`` transcript (``fewshot`` style, base models); the
OpenAI-compatible backend sends the very same messages, and ``routerr1 serve-pool`` renders them
the way the in-process backend does. So one question is the same prompt on every path, and the
call cache can key on the messages without loading a tokenizer.

This module is pure Python (no torch), so building a cache key or an HTTP request is cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from routerr1.pool.program import program_answer

PROMPT_STYLES = ("chat", "fewshot")
DEFAULT_FEWSHOT: tuple[tuple[str, str], ...] = (
    ("What is the capital city of Australia?", "Canberra"),
    ("Who wrote the novel Pride and Prejudice?", "Jane Austen"),
    ("In what year did the Berlin Wall fall?", "1989"),
)
CHAT_INSTRUCTION = (
    "Answer the question with a short, direct answer of a few words. "
    "Give only the answer, no explanation and no full sentence.\n\nQuestion: {question}"
)
# "A few short lines of plain text": Qwen2.5-Coder-1.5B otherwise writes LaTeX displays and
# ran out of 256 tokens on 2 of 4 GSM8K problems; with it, 96 output tokens on average.
REASON_INSTRUCTION = (
    "Answer the question. Think step by step in a few short lines of plain text (no LaTeX), "
    "then end with a last line 'Answer: <answer>', where <answer> is only the final answer: a "
    "few words, or just the number for a maths problem.\n\nQuestion: {question}"
)
# A coder model answers a word problem in a few dozen tokens of code where prose steps take a
# few hundred; routerr1.pool.program computes the result without executing the reply.
PROGRAM_INSTRUCTION = (
    "Solve the problem with a short Python program: assign the quantities from the question to "
    "variables, compute the result with arithmetic only, and store the final number in a "
    "variable named answer. Reply with the program only, no explanation.\n\nQuestion: {question}"
)
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:(?:the\s+)?(?:final\s+|short\s+)?answer\s*(?:is\s*:?|:)|a\s*:)\s*", re.IGNORECASE
)

Message = dict[str, str]


def question_messages(
    question: str,
    prompt_style: str = "chat",
    fewshot: Sequence[tuple[str, str]] = DEFAULT_FEWSHOT,
    chat_examples: bool = False,
    system_prompt: str | None = None,
    prompt: str = "short",
) -> list[Message]:
    """The chat messages that ask ``question`` with the :data:`PROMPTS` variant ``prompt``.

    ``short``, ``chat`` style: an optional system message, the ``fewshot`` pairs as earlier
    turns when ``chat_examples``, then the question wrapped in :data:`CHAT_INSTRUCTION`.
    ``short``, ``fewshot`` style: the bare example pairs as user/assistant turns, then the bare
    question (rendered by :func:`render_fewshot`). ``reason`` (chat only): an optional system
    message, then the question wrapped in :data:`REASON_INSTRUCTION`; ``program`` (chat only)
    likewise with :data:`PROGRAM_INSTRUCTION`.
    """
    check_prompt(prompt, prompt_style, chat_examples)
    return PROMPTS[prompt].build(question, prompt_style, fewshot, chat_examples, system_prompt)


def _short_messages(
    question: str,
    prompt_style: str,
    fewshot: Sequence[tuple[str, str]],
    chat_examples: bool,
    system_prompt: str | None,
) -> list[Message]:
    messages: list[Message] = []
    if prompt_style == "fewshot":
        for q, a in fewshot:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question.strip()})
        return messages
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for q, a in fewshot if chat_examples else ():
        messages.append({"role": "user", "content": CHAT_INSTRUCTION.format(question=q)})
        messages.append({"role": "assistant", "content": a})
    messages.append({"role": "user", "content": CHAT_INSTRUCTION.format(question=question.strip())})
    return messages


def _instruction_messages(instruction: str):
    """A chat-only prompt: an optional system message, then the question in ``instruction``."""

    def build(
        question: str,
        prompt_style: str,
        fewshot: Sequence[tuple[str, str]],
        chat_examples: bool,
        system_prompt: str | None,
    ) -> list[Message]:
        messages: list[Message] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": instruction.format(question=question.strip())})
        return messages

    return build


@dataclass(frozen=True)
class PoolPrompt:
    """One way of asking a pool model.

    ``build(question, prompt_style, fewshot, chat_examples, system_prompt)`` returns the
    messages; ``extract`` is the default :data:`EXTRACTORS` name for its replies; ``styles`` are
    the model prompt styles it can be rendered in; ``chat_examples``: whether worked short-answer
    turns may precede the question.
    """

    build: Callable[[str, str, Sequence[tuple[str, str]], bool, str | None], list[Message]]
    extract: str
    styles: tuple[str, ...]
    chat_examples: bool
    description: str


PROMPTS: dict[str, PoolPrompt] = {
    "short": PoolPrompt(
        _short_messages,
        "first_line",
        PROMPT_STYLES,
        True,
        "a short, direct answer of a few words (chat), or a few-shot Question/Answer transcript",
    ),
    # A base (fewshot) model has no instruction to follow and its transcript stops at the
    # first newline, so step-by-step reasoning is for chat models only.
    "reason": PoolPrompt(
        _instruction_messages(REASON_INSTRUCTION),
        "after_answer",
        ("chat",),
        False,
        "brief step-by-step reasoning, then a last line 'Answer: <short answer>'",
    ),
    "program": PoolPrompt(
        _instruction_messages(PROGRAM_INSTRUCTION),
        "run_program",
        ("chat",),
        False,
        "a short arithmetic Python program storing its result in 'answer' (maths problems)",
    ),
}


def check_prompt(prompt: str, prompt_style: str = "chat", chat_examples: bool = False) -> None:
    """Raise ValueError, naming the field, unless ``prompt`` can be used for a model of
    ``prompt_style`` (with ``chat_examples``)."""
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style: {prompt_style!r} is not one of {PROMPT_STYLES}")
    if prompt not in PROMPTS:
        raise ValueError(f"prompt: unknown pool prompt {prompt!r}; known: {sorted(PROMPTS)}")
    variant = PROMPTS[prompt]
    if prompt_style not in variant.styles:
        raise ValueError(
            f"prompt: {prompt!r} needs a model with prompt_style in {list(variant.styles)}, "
            f"got {prompt_style!r}"
        )
    if chat_examples and not variant.chat_examples:
        raise ValueError(f"chat_examples: not supported with prompt {prompt!r}")


def render_fewshot(messages: Sequence[Message]) -> str:
    """A base model's prompt: ``Question: u\\nAnswer: a\\n\\n`` per pair, ending in
    ``Question: u\\nAnswer:``. Leading system messages become a first paragraph.

    Raises ValueError unless the non-system messages alternate user/assistant and end with user.
    """
    head: list[str] = []
    body = list(messages)
    while body and body[0]["role"] == "system":
        head.append(body.pop(0)["content"].strip() + "\n\n")
    if not body or body[-1]["role"] != "user":
        raise ValueError("messages: a fewshot prompt must end with a user message")
    for i, msg in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if msg["role"] != expected:
            raise ValueError(
                f"messages[{i + len(head)}].role: expected {expected!r} for a fewshot prompt "
                f"(alternating user/assistant), got {msg['role']!r}"
            )
    shots = "".join(
        f"Question: {u['content']}\nAnswer: {a['content']}\n\n"
        for u, a in zip(body[:-1:2], body[1::2], strict=True)
    )
    return f"{''.join(head)}{shots}Question: {body[-1]['content']}\nAnswer:"


def clean_answer(text: str) -> str:
    """Strip, cut at the first newline, drop an 'Answer:' / 'The answer is' prefix."""
    text = text.strip()
    text = text.split("\n", 1)[0]
    return _ANSWER_PREFIX.sub("", text, count=1).strip()


# "Answer:", "**Final answer:**", "the answer is: 18" (strong, with a colon) and "The answer
# is 18" (weak): prose such as "to answer this, ..." is no marker, and a weak one ("this
# answer is based on ...") only counts when no strong one exists.
_ANSWER_MARK = re.compile(r"\b(?:final\s+)?answer\s*[*_]*\s*(?:is\s*)?[*_]*:[*_]*", re.IGNORECASE)
_WEAK_ANSWER_MARK = re.compile(r"\b(?:final\s+)?answer\s*[*_]*\s+is\b[*_]*", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm)\{([^{}]*)\}")
# inline-maths delimiters \( \) \[ \], and tags a model copies from "Answer: <answer>"
_MARKUP = re.compile(r"\\[()\[\]]|</?answer>", re.IGNORECASE)
# thousands groups first, so "1,234" is one number while "3,4" is two
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_PURE_NUMBER = re.compile(r"^[$€£]?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+)\s*%?$")


def canonical_number(text: str) -> str | None:
    """``text`` as a plain decimal ("$1,234.50" -> "1234.5", "18.00" -> "18"), or None when it
    is not a number."""
    match = _PURE_NUMBER.match(text.strip())
    if match is None:
        return None
    try:
        value = Decimal(match.group(1).replace(",", ""))
    except InvalidOperation:
        return None
    if value == 0:
        return "0"
    # normalize() drops trailing zeros; "f" keeps 1E+2 as 100
    return format(value.normalize(), "f")


def _tidy(answer: str) -> str:
    """Drop markup and trailing punctuation around a short answer; a pure number becomes
    canonical (no currency sign, thousands commas or trailing zeros)."""
    answer = _LATEX_TEXT.sub(r"\1", _BOXED.sub(r"\1", answer))
    answer = _MARKUP.sub("", answer).strip()
    answer = answer.strip("*_`\"' ").strip()
    answer = answer.rstrip(".;,").strip()
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 2:  # LaTeX $...$
        answer = answer[1:-1].strip()
    number = canonical_number(answer)
    return number if number is not None else answer


def _last_mark_end(text: str) -> int | None:
    """Where the text after the last answer marker starts (strong markers first), or None."""
    for pattern in (_ANSWER_MARK, _WEAK_ANSWER_MARK):
        marks = list(pattern.finditer(text))
        if marks:
            return marks[-1].end()
    return None


def after_answer(text: str) -> str:
    """The short answer of a reasoned reply: what follows the last 'Answer:' marker on its line
    (or the next non-empty line when the marker ends its line). Without a marker: the last
    ``\\boxed{}``; else the last line with a letter or digit, reduced to the number after its
    last "=" when it is a calculation (a reply cut off by the token limit). Tidied by
    :func:`_tidy`."""
    end = _last_mark_end(text)
    if end is not None:
        lines = [line.strip() for line in text[end:].split("\n")]
        return _tidy(next((line for line in lines if line.strip("*_` ")), ""))
    boxed = _BOXED.findall(text)
    if boxed:
        return _tidy(boxed[-1])
    lines = [line for line in text.split("\n") if any(c.isalnum() for c in line)]
    if not lines:
        return ""
    last = _tidy(lines[-1])
    result = canonical_number(_tidy(last.rsplit("=", 1)[-1])) if "=" in last else None
    return result if result is not None else last


def last_number(text: str) -> str:
    """The final number of a maths reply, canonical ("$1,080.00" -> "1080"): the first number
    after the last 'Answer:' marker (so "Answer: 18 (3 x 6)" gives 18), else the last number in
    the text. Without any number, :func:`after_answer`'s text."""
    end = _last_mark_end(text)
    if end is not None:
        tail = _NUMBER.search(text[end:].replace("$", ""))
        if tail is not None:
            return canonical_number(tail.group(0)) or tail.group(0)
    numbers = _NUMBER.findall(text.replace("$", ""))
    if numbers:
        return canonical_number(numbers[-1]) or numbers[-1]
    return after_answer(text)


# The call cache stores extracted answers: bump this whenever an extractor (other than
# first_line, which is keyed as the original behaviour) changes what it returns, so cached
# answers read the old way are not served again.
EXTRACT_VERSION = 2
EXTRACTORS: dict[str, Callable[[str], str]] = {
    "first_line": clean_answer,
    "after_answer": after_answer,
    "last_number": last_number,
    "run_program": program_answer,
}


def resolve_extract(prompt: str, extract: str | None) -> str:
    """The extractor name a pool entry uses: ``extract``, or by default its prompt's."""
    if prompt not in PROMPTS:
        raise ValueError(f"prompt: unknown pool prompt {prompt!r}; known: {sorted(PROMPTS)}")
    name = PROMPTS[prompt].extract if extract is None else extract
    if name not in EXTRACTORS:
        raise ValueError(f"extract: unknown answer extractor {name!r}; known: {sorted(EXTRACTORS)}")
    return name


def extract_answer(text: str, extract: str) -> str:
    """Apply the :data:`EXTRACTORS` entry ``extract`` to a generated ``text``."""
    if extract not in EXTRACTORS:
        raise ValueError(
            f"extract: unknown answer extractor {extract!r}; known: {sorted(EXTRACTORS)}"
        )
    return EXTRACTORS[extract](text)
