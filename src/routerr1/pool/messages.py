"""What a pool model is asked, as chat messages shared by every backend.

The in-process backend renders these messages with the model's chat template (``chat`` style)
or as a ``Question: ...\\nAnswer: ...`` transcript (``fewshot`` style, base models); the
OpenAI-compatible backend sends the very same messages, and ``routerr1 serve-pool`` renders them
the way the in-process backend does. So one question is the same prompt on every path, and the
call cache can key on the messages without loading a tokenizer.

This module is pure Python (no torch), so building a cache key or an HTTP request is cheap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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
) -> list[Message]:
    """The chat messages that ask ``question``.

    ``chat``: an optional system message, the ``fewshot`` pairs as earlier turns when
    ``chat_examples``, then the question wrapped in :data:`CHAT_INSTRUCTION`. ``fewshot``: the
    bare example pairs as user/assistant turns, then the bare question (rendered by
    :func:`render_fewshot`).
    """
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style: {prompt_style!r} is not one of {PROMPT_STYLES}")
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
