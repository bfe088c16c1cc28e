"""Test helpers: run an ASGI app with uvicorn on a free loopback port, a fault-injecting
OpenAI-compatible chat endpoint built on ``http.server`` (real sockets, real HTTP), and a
stand-in for ``vllm serve`` (run this file as a script; see :func:`fake_vllm_main`)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import uvicorn


@contextmanager
def serve_app(app, startup_timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``app`` in a background thread; yields its base URL (``http://127.0.0.1:P/v1``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(20.0)
        sock.close()


def completion(content: str, usage: bool = True, prompt_tokens: int = 7) -> dict:
    body = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }
    if usage:
        n_out = len(content.split()) + 1
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_out,
            "total_tokens": prompt_tokens + n_out,
        }
    return body


class FaultServer:
    """Plays ``script`` (one fault per request, in arrival order), then ``then`` forever.

    Faults: ``ok`` (echoes the question after 'Question: ', with usage), ``ok_no_usage``,
    ``slow`` (ok after ``slow_s``), ``delay`` (sleeps ``delay_s``, past the client's timeout),
    ``429`` (with ``Retry-After: retry_after``), ``500``, ``401`` (the body quotes the key it
    got), ``404``, ``drop`` (closes the socket without a reply), ``truncated`` (200 with half a
    JSON body), ``no_choices`` (valid JSON, no choices).
    """

    def __init__(
        self,
        script: Sequence[str] = (),
        then: str = "ok",
        delay_s: float = 1.0,
        slow_s: float = 0.1,
        retry_after: str = "0.2",
    ) -> None:
        self.script = list(script)
        self.then = then
        self.delay_s, self.slow_s, self.retry_after = delay_s, slow_s, retry_after
        self.log: list[tuple[float, str, dict]] = []  # (arrival, fault, lower-cased headers)
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}/v1"

    @property
    def requests(self) -> int:
        return len(self.log)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)

    def _next(self, headers: dict) -> str:
        with self._lock:
            fault = self.script.pop(0) if self.script else self.then
            self.log.append((time.monotonic(), fault, headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return fault

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                fault = server.then
                if fault == "401":
                    self._send(401, b'{"error": {"message": "bad key"}}')
                    return
                body = {"object": "list", "data": [{"id": "m", "object": "model"}]}
                self._send(200, json.dumps(body).encode())

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                fault = server._next({k.lower(): v for k, v in self.headers.items()})
                server.bodies.append(json.loads(raw))
                try:
                    self._reply(fault, server.bodies[-1])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected for "delay"
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _reply(self, fault: str, req: dict) -> None:
                question = req["messages"][-1]["content"].rsplit("Question: ", 1)[-1]
                ok = json.dumps(completion(question)).encode()
                if fault == "ok":
                    self._send(200, ok)
                elif fault == "ok_no_usage":
                    self._send(200, json.dumps(completion(question, usage=False)).encode())
                elif fault == "slow":
                    time.sleep(server.slow_s)
                    self._send(200, ok)
                elif fault == "delay":
                    time.sleep(server.delay_s)
                    self._send(200, ok)
                elif fault == "429":
                    body = b'{"error": {"message": "rate limited"}}'
                    self._send(429, body, {"retry-after": server.retry_after})
                elif fault == "500":
                    self._send(500, b'{"error": {"message": "boom"}}')
                elif fault == "401":
                    key = self.headers.get("authorization", "")
                    self._send(401, json.dumps({"error": {"message": f"bad key {key}"}}).encode())
                elif fault == "404":
                    self._send(404, b'{"error": {"message": "no such model"}}')
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif fault == "truncated":
                    self._send(200, ok[: len(ok) // 2])
                elif fault == "no_choices":
                    self._send(200, b'{"id": "x", "object": "chat.completion"}')
                else:
                    raise ValueError(f"unknown fault {fault!r}")

        return Handler


# -- a stand-in for `vllm serve` ----------------------------------------------------------------
class EchoModel:
    """What ``serve-pool``'s worker needs from a model: the question comes back as the answer;
    a token is a UTF-8 byte of the last message."""

    def encode_messages(self, messages) -> list[int]:
        return list(messages[-1]["content"].encode())

    def complete(self, prompts, max_new_tokens: int = 32, stop_at_newline=None) -> list:
        from routerr1.pool.base import Generation

        out = []
        for ids in prompts:
            question = bytes(ids).decode().rsplit("Question: ", 1)[-1]
            out.append(Generation(question, len(ids), len(question.split()) + 1, 0.0, None, "stop"))
        return out


def fake_vllm_main(argv: Sequence[str] | None = None) -> int:
    """``python tests/pool_servers.py <model> --served-model-name N --host H --port P ...``:
    parses ``vllm serve``'s flags and serves ``routerr1 serve-pool``'s app with an
    :class:`EchoModel` named N (key from ``VLLM_API_KEY``, as vLLM does).

    ``--fake-mode exit`` prints an error and exits 3; ``hang`` never listens. ``--fake-child``
    also starts a sleeping child process (like vLLM's engine core) in the same group. The
    received argument list is written to ``--fake-argv-file``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--chat-template", default=None)
    parser.add_argument("--fake-mode", choices=["ok", "exit", "hang"], default="ok")
    parser.add_argument("--fake-child", action="store_true")
    parser.add_argument("--fake-argv-file", default=None)
    args = parser.parse_args(argv)
    if args.fake_argv_file:
        with open(args.fake_argv_file, "w") as fh:
            json.dump(sys.argv[1:] if argv is None else list(argv), fh)
    print(f"fake vllm: loading {args.model}", flush=True)
    if args.fake_mode == "exit":
        print("fake vllm: CUDA out of memory while loading weights", file=sys.stderr, flush=True)
        return 3
    if args.fake_child:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if args.fake_mode == "hang":
        while True:
            time.sleep(1.0)

    from routerr1.pool.server import ModelWorker, create_app

    worker = ModelWorker(args.served_model_name, EchoModel, batch_wait_s=0.0)
    app = create_app({args.served_model_name: worker}, os.environ.get("VLLM_API_KEY"))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(fake_vllm_main())
