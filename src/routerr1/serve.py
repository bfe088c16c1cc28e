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
import copy
import json
import logging
import queue
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from routerr1.routers import RouterInfo, find_routers, read_router
from routerr1.serving import APIError, ChatMessage, gather, install_api_basics
from routerr1.steps import event_steps

log = logging.getLogger(__name__)

DEFAULT_MAX_QUESTION_TOKENS = 512
DEFAULT_MAX_BATCH_SIZE = 32


# -- the router worker -------------------------------------------------------------------------
@dataclass
class Answer:
    """A finished request: its trajectory, its steps, and the batch it ran in."""

    trajectory: Any  # routerr1.rollout.Trajectory
    steps: list[dict[str, Any]]
    batch_size: int
    rollout_s: float

    def summary(self) -> dict[str, Any]:
        tr = self.trajectory
        return {
            "cost_usd": tr.cost,
            "pool_calls": len(tr.calls),
            "pool_errors": tr.pool_errors,
            "invalid_searches": tr.invalid_actions,
            "refused_calls": tr.refused_calls,
            "answered": tr.answer is not None,
            "batch_size": self.batch_size,
            "rollout_s": round(self.rollout_s, 4),
        }


@dataclass
class Job:
    router: str
    question: str
    budget: Any = None  # routerr1.rollout.CallBudget | None
    on_step: Callable[[dict[str, Any]], None] | None = None
    future: Future = field(default_factory=Future)
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoadedRouter:
    info: RouterInfo
    model: Any
    tokenizer: Any
    engine: Any  # routerr1.rollout.RolloutEngine
    # a copy for counting question tokens on the event loop while the worker thread encodes
    counter: Any = None

    def __post_init__(self) -> None:
        if self.counter is None:
            self.counter = copy.deepcopy(self.tokenizer)


