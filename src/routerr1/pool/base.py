"""The model pool: named models with prices, batched calls, honest token and cost accounting.

Backends only need ``answer(questions, max_new_tokens) -> list[Generation]``: in process
(``routerr1.pool.local.LocalModel``) or over an OpenAI-compatible endpoint
(``routerr1.pool.openai_backend.OpenAIBackend``), chosen per pool entry by its ``backend``. The
pool groups a batch of calls by model so each backend sees one batched request, and prices every
call from its input and output tokens. An optional persistent call cache
(``routerr1.pool.cache.CallCache``) answers repeated deterministic calls with their recorded
tokens, so a cached call is priced exactly like a fresh one.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routerr1.config import PoolEntry
from routerr1.pool.backend import Backend, BackendStartError, Generation
from routerr1.reward import call_cost

if TYPE_CHECKING:
    from routerr1.pool.cache import CallCache

log = logging.getLogger(__name__)


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
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class Pool:
    """Named pool models; backends are created lazily on first use."""

    def __init__(
        self,
        entries: Sequence[PoolEntry],
        backend_factory: Callable[[PoolEntry], Backend],
        cache: CallCache | None = None,
    ) -> None:
        self.entries = {e.name: e for e in entries}
        self._factory = backend_factory
        self._backends: dict[str, Backend] = {}
        self.cache = cache

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

    def check(self) -> None:
        """Fail early, naming the model and URL, when a remote endpoint is unreachable or
        rejects its key. Local models are not loaded here."""
        for name, entry in self.entries.items():
            if entry.backend == "local":
                continue
            check = getattr(self.backend(name), "check", None)
            if check is not None:
                check()

    def release(self) -> None:
        """Close every backend (local weights, HTTP clients, thread pools, launched servers)
        but keep the cache: the next call starts the backends again. Frees a local pool's
        memory between stages of one job. Every backend is closed even if one fails; the first
        error is re-raised after."""
        first = self._close_backends()
        if first is not None:
            raise first

    def close(self) -> None:
        """Release the backends and the cache connection; the first error is re-raised after
        both are closed."""
        first = self._close_backends()
        if self.cache is not None:
            self.cache.close()
        if first is not None:
            raise first

    def _close_backends(self) -> BaseException | None:
        backends, self._backends = list(self._backends.items()), {}
        first: BaseException | None = None
        for name, backend in backends:
            close = getattr(backend, "close", None)
            try:
                if close is not None:
                    close()
            except Exception as exc:
                log.warning("pool model %s: close failed: %s", name, exc)
                first = first or exc
        return first

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            gens = self._answer(entry, queries)
            for i, q, g in zip(idxs, queries, gens, strict=True):
                # Cached or fresh, a call is priced from its tokens with today's prices.
                out[i] = PoolCall(
                    model=name,
                    query=q,
                    text=g.text,
                    in_tokens=int(g.in_tokens),
                    out_tokens=int(g.out_tokens),
                    cost=call_cost(g.in_tokens, g.out_tokens, entry.price_in, entry.price_out),
                    latency_s=float(g.latency_s),
                    error=g.error,
                    cached=g.cached,
                )
        return out  # type: ignore[return-value]

    def _answer(self, entry: PoolEntry, queries: list[str]) -> list[Generation]:
        """Cache hits first, then one batched backend call for the misses."""
        gens: list[Generation | None] = [None] * len(queries)
        keys: list[str | None] = [None] * len(queries)
        if self.cache is not None:
            from routerr1.pool.cache import call_key

            keys = [call_key(entry, q, entry.max_new_tokens) for q in queries]
            hits = self.cache.get_many([k for k in keys if k is not None])
            gens = [hits.get(k) if k is not None else None for k in keys]
        miss = [j for j, g in enumerate(gens) if g is None]
        if not miss:
            return gens  # type: ignore[return-value]
        fresh = self._backend_answer(entry, [queries[j] for j in miss])
        for j, g in zip(miss, fresh, strict=True):
            gens[j] = g
        if self.cache is not None:
            self.cache.put_many(
                [
                    (keys[j], g, entry.name)
                    for j, g in zip(miss, fresh, strict=True)
                    if keys[j] is not None and g.error is None
                ]
            )
        return gens  # type: ignore[return-value]

    def _backend_answer(self, entry: PoolEntry, queries: list[str]) -> list[Generation]:
        try:
            gens = self.backend(entry.name).answer(queries, max_new_tokens=entry.max_new_tokens)
        except BackendStartError:
            raise
        except Exception as exc:  # a failing model becomes an observation, never a crash
            log.warning("pool model %s failed: %s", entry.name, exc)
            err = f"{type(exc).__name__}: {exc}"
            return [Generation("", 0, 0, 0.0, error=err) for _ in queries]
        if len(gens) != len(queries):
            err = f"backend returned {len(gens)} answers for {len(queries)} questions"
            log.warning("pool model %s: %s", entry.name, err)
            return [Generation("", 0, 0, 0.0, error=err) for _ in queries]
        return list(gens)


def build_pool(
    entries: Sequence[PoolEntry],
    model_dirs: Mapping[str, str | Path],
    max_batch_size: int = 16,
    cache: CallCache | None = None,
    linear_kernel: str = "auto",
) -> Pool:
    """A pool with one backend per entry, chosen by ``entry.backend``.

    ``local`` entries run in process with transformers and need fetched weights in
    ``model_dirs``. ``openai`` entries call their endpoint; when the model's folder is there
    too, its tokenizer counts tokens for servers that report no ``usage``. ``openai`` entries
    with ``serve: vllm`` get a ``vllm serve`` subprocess started on first use
    (``routerr1.pool.vllm_launcher``) and stopped by ``Pool.close``; they need fetched weights
    unless ``vllm.model`` names what to serve. ``linear_kernel``: see
    ``routerr1.precision.resolve_linear_kernel``.
    """
    entries = resolve_local_dtypes(entries)
    unknown = sorted({e.backend for e in entries} - set(BACKENDS))
    if unknown:
        raise ValueError(f"pool: backend {unknown} is not one of {list(BACKENDS)}")
    missing = [e.model for e in entries if e.backend == "local" and e.model not in model_dirs]
    if missing:
        raise ValueError(f"pool: no fetched weights for model keys {missing}")
    local_served = [e.name for e in entries if e.serve == "vllm" and e.backend != "openai"]
    if local_served:
        raise ValueError(f"pool: serve 'vllm' entries {local_served} need backend 'openai'")
    unserved = [
        e.name
        for e in entries
        if e.serve == "vllm" and e.model not in model_dirs and not (e.vllm or {}).get("model")
    ]
    if unserved:
        raise ValueError(
            f"pool: serve 'vllm' entries {unserved} have no fetched weights and no vllm.model"
        )

    # One in-process copy of each (folder, dtype): a model listed twice with two prompts (e.g.
    # direct and step-by-step) loads once. Weak values: once the pool releases its backends,
    # the weights can be freed.
    loaded: weakref.WeakValueDictionary[tuple[str, str], Any] = weakref.WeakValueDictionary()

    def factory(entry: PoolEntry) -> Backend:
        folder = model_dirs.get(entry.model)
        if entry.serve == "vllm":
            from routerr1.pool.vllm_launcher import launch_backend

            return launch_backend(entry, folder)
        if entry.backend == "openai":
            from routerr1.pool.openai_backend import OpenAIBackend

            return OpenAIBackend.from_entry(entry, tokenizer=Path(folder) if folder else None)
        from routerr1.pool.local import LocalModel, load_weights

        path = Path(model_dirs[entry.model])
        weights = loaded.get((str(path), entry.dtype))
        if weights is None:
            weights = load_weights(path, entry.dtype, linear_kernel)
            loaded[str(path), entry.dtype] = weights
        return LocalModel(
            path,
            prompt_style=entry.prompt_style,
            dtype=entry.dtype,
            max_batch_size=max_batch_size,
            chat_examples=entry.chat_examples,
            prompt=entry.prompt,
            extract=entry.extract,
            weights=weights,
        )

    return Pool(entries, factory, cache=cache)


BACKENDS = ("local", "openai")


def resolve_local_dtypes(entries: Sequence[PoolEntry]) -> list[PoolEntry]:
    """Local entries with ``dtype: auto`` made concrete for this machine.

    Done when the pool is built, in the job that runs it, so the call cache keys and the logs
    carry the precision that really ran (a replay never mixes dtypes).
    """
    from routerr1.precision import resolve_dtype

    out = []
    for entry in entries:
        if entry.backend == "local" and entry.serve != "vllm":
            resolved = resolve_dtype(entry.dtype, f"pool[{entry.name}].dtype", "cpu")
            log.info("pool %s: %s (%s)", entry.name, resolved.value, resolved.reason)
            entry = dataclasses.replace(entry, dtype=resolved.value)
        out.append(entry)
    return out


# Existing callers: the pool used to be local only; build_pool serves every backend.
local_pool = build_pool
