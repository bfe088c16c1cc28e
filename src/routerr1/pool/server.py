"""``routerr1 serve-pool``: the local pool models behind the OpenAI chat-completions API.

A user without vLLM hosts the pool on one box and points other machines' pool entries at it
(``backend: openai``, ``base_url: http://box:8000/v1``). Endpoints:

* ``POST /v1/chat/completions``: greedy decoding; the reply carries ``usage`` (prompt tokens as
  rendered, completion tokens up to and including the stop token).
* ``GET /v1/models``: the served pool names; ``GET /health``: 200 once the app is up.

Each model is loaded on its first request (``LocalModel``) and owned by one worker thread that
**batches concurrent requests**: it takes whatever is queued (waiting ``batch_wait_s`` for
stragglers, up to ``max_batch_size``) and runs one batched ``generate`` per group of equal
``max_tokens`` and stop settings, so N concurrent clients cost about one batch, not N.

Chat-style models render the messages with their chat template; fewshot-style (base) models
render them as a ``Question:/Answer:`` transcript (``routerr1.pool.messages.render_fewshot``),
which is exactly the in-process prompt for the messages the openai backend sends.

Bad requests get OpenAI-shaped errors: 400 naming the field, 404 naming an unknown model, 401
for a wrong key (when ``--api-key-env`` is set). Only temperature 0 (or unset) is accepted: the
server decodes greedily and says so rather than silently ignoring a sampling request. The
server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from routerr1.pool.backend import Generation
from routerr1.pool.messages import Message, render_fewshot
from routerr1.serving import (
    APIError,
    ChatMessage,
    api_key_from_env,
    gather,
    install_api_basics,
    warn_if_exposed,
)

log = logging.getLogger(__name__)

MAX_TOKENS_LIMIT = 4096


# -- request bodies -------------------------------------------------------------------------
class ChatRequest(BaseModel):
    # Unknown OpenAI parameters (user, seed, logprobs=False, ...) are ignored, not rejected.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False


# -- batching worker --------------------------------------------------------------------------
@dataclass
class _Job:
    messages: list[Message]
    max_tokens: int
    stop_at_newline: bool | None
    future: Future = field(default_factory=Future)


class ModelWorker:
    """One model, loaded lazily, and the thread that batches its queued requests."""

    def __init__(
        self,
        name: str,
        load: Callable[[], Any],
        prompt_style: str = "chat",
        default_max_tokens: int = 32,
        max_batch_size: int = 16,
        batch_wait_s: float = 0.005,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: {max_batch_size!r} must be at least 1")
        self.name = name
        self.prompt_style = prompt_style
        self.default_max_tokens = default_max_tokens
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self._load = load
        self._model: Any = None
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches: list[int] = []  # sizes of the generate calls run (for tests and logs)

    def submit(
        self, messages: list[Message], max_tokens: int, stop_at_newline: bool | None
    ) -> Future:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"serve-{self.name}", daemon=True
                )
                self._thread.start()
        job = _Job(messages, max_tokens, stop_at_newline)
        self._queue.put(job)
        return job.future

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = gather(self._queue, job, self.max_batch_size, self.batch_wait_s)
            self._serve(jobs)

    def _serve(self, jobs: list[_Job]) -> None:
        # A request whose client went away was cancelled: skip it; the rest can no longer be
        # cancelled, so setting their results below cannot fail.
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            self._serve_running(jobs)
        except Exception as exc:  # never let the worker thread die with requests pending
            log.exception("model %s: serving a batch failed", self.name)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(APIError(500, f"{type(exc).__name__}: {exc}"))

    def _serve_running(self, jobs: list[_Job]) -> None:
        try:
            if self._model is None:
                self._model = self._load()
        except Exception as exc:  # a model that cannot load fails its requests, not the server
            log.exception("model %s failed to load", self.name)
            for job in jobs:
                job.future.set_exception(
                    APIError(500, f"model {self.name!r} failed to load: {exc}")
                )
            return
        groups: dict[tuple[int, bool | None], list[tuple[_Job, list[int]]]] = {}
        for job in jobs:
            try:
                ids = self._model.encode_messages(job.messages)
            except Exception as exc:  # e.g. a chat template that rejects a system message
                job.future.set_exception(APIError(400, f"messages: {exc}", param="messages"))
                continue
            groups.setdefault((job.max_tokens, job.stop_at_newline), []).append((job, ids))
        for (max_tokens, newline), members in groups.items():
            for start in range(0, len(members), self.max_batch_size):
                chunk = members[start : start + self.max_batch_size]
                self.batches.append(len(chunk))
                gens = self._model.complete([ids for _, ids in chunk], max_tokens, newline)
                for (job, _), gen in zip(chunk, gens, strict=True):
                    job.future.set_result(gen)


# -- the app --------------------------------------------------------------------------------
def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def _apply_stops(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def create_app(workers: Mapping[str, ModelWorker], api_key: str | None = None) -> FastAPI:
    """The OpenAI-compatible app over ``workers`` (pool name -> worker)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        for worker in workers.values():
            await asyncio.to_thread(worker.stop)

    app = FastAPI(title="routerr1 serve-pool", lifespan=lifespan)
    app.state.workers = workers
    created = int(time.time())

    install_api_basics(app, api_key)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(workers)}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "routerr1"}
            for name in workers
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest) -> dict[str, Any]:
        worker = workers.get(req.model)
        if worker is None:
            raise APIError(
                404,
                f"model {req.model!r} not found; served: {sorted(workers)}",
                param="model",
                code="model_not_found",
            )
        if req.stream:
            raise APIError(400, "stream: streaming is not supported", param="stream")
        if req.n != 1:
            raise APIError(400, f"n: only 1 choice is supported, got {req.n}", param="n")
        if req.temperature not in (None, 0.0):
            raise APIError(
                400,
                f"temperature: serve-pool decodes greedily; use 0, got {req.temperature}",
                param="temperature",
            )
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        if worker.prompt_style == "fewshot":
            try:
                render_fewshot(messages)
            except ValueError as exc:
                raise APIError(400, str(exc), param="messages") from None
        max_tokens = req.max_completion_tokens or req.max_tokens or worker.default_max_tokens
        stops = _stops(req.stop)
        newline = True if any("\n" in s for s in stops) else None
        gen: Generation = await asyncio.wrap_future(worker.submit(messages, max_tokens, newline))
        if gen.error is not None:
            raise APIError(500, f"generation failed: {gen.error}")
        text, stopped = _apply_stops(gen.text, stops)
        finish = "stop" if stopped else (gen.finish_reason or "stop")
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": gen.in_tokens,
                "completion_tokens": gen.out_tokens,
                "total_tokens": gen.in_tokens + gen.out_tokens,
            },
        }

    return app