class RouterService:
    """Loaded routers over one pool, and the thread that batches their requests.

    ``run_batch`` is the whole answering path (``routerr1 ask`` calls it directly); ``submit``
    queues a job for the worker thread, which gathers what arrives together and runs one
    rollout per router.
    """

    def __init__(
        self,
        routers: Mapping[str, LoadedRouter],
        pool,
        descriptors: Sequence[Any],
        rollout_cfg,
        *,
        policy: Mapping[str, Any] | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_window_s: float = 0.02,
        max_pool_calls: int | None = None,
        max_cost_usd: float | None = None,
        max_question_tokens: int = DEFAULT_MAX_QUESTION_TOKENS,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"--max-batch-size: {max_batch_size} must be at least 1")
        if batch_window_s < 0:
            raise ValueError(f"--batch-window-ms: {batch_window_s * 1000:g} must be >= 0")
        for value, flag in ((max_pool_calls, "--max-pool-calls"), (max_cost_usd, "--max-cost-usd")):
            if value is not None and value < 0:
                raise ValueError(f"{flag}: {value:g} must be >= 0")
        if max_question_tokens < 1:
            raise ValueError(f"--max-question-tokens: {max_question_tokens} must be at least 1")
        self.routers = dict(routers)
        self.pool = pool
        self.descriptors = list(descriptors)
        self.rollout_cfg = rollout_cfg
        self.policy = dict(policy or {})
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self.max_pool_calls = max_pool_calls
        self.max_cost_usd = max_cost_usd
        self.max_question_tokens = max_question_tokens
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- answering ----------------------------------------------------------------------------
    def run_batch(self, jobs: Sequence[Job]) -> None:
        """Answer jobs of one router in one batched rollout; sets each job's future."""
        from routerr1.evaluate import route_questions

        router = self.routers[jobs[0].router]
        resolver = router.engine.resolver

        def on_step(i: int, event) -> None:
            job = jobs[i]
            for step in event_steps(event, resolver):
                job.steps.append(step)
                if job.on_step is not None:
                    try:
                        job.on_step(step)
                    except Exception:  # a listener must not break the batch
                        log.exception("serve: a step listener failed")

        t0 = time.perf_counter()
        try:
            trajs = route_questions(
                router.engine,
                router.model,
                [j.question for j in jobs],
                self.descriptors,
                self.rollout_cfg,
                greedy=True,
                budgets=[j.budget for j in jobs],
                on_step=on_step,
            )
        except Exception as exc:
            log.exception("serve: a rollout of %s failed", router.info.name)
            for job in jobs:
                job.future.set_exception(APIError(500, f"rollout failed: {exc}"))
            return
        finally:
            del router.engine.run_log[:-1]  # a server runs for weeks: keep only the last
        wall = time.perf_counter() - t0
        log.info("serve: %s answered %d request(s) in %.2f s", router.info.name, len(jobs), wall)
        for job, tr in zip(jobs, trajs, strict=True):
            job.future.set_result(Answer(tr, job.steps, len(jobs), wall))

    def submit(self, job: Job) -> Future:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="serve-routers", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = gather(self._queue, first, self.max_batch_size, self.batch_window_s)
            # a request whose client went away before its batch started is skipped
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            by_router: dict[str, list[Job]] = {}
            for job in jobs:
                by_router.setdefault(job.router, []).append(job)
            for group in by_router.values():
                try:
                    self.run_batch(group)
                except Exception as exc:  # never let the worker die with requests pending
                    log.exception("serve: serving a batch failed")
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(APIError(500, f"{type(exc).__name__}: {exc}"))

    def stop(self, timeout_s: float = 600.0) -> None:
        """Finish the batch in hand, then stop the worker."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout_s)

    def close(self) -> None:
        self.stop()
        self.pool.close()

    # -- requests -------------------------------------------------------------------------------
    def budget(self, max_pool_calls: int | None, max_cost_usd: float | None):
        """The request's CallBudget, within the server's limits (APIError naming the field)."""
        from routerr1.rollout import CallBudget

        for value, cap, name in (
            (max_pool_calls, self.max_pool_calls, "max_pool_calls"),
            (max_cost_usd, self.max_cost_usd, "max_cost_usd"),
        ):
            if value is not None and cap is not None and value > cap:
                raise APIError(
                    400,
                    f"routerr1.{name}: {value:g} is above this server's limit {cap:g}",
                    param=f"routerr1.{name}",
                )
        calls = max_pool_calls if max_pool_calls is not None else self.max_pool_calls
        cost = max_cost_usd if max_cost_usd is not None else self.max_cost_usd
        return None if calls is None and cost is None else CallBudget(calls, cost)

    def check_question(self, router: str, question: str) -> None:
        tok = self.routers[router].counter
        n = len(tok(question, add_special_tokens=False).input_ids)
        if n > self.max_question_tokens:
            raise APIError(
                400,
                f"messages: the question has {n} tokens; this server accepts at most "
                f"{self.max_question_tokens} (--max-question-tokens)",
                param="messages",
                code="context_length_exceeded",
            )

    def model_card(self, name: str) -> dict[str, Any]:
        r = self.routers[name].info
        pool = [
            {
                "name": e.name,
                "backend": "vllm" if e.serve == "vllm" else e.backend,
                "price_in_per_1M": e.price_in,
                "price_out_per_1M": e.price_out,
            }
            for e in self.pool.entries.values()
        ]
        return {
            "alpha": r.alpha,
            "run_id": r.run_id,
            "global_step": r.global_step,
            "policy": {**self.policy, "router": str(r.path)},
            "pool": pool,
            "trained_pool": list(r.trained_pool) if r.trained_pool is not None else None,
        }


# -- loading -----------------------------------------------------------------------------------
def load_service(
    cfg: Mapping[str, Any],
    routers: Sequence[RouterInfo],
    descriptors_path: str | Path,
    models_root: str | Path,
    **options: Any,
) -> RouterService:
    """Load routers and build the pool as evaluation does (``routerr1.stages.common``); start every
    pool backend now, so a missing model or a ``serve: vllm`` server that cannot start stops
    the server at startup rather than failing its first requests."""
    from routerr1.config import RunConfig
    from routerr1.rollout import RolloutEngine
    from routerr1.stages.common import fetched_models, load_descriptors, loadable, open_pool
    from routerr1.train import load_policy

    if not routers:
        raise ValueError("--router: no trained routers to serve")
    names: dict[str, Path] = {}
    for r in routers:
        if r.name in names:
            raise ValueError(
                f"--router: {str(r.path)!r} and {str(names[r.name])!r} are both {r.name}"
            )
        names[r.name] = r.path
    descriptors_path = Path(descriptors_path)
    if not descriptors_path.is_file():
        raise ValueError(
            f"--descriptors: {str(descriptors_path)!r} not found (made by the describe_pool rule)"
        )
    descriptors = load_descriptors(descriptors_path)
    run = RunConfig.from_dict(cfg)
    rollout_cfg, batch_size = run.rollout, run.eval.batch_size
    pool = open_pool(run, fetched_models(models_root, cfg))
    try:
        described = {d.name for d in descriptors}
        if described != set(pool.names):
            log.warning(
                "serve: descriptors describe %s but the pool is %s", sorted(described), pool.names
            )
        for r in routers:
            if r.trained_pool is not None and list(r.trained_pool) != pool.names:
                log.warning("serve: %s was trained with pool %s, serving with %s", r.name,
                            list(r.trained_pool), pool.names)  # fmt: skip
        _start_pool(pool)
        loaded = {}
        for r in routers:
            log.info("serve: loading %s from %s", r.name, r.path)
            model, tok = load_policy(loadable(r.path), cfg["policy"]["dtype"])
            engine = RolloutEngine(tok, pool, rollout_cfg, batch_size=batch_size)
            loaded[r.name] = LoadedRouter(r, model, tok, engine)
        policy = {"model": cfg["policy"]["model"], "dtype": cfg["policy"]["dtype"]}
        return RouterService(loaded, pool, descriptors, rollout_cfg, policy=policy, **options)
    except BaseException:
        pool.close()
        raise


def _start_pool(pool) -> None:
    """Load local models and start ``serve: vllm`` servers; an unreachable remote endpoint
    only warns (its calls become counted errors, as in evaluation)."""
    from routerr1.pool.base import BackendStartError

    for name, entry in pool.entries.items():
        try:
            backend = pool.backend(name)
            if entry.backend != "local" and hasattr(backend, "check"):
                backend.check()
        except BackendStartError:
            raise
        except Exception as exc:
            if entry.backend == "local":
                raise
            log.warning("serve: pool model %s is not reachable now: %s", name, exc)


def select_routers(
    cfg: Mapping[str, Any], given: Sequence[str], results_dir: str | Path
) -> list[RouterInfo]:
    """The ``--router`` folders (or names) given, or every router under ``results_dir``."""
    found = [read_router(p, cfg, results_dir) for p in find_routers(results_dir)]
    if not given:
        if not found:
            raise ValueError(
                f"--router: no trained routers under {str(Path(results_dir) / 'train')!r}; "
                "train one (snakemake results/train/alpha~0.5/model) or name a folder"
            )
        return found
    by_name = {r.name: r for r in found}
    chosen = []
    for item in given:
        if item in by_name:
            chosen.append(by_name[item])
        elif Path(item).exists():
            chosen.append(read_router(item, cfg, results_dir))
        else:
            known = ", ".join(by_name) or "none found"
            raise ValueError(f"--router: {item!r} is neither a folder nor a router ({known})")
    return chosen


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
