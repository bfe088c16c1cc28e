"""``routerr1 serve``: trained routers behind the OpenAI chat-completions API.

    routerr1 serve --config config/config.yaml [--router PATH ...] [--host 127.0.0.1] [--port 8000]

Every trained router under ``results/train/alpha~*/model`` is served (or the ``--router``
folders named), as ``router-r1@a<alpha>``, the name its evaluation rows carry. The pool is
rebuilt from the config exactly as evaluation builds it (backends, ``serve: vllm`` servers, the
call cache), and a question is answered by :func:`routerr1.evaluate.route_questions`, the
evaluation's own code path, decoding greedily: a served answer, its tokens and its cost are the
evaluated ones.

* ``POST /v1/chat/completions``: ``model`` names a router; the last user message is the question;
  ``choices[0].message.content`` is the router's final answer (empty, with ``finish_reason``
  ``length``, when it gave none). ``usage`` counts the pool's input (``prompt_tokens``) and output
  (``completion_tokens``) tokens. The extension field ``routerr1`` carries ``cost_usd``,
  ``pool_calls``, ``pool_errors``, ``invalid_searches``, ``refused_calls``, ``batch_size`` (the
  requests that shared this rollout) and ``trajectory``, a list of steps:
  ``{"type": "think", "text"}``, ``{"type": "search", "model", "query", "error"}``,
  ``{"type": "information", "source": "pool", "model", "text", "in_tokens", "out_tokens",
  "cost_usd", "latency_s", "cached", "error"}`` (``source`` ``invalid_search`` or ``limit`` for
  the guidance injected instead of a call), ``{"type": "answer", "text"}`` and
  ``{"type": "text", "text"}`` for words outside any tag. ``stream: true`` sends each step as an
  SSE ``chat.completion.chunk`` with an empty delta and ``routerr1.step``, then the answer as
  content, then a chunk with ``finish_reason``, ``usage`` and the ``routerr1`` summary.
* Per-request limits in the body, ``"routerr1": {"max_pool_calls": N, "max_cost_usd": X}``
  (``extra_body`` in the ``openai`` client), at most the server's ``--max-pool-calls`` and
  ``--max-cost-usd``: a search past a limit is not run, and the router is told so. Cost is known
  only after a call, so the call that crosses ``max_cost_usd`` is the last one made.
* ``GET /v1/models``: each router with ``routerr1``: alpha, MLflow training run id, training
  steps, policy, pool members. ``GET /health``: 200 once every router and pool model is loaded.

Requests that arrive together share one batched rollout per router: a single worker thread takes
what is queued, waiting ``--batch-window-ms`` after the first request for others, up to
``--max-batch-size``. Bad requests get OpenAI-shaped 4xx errors naming the field (404 for an
unknown router); a failing pool member is a counted ``pool_errors`` entry with its error in the
trajectory, as in evaluation, never a 500. ``--api-key-env NAME`` requires ``Bearer <key>`` with
the key read from that environment variable. The server binds 127.0.0.1 unless told otherwise;
SIGTERM or SIGINT stop it cleanly (requests in flight finish, pool servers are stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from routerr1.router_service import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUESTION_TOKENS,
    Answer,
    Job,
    RouterService,
    load_service,
    select_routers,
)
from routerr1.serving import APIError, ChatMessage, install_api_basics

log = logging.getLogger(__name__)


# -- the app -----------------------------------------------------------------------------------
class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_pool_calls: int | None = Field(default=None, ge=0, strict=True)
    max_cost_usd: float | None = Field(default=None, ge=0, strict=True)


class RouterChatRequest(BaseModel):
    # Unknown OpenAI parameters (user, seed, max_tokens, ...) are ignored: the router's token
    # budgets are the rollout config's.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int = Field(default=1, ge=1)
    stream: bool = Field(default=False, strict=True)
    routerr1: Limits | None = None


def create_app(service: RouterService, api_key: str | None = None):
    """The OpenAI-compatible app over ``service``."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(service.stop)

    app = FastAPI(title="routerr1 serve", lifespan=lifespan)
    install_api_basics(app, api_key)
    created = int(time.time())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "routers": list(service.routers)}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "routerr1",
                "routerr1": service.model_card(name),
            }
            for name in service.routers
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: RouterChatRequest):
        if req.model not in service.routers:
            raise APIError(
                404,
                f"model {req.model!r} not found; served routers: {sorted(service.routers)}",
                param="model",
                code="model_not_found",
            )
        if req.n != 1:
            raise APIError(400, f"n: only 1 choice is supported, got {req.n}", param="n")
        if req.temperature not in (None, 0.0):
            raise APIError(
                400,
                f"temperature: routers are served greedily, as evaluated; use 0, got "
                f"{req.temperature}",
                param="temperature",
            )
        users = [m for m in req.messages if m.role == "user"]
        if not users or not users[-1].text().strip():
            raise APIError(
                400, "messages: no user message; the last one is the question", param="messages"
            )
        question = users[-1].text()
        service.check_question(req.model, question)
        limits = req.routerr1
        budget = service.budget(
            limits.max_pool_calls if limits else None, limits.max_cost_usd if limits else None
        )
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if not req.stream:
            job = Job(req.model, question, budget)
            answer: Answer = await asyncio.wrap_future(service.submit(job))
            return _completion(rid, req.model, answer)
        return StreamingResponse(
            _stream(service, rid, req.model, question, budget), media_type="text/event-stream"
        )

    return app