def workers_from_config(
    cfg: Mapping[str, Any],
    models_root: Path,
    max_batch_size: int | None = None,
    batch_wait_s: float = 0.005,
) -> dict[str, ModelWorker]:
    """One worker per pool and pool_unseen entry whose weights are fetched (whatever the
    entry's own ``backend``: this server is what an ``openai`` entry may point at)."""
    from routerr1.config import pool_entries
    from routerr1.models import model_dir

    entries = pool_entries(cfg) + pool_entries({**cfg, "pool": cfg.get("pool_unseen") or []})
    batch = max_batch_size or int(cfg.get("eval", {}).get("batch_size", 16))
    workers: dict[str, ModelWorker] = {}
    for entry in entries:
        if entry.name in workers:
            continue
        folder = models_root / entry.model
        if not folder.exists():
            log.warning("serve-pool: %s skipped, no weights in %s", entry.name, folder)
            continue

        def load(entry=entry, folder=folder):
            from routerr1.pool.local import LocalModel, load_weights

            log.info("serve-pool: loading %s from %s", entry.name, folder)
            path = model_dir(folder)
            return LocalModel(
                path,
                prompt_style=entry.prompt_style,
                dtype=entry.dtype,
                max_batch_size=batch,
                chat_examples=entry.chat_examples,
                weights=load_weights(path, entry.dtype, cfg.get("linear_kernel", "auto")),
            )

        workers[entry.name] = ModelWorker(
            entry.name, load, entry.prompt_style, entry.max_new_tokens, batch, batch_wait_s
        )
    if not workers:
        raise ValueError(f"models_root: no fetched pool model weights under {str(models_root)!r}")
    return workers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="routerr1 serve-pool", description="serve the pool over the OpenAI chat API"
    )
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--models-root", default="resources/models")
    parser.add_argument(
        "--api-key-env", default=None, help="require 'Bearer <key>', the key read from this env var"
    )
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args(list(argv) if argv is not None else None)

    import torch
    import uvicorn

    from routerr1.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        api_key = api_key_from_env(args.api_key_env)
        workers = workers_from_config(
            cfg, Path(args.models_root), args.max_batch_size, args.batch_wait_ms / 1000.0
        )
    except (ConfigError, ValueError, OSError) as err:
        print(f"serve-pool: {err}", flush=True)
        return 2
    warn_if_exposed("serve-pool", args.host, api_key)
    torch.set_num_threads(int(cfg.get("threads", 2)))
    uvicorn.run(create_app(workers, api_key), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
