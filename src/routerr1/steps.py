"""A router's trajectory as a list of typed steps (think, search, information, answer, loose
text): what ``routerr1 serve`` returns and streams, and what ``routerr1 ask`` prints."""

from __future__ import annotations

import re
from typing import Any

_BLOCK_RE = re.compile(r"<(think|search|answer)>(.*?)</\1>", re.S)


def policy_steps(text: str, resolver) -> list[dict[str, Any]]:
    """The steps in one turn of policy text: think, search, answer, and loose text."""
    from routerr1.parse import parse_search

    steps: list[dict[str, Any]] = []
    pos = 0
    # R1-style chat templates open <think> in the prompt: the turn then starts inside it
    head = text.find("</think>")
    if head >= 0 and not re.search(r"<(think|search|answer)>", text[:head]):
        steps.append({"type": "think", "text": text[:head].strip()})
        pos = head + len("</think>")
    for m in _BLOCK_RE.finditer(text, pos):
        loose = text[pos : m.start()].strip()
        if loose:
            steps.append({"type": "text", "text": loose})
        tag, content = m.group(1), m.group(2)
        if tag == "search":
            call = parse_search(content, resolver)
            model = call.model  # as the policy wrote it when it is not a pool name
            if model is None and ":" in content:
                model = content.split(":", 1)[0].strip()
            steps.append(
                {"type": "search", "model": model, "query": call.query, "error": call.error}
            )
        else:
            steps.append({"type": tag, "text": content.strip()})
        pos = m.end()
    rest = text[pos:].strip()
    if rest:
        steps.append({"type": "text", "text": rest})
    return steps


def event_steps(event, resolver) -> list[dict[str, Any]]:
    """Trajectory steps for one :class:`routerr1.rollout.StepEvent`."""
    if event.kind == "generated":
        return policy_steps(event.text, resolver)
    if event.kind == "information" and event.call is not None:
        c = event.call
        return [
            {
                "type": "information",
                "source": "pool",
                "model": c.model,
                "text": event.text,
                "in_tokens": c.in_tokens,
                "out_tokens": c.out_tokens,
                "cost_usd": c.cost,
                "latency_s": round(c.latency_s, 4),
                "cached": c.cached,
                "error": c.error,
            }
        ]
    source = {"invalid": "invalid_search", "refused": "limit"}.get(event.kind, event.kind)
    return [{"type": "information", "source": source, "text": event.text}]
