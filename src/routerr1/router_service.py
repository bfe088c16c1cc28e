"""The router worker behind ``routerr1 serve`` and ``routerr1 ask``: trained routers loaded
with the pool evaluation builds, and one thread that answers queued requests in batched
rollouts through :func:`routerr1.evaluate.route_questions` (the evaluation's own code path)."""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routerr1.routers import RouterInfo, find_routers, read_router
from routerr1.serving import APIError, gather
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
            engine = RolloutEngine(
                tok,
                pool,
                rollout_cfg,
                batch_size=batch_size,
                linear_kernel=run.linear_kernel,
            )
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
