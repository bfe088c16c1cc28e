"""Router prompt and model descriptors.

The router sees each pool model only through a short descriptor: its configured description plus
measured price, latency and sample accuracy. Unseen models need nothing more than a descriptor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Descriptor:
    name: str
    description: str
    price_in: float
    price_out: float
    latency_p50_s: float
    em: float
    f1: float
    # mean dollars per call on the profiling questions (None: not shown). Token prices alone
    # hide what a call costs: one model asked to reason writes ~20x the tokens of a direct answer
    cost_per_call: float | None = None

    def render(self, compressed: bool = False) -> str:
        per_call = self.cost_per_call
        if compressed:
            cost = f", ${per_call:.2g} per call" if per_call is not None else ""
            return (
                f"{self.name}: ${self.price_in:g}/${self.price_out:g} per 1M in/out tokens{cost}, "
                f"{self.latency_p50_s:.2f}s, sample EM {self.em:.0f}%"
            )
        desc = f" {self.description.strip()}" if self.description.strip() else ""
        cost = f" Mean cost ${per_call:.2g} per call." if per_call is not None else ""
        return (
            f"{self.name}:{desc} Price: ${self.price_in:g} per 1M input tokens, "
            f"${self.price_out:g} per 1M output tokens.{cost} Median latency "
            f"{self.latency_p50_s:.2f} s per call. Measured accuracy on sample questions: "
            f"EM {self.em:.1f}%, F1 {self.f1:.1f}%."
        )


def descriptor_from_mapping(d: Mapping) -> Descriptor:
    return Descriptor(
        name=str(d["name"]),
        description=str(d.get("description", "")),
        price_in=float(d["price_in"]),
        price_out=float(d["price_out"]),
        latency_p50_s=float(d["latency_p50_s"]),
        em=float(d["em"]),
        f1=float(d["f1"]),
        cost_per_call=None if d.get("cost_per_call") is None else float(d["cost_per_call"]),
    )


ROUTER_TEMPLATE = """Answer the question below. You may consult a pool of language models.

How to work:
- Reason step by step inside <think> and </think> before every action.
- To consult a model, write <search>Model-Name: a concrete, self-contained sub-question</search>. \
Use an exact model name from the list. Its reply comes back inside <information> and </information>.
- You may consult models several times, one at a time. Cheaper models cost less; stronger models \
answer better.
- When you are sure, give only the short final answer inside <answer> and </answer>, e.g. \
<answer>Paris</answer>.

Models you can call ({names}):
{descriptors}

Question: {question}"""


def render_router_prompt(
    question: str, descriptors: Sequence[Descriptor], compressed: bool = False
) -> str:
    """The single user message the policy is conditioned on."""
    return ROUTER_TEMPLATE.format(
        names=", ".join(d.name for d in descriptors),
        descriptors="\n".join(f"- {d.render(compressed)}" for d in descriptors),
        question=question.strip(),
    )


def chat_prompt(tokenizer, user_message: str) -> str:
    """Wrap the router message in the policy's chat template, opening the assistant turn."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )
    return f"{user_message}\n\nAssistant:"


def router_prompts(
    tokenizer, questions: Sequence[str], descriptors: Sequence[Descriptor], compressed: bool
) -> list[str]:
    """Chat-templated router prompts, one per question."""
    return [
        chat_prompt(tokenizer, render_router_prompt(q, descriptors, compressed)) for q in questions
    ]
