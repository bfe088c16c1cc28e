"""``serve: vllm``: start ``vllm serve`` for a pool model, wait for ``/health``, stop it on close.

A pool entry with ``backend: openai`` and ``serve: vllm`` gets its own server when the pool
first uses it (``routerr1.pool.base.build_pool``)::

    vllm serve <weights folder or vllm.model> --served-model-name <served_model or name>
        --host 127.0.0.1 --port <vllm.port or a free port>
        --tensor-parallel-size N --gpu-memory-utilization F [--chat-template T] <extra_args>

The server is a plain subprocess in its own process group (so stopping it also stops vLLM's
engine and tensor-parallel workers), bound to loopback, logging to
``<vllm.log_dir>/<name>-<port>.log``. The pipeline polls ``GET /health`` until it answers 200,
within ``vllm.startup_timeout_s``; a server that exits first, or never gets healthy, stops the
pipeline with an error naming the model, the URL and the last lines of the server log. Calls then
go through the ordinary :class:`~routerr1.pool.openai_backend.OpenAIBackend` at
``http://127.0.0.1:<port>/v1``. Closing the pool (``Pool.close``, or leaving ``with pool:``)
sends SIGTERM to the group, then SIGKILL after ``vllm.stop_timeout_s``; servers still running
when the interpreter exits are stopped the same way (``atexit``; SIGTERM to the pipeline
process is turned into a normal exit for that, when nothing else handles it). On Linux the
server also gets SIGTERM from the kernel when the thread that launched it dies
(``PR_SET_PDEATHSIG``), so even a SIGKILLed pipeline or ``routerr1 serve`` leaves none behind;
launch from a thread that lives as long as the pool (routerr1 launches from the main thread).

Inside a SLURM job nothing changes: the server runs on the allocated node, on a port free at
run time, with the GPUs SLURM exposes (``CUDA_VISIBLE_DEVICES`` is inherited; ``vllm.env`` can
narrow it per model). If the job is cancelled, SLURM kills the job's whole cgroup, server
included.

Base (``fewshot``) models have no chat template; the launcher writes one that renders chat
messages exactly as :func:`routerr1.pool.messages.render_fewshot` does (with the BOS token when
the tokenizer adds one), so the server sees the in-process prompt.

vllm is never imported here: it only has to be on ``PATH`` (or named by ``vllm.command``, e.g.
``[.venv-vllm/bin/vllm, serve]``) on the machine that runs the pool.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from routerr1.config import PoolEntry, VllmOptions
from routerr1.pool.backend import BackendStartError, Generation
from routerr1.workflow import slug

log = logging.getLogger(__name__)

DEFAULT_COMMAND = ("vllm", "serve")
HOST = "127.0.0.1"
_PORT_TRIES = 3  # a port picked free can be taken before vllm binds it: retry with another
_TAIL_LINES = 30


class ServerStartError(BackendStartError):
    """A launched server exited or never answered ``/health``; the message names the model,
    the URL and the tail of the server log."""


def serve_args(
    model: str | Path,
    served_name: str,
    port: int,
    options: VllmOptions,
    chat_template: str | Path | None = None,
) -> list[str]:
    """The ``vllm serve`` command line (``options.command`` replaces ``vllm serve``)."""
    args = [*(options.command or DEFAULT_COMMAND), str(model)]
    args += ["--served-model-name", served_name, "--host", HOST, "--port", str(port)]
    args += ["--tensor-parallel-size", str(options.tensor_parallel_size)]
    args += ["--gpu-memory-utilization", f"{options.gpu_memory_utilization:g}"]
    if chat_template is not None:
        args += ["--chat-template", str(chat_template)]
    return args + list(options.extra_args)


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it): for a launched vLLM server,
    and for ``accelerate launch``'s main process, so several training jobs can share a node."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def fewshot_chat_template(bos_token: bool = False) -> str:
    """A Jinja chat template rendering messages like ``render_fewshot``: system messages as a
    first paragraph, ``Question: u\\nAnswer: a\\n\\n`` per pair, then
    ``Question: u\\nAnswer:``."""
    return (
        ("{{ bos_token }}" if bos_token else "")
        + "{% for m in messages %}"
        + "{% if m['role'] == 'system' %}{{ m['content'] | trim }}\n\n"
        + "{% elif m['role'] == 'user' %}Question: {{ m['content'] }}\nAnswer:"
        + "{% else %} {{ m['content'] }}\n\n{% endif %}"
        + "{% endfor %}"
    )


def _adds_bos(weights: Path | None) -> bool:
    """Whether the tokenizer prepends BOS (Gemma does): read from tokenizer_config.json."""
    if weights is None or not (weights / "tokenizer_config.json").is_file():
        return False
    try:
        return bool(
            json.loads((weights / "tokenizer_config.json").read_text()).get("add_bos_token")
        )
    except (OSError, ValueError):
        return False


def _alive_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group; zombies are not running anything, and a
    container's init may never reap them."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel whether the group still exists
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    alive = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # fields after "(comm)": state ppid pgrp ...
        rest = text[text.rfind(")") + 2 :].split()
        if len(rest) > 2 and int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


_LIVE: set[VllmServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        server.stop()


atexit.register(_stop_all)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_on_sigterm() -> None:
    """Make SIGTERM (Snakemake cancelling a job, ``kill``) exit through ``atexit`` so the
    server is stopped: it runs in its own session, so the job's own group kill misses it.
    Only where SIGTERM still has its default action, and only from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Any:
    """A ``preexec_fn`` (Linux; None elsewhere): the child gets SIGTERM when the launching
    thread dies, whatever killed it. libc is resolved here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class VllmServer:
    """One launched server process group. ``start()`` returns once ``/health`` answers 200."""

    def __init__(
        self,
        name: str,
        model: str | Path,
        options: VllmOptions,
        served_name: str | None = None,
        chat_template: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        poll_s: float = 0.25,
    ) -> None:
        self.name = name
        self.model = str(model)
        self.options = options
        self.served_name = served_name or name
        self.chat_template = chat_template
        self._env = dict(env or {})
        self.poll_s = poll_s
        self.port: int | None = None
        self.log_path: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VllmServer(name={self.name!r}, model={self.model!r}, url={self.base_url!r})"

    @property
    def base_url(self) -> str | None:
        return None if self.port is None else f"http://{HOST}:{self.port}/v1"

    @property
    def health_url(self) -> str | None:
        return None if self.port is None else f"http://{HOST}:{self.port}/health"

    def args(self, port: int) -> list[str]:
        return serve_args(self.model, self.served_name, port, self.options, self.chat_template)

    def start(self) -> VllmServer:
        """Launch and wait for health; on failure the group is stopped and
        :class:`ServerStartError` raised."""
        tries = 1 if self.options.port is not None else _PORT_TRIES
        for attempt in range(1, tries + 1):
            self._launch(self.options.port or free_port())
            try:
                self._wait_healthy()
                return self
            except ServerStartError as exc:
                self.stop()
                taken = "address already in use" in str(exc).lower()
                if not taken or attempt == tries:
                    raise
                log.warning("%s: port %s was taken; retrying on another", self.name, self.port)
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        self.port = port
        log_dir = Path(self.options.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{slug(self.name)}-{port}.log"
        args = self.args(port)
        env = {**os.environ, **self.options.env, **self._env}
        with self.log_path.open("ab") as logfile:
            logfile.write(f"# routerr1: {' '.join(args)}\n".encode())
            logfile.flush()
            try:
                # own session = own process group: stop() signals vLLM and all its workers
                self.proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(),
                )
            except OSError as exc:
                raise ServerStartError(
                    f"pool model {self.name!r}: cannot run {args[0]!r} ({exc}); install vllm "
                    "(pip install routerr1[vllm]) or set vllm.command"
                ) from None
        with _LIVE_LOCK:
            _LIVE.add(self)
        _stop_on_sigterm()
        log.info("%s: started %s (pid %d), log %s", self.name, args[0], self.proc.pid,
                 self.log_path)  # fmt: skip

    def _wait_healthy(self) -> None:
        assert self.proc is not None and self.health_url is not None
        timeout = self.options.startup_timeout_s
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"pool model {self.name!r}: the server for {self.health_url} exited with "
                    f"code {rc} before it was healthy; log {self.log_path}, last lines:\n"
                    f"{_tail(self.log_path)}"  # type: ignore[arg-type]
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError(
                    f"pool model {self.name!r}: {self.health_url} did not answer 200 within "
                    f"{timeout:g}s (vllm.startup_timeout_s); server stopped. Log "
                    f"{self.log_path}, last lines:\n{_tail(self.log_path)}"  # type: ignore[arg-type]
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=min(5.0, remaining)) as r:
                    if r.status == 200:
                        log.info("%s: healthy at %s", self.name, self.base_url)
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while loading
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after ``stop_timeout_s``; idempotent."""
        with self._lock:
            proc, self.proc = self.proc, None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        self._signal(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.stop_timeout_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader so it does not count as alive
            if not _alive_in_group(pgid):
                break
            time.sleep(0.05)
        else:
            log.warning("%s: server did not stop within %gs; killing it", self.name,
                        self.options.stop_timeout_s)  # fmt: skip
            self._signal(pgid, signal.SIGKILL)
        try:
            proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            log.error("%s: server process %d did not exit after SIGKILL", self.name, proc.pid)

    @staticmethod
    def _signal(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServedBackend:
    """An :class:`OpenAIBackend` talking to the server it owns; ``close`` stops both."""

    def __init__(self, server: VllmServer, backend: Any) -> None:
        self.server = server
        self.backend = backend

    def __repr__(self) -> str:
        return f"ServedBackend({self.server!r})"

    @property
    def base_url(self) -> str | None:
        return self.server.base_url

    def answer(self, questions: Sequence[str], max_new_tokens: int = 32) -> list[Generation]:
        return self.backend.answer(questions, max_new_tokens=max_new_tokens)

    def check(self) -> list[str]:
        return self.backend.check()

    def stats(self) -> dict[str, int]:
        return self.backend.stats()

    def close(self) -> None:
        try:
            self.backend.close()
        finally:
            self.server.stop()


def launch_backend(
    entry: PoolEntry, weights: str | Path | None, tokenizer: Any = None
) -> ServedBackend:
    """Start the server for a ``serve: vllm`` entry and return the backend calling it.

    ``weights``: the fetched model folder (served unless ``vllm.model`` names something else);
    it also counts tokens if the server ever omits ``usage``.
    """
    from routerr1.pool.openai_backend import OpenAIBackend

    where = f"pool entry {entry.name!r}"
    options = VllmOptions.from_mapping(entry.vllm, f"{where}: vllm")
    folder = Path(weights) if weights is not None else None
    model = options.model or (str(folder) if folder is not None else None)
    if model is None:
        raise ValueError(
            f"{where}: serve 'vllm' needs the weights of model key {entry.model!r} (fetch them "
            "first) or vllm.model (a hub id or folder vllm can load)"
        )
    env: dict[str, str] = {}
    if entry.api_key_env:  # the server checks the key; it never appears on a command line
        key = os.environ.get(entry.api_key_env)
        if not key:
            raise ValueError(
                f"api_key_env: environment variable {entry.api_key_env!r} is not set "
                f"(pool model {entry.name!r}, serve 'vllm')"
            )
        env["VLLM_API_KEY"] = key
    template = None
    if entry.prompt_style == "fewshot":
        Path(options.log_dir).mkdir(parents=True, exist_ok=True)
        template = Path(options.log_dir) / f"{slug(entry.name)}.jinja"
        bos = _adds_bos(folder) if options.model is None else False
        tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
        tmp.write_text(fewshot_chat_template(bos))
        os.replace(tmp, template)
    server = VllmServer(
        entry.name, model, options, entry.served_model or entry.name, template, env
    ).start()
    try:
        backend = OpenAIBackend.from_entry(
            replace(entry, base_url=server.base_url),
            tokenizer=tokenizer if tokenizer is not None else folder,
        )
    except BaseException:
        server.stop()
        raise
    return ServedBackend(server, backend)