def _usage(answer: Answer) -> dict[str, int]:
    tr = answer.trajectory
    return {
        "prompt_tokens": tr.in_tokens,
        "completion_tokens": tr.out_tokens,
        "total_tokens": tr.in_tokens + tr.out_tokens,
    }


def _finish(answer: Answer) -> str:
    return "stop" if answer.trajectory.answer is not None else "length"


def _completion(rid: str, model: str, answer: Answer) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.trajectory.answer or ""},
                "finish_reason": _finish(answer),
                "logprobs": None,
            }
        ],
        "usage": _usage(answer),
        "routerr1": {**answer.summary(), "trajectory": answer.steps},
    }


async def _stream(
    service: RouterService, rid: str, model: str, question: str, budget
) -> AsyncIterator[str]:
    """SSE chunks: the role, each step as the batch makes it, the answer, usage, [DONE]."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def put(item) -> None:  # called on the worker thread
        loop.call_soon_threadsafe(events.put_nowait, item)

    job = Job(model, question, budget, on_step=lambda step: put(("step", step)))
    # steps are put before the result is set, so the queue keeps them in order
    future = service.submit(job)
    future.add_done_callback(lambda f: put(("done", f)))
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, item = await events.get()
            if kind == "step":
                yield chunk({}, routerr1={"step": item})
                continue
            break
        if item.cancelled():
            return
        exc = item.exception()
        if exc is not None:
            err = exc if isinstance(exc, APIError) else APIError(500, str(exc))
            yield f"data: {json.dumps({'error': err.body()})}\n\n"
        else:
            answer: Answer = item.result()
            if answer.trajectory.answer:
                yield chunk({"content": answer.trajectory.answer})
            yield chunk({}, _finish(answer), usage=_usage(answer), routerr1=answer.summary())
        yield "data: [DONE]\n\n"
    finally:
        future.cancel()  # the client left before its batch started: skip it


# -- the command -------------------------------------------------------------------------------
def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """Options ``serve`` and ``ask`` share: where the config, routers and pool live."""
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument(
        "--router",
        action="append",
        default=[],
        help="a trained router folder (results/train/alpha~0.5/model) or name "
        "(router-r1@a0.5); repeatable; default: every router under <results>/train",
    )
    parser.add_argument("--results", default="results", help="results folder of the pipeline")
    parser.add_argument(
        "--descriptors", default=None, help="default: <results>/pool/descriptors.json"
    )
    parser.add_argument("--models-root", default="resources/models")
    parser.add_argument("--max-pool-calls", type=int, default=None, help="per request")
    parser.add_argument("--max-cost-usd", type=float, default=None, help="per request")


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT end the process through SystemExit(0), after uvicorn (which
    re-raises the signal once it has shut down) has finished the requests in flight, so the
    pool is closed (``serve: vllm`` servers stopped) on the way out."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="routerr1 serve", description="serve trained routers over the OpenAI chat API"
    )
    add_service_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key-env", default=None, help="require 'Bearer <key>', the key read from this env var"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="requests per rollout"
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=20.0,
        help="how long the first request waits for others to share its rollout",
    )
    parser.add_argument("--max-question-tokens", type=int, default=DEFAULT_MAX_QUESTION_TOKENS)
    args = parser.parse_args(list(argv) if argv is not None else None)

    import torch
    import uvicorn

    from routerr1.config import ConfigError, load_config
    from routerr1.pool.base import BackendStartError
    from routerr1.serving import api_key_from_env, warn_if_exposed

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _stop_on_signals()
    try:
        cfg = load_config(args.config)
        api_key = api_key_from_env(args.api_key_env)
        torch.set_num_threads(int(cfg.get("threads", 2)))
        options: dict[str, Any] = {
            "batch_window_s": args.batch_window_ms / 1000.0,
            "max_pool_calls": args.max_pool_calls,
            "max_cost_usd": args.max_cost_usd,
            "max_question_tokens": args.max_question_tokens,
            "max_batch_size": args.max_batch_size,
        }
        routers = select_routers(cfg, args.router, args.results)
        descriptors = args.descriptors or Path(args.results) / "pool" / "descriptors.json"
        service = load_service(cfg, routers, descriptors, args.models_root, **options)
    except (ConfigError, ValueError, OSError, BackendStartError) as err:
        print(f"serve: {err}", flush=True)
        return 2
    warn_if_exposed("serve", args.host, api_key)
    try:
        uvicorn.run(create_app(service, api_key), host=args.host, port=args.port, log_level="info")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    finally:
        service.close()
    log.info("serve: stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
