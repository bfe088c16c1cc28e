"""The model pool: named models with prices, batched calls, honest token and cost accounting.

Backends only need ``answer(questions, max_new_tokens) -> list[Generation]``. The pool groups a
batch of calls by model so each backend sees one batched request, and prices every call from
its input and output tokens.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from routerr1.config import PoolEntry
from routerr1.reward import call_cost

log = logging.getLogger(__name__)


class Backend(Protocol):
    def answer(self, questions: Sequence[str], max_new_tokens: int = 32) -> list: ...


@dataclass(frozen=True)
class PoolCall:
    model: str
    query: str
    text: str
    in_tokens: int
    out_tokens: int
    cost: float
    latency_s: float
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Pool:
    """Named pool models; backends are created lazily on first use."""

    def __init__(
        self,
        entries: Sequence[PoolEntry],
        backend_factory: Callable[[PoolEntry], Backend],
    ) -> None:
        self.entries = {e.name: e for e in entries}
        self._factory = backend_factory
        self._backends: dict[str, Backend] = {}

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    @property
    def aliases(self) -> dict[str, list[str]]:
        return {e.name: list(e.aliases) for e in self.entries.values()}

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = self._factory(self.entries[name])
        return self._backends[name]

    def call(self, requests: Sequence[tuple[str, str]]) -> list[PoolCall]:
        """Answer (model name, query) pairs, batched per model, results in input order."""
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, (name, _) in enumerate(requests):
            if name not in self.entries:
                raise KeyError(f"unknown pool model {name!r}")
            by_model[name].append(i)
        out: list[PoolCall | None] = [None] * len(requests)
        for name, idxs in by_model.items():
            entry = self.entries[name]
            queries = [requests[i][1] for i in idxs]
            try:
                gens = self.backend(name).answer(queries, max_new_tokens=entry.max_new_tokens)
            except Exception as exc:  # a failing model becomes an observation, never a crash
                log.warning("pool model %s failed: %s", name, exc)
                gens = [None] * len(idxs)
                err = f"{type(exc).__name__}: {exc}"
            for i, q, g in zip(idxs, queries, gens, strict=True):
                if g is None:
                    out[i] = PoolCall(name, q, "", 0, 0, 0.0, 0.0, err)
                    continue
                out[i] = PoolCall(
                    model=name,
                    query=q,
                    text=g.text,
                    in_tokens=int(g.in_tokens),
                    out_tokens=int(g.out_tokens),
                    cost=call_cost(g.in_tokens, g.out_tokens, entry.price_in, entry.price_out),
                    latency_s=float(g.latency_s),
                    error=g.error,
                )
        return out  # type: ignore[return-value]


def local_pool(
    entries: Sequence[PoolEntry],
    model_dirs: Mapping[str, str | Path],
    max_batch_size: int = 16,
) -> Pool:
    """A pool whose models run in-process with transformers."""
    from routerr1.pool.local import LocalModel

    missing = [e.model for e in entries if e.model not in model_dirs]
    if missing:
        raise ValueError(f"pool: no fetched weights for model keys {missing}")

    def factory(entry: PoolEntry) -> Backend:
        return LocalModel(
            Path(model_dirs[entry.model]),
            prompt_style=entry.prompt_style,
            dtype=entry.dtype,
            max_batch_size=max_batch_size,
            chat_examples=entry.chat_examples,
        )

    return Pool(entries, factory)
