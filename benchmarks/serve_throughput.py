"""``routerr1 serve`` throughput: n questions through the real ``openai`` client, concurrently
and one at a time, on the same router.

    python benchmarks/serve_throughput.py --config config/config.yaml --router router-r1@a0.5
    python benchmarks/serve_throughput.py --quick ...        # 8 questions, a smoke check

The server runs as its own process (``python -m routerr1.cli serve``) on a free loopback port,
with the call cache off (a temporary copy of the config with ``pool_cache: false``), so the
second pass pays for its pool calls like the first. After one warm-up request:

* **serial**: the questions one after another (each its own rollout);
* **concurrent**: all questions at once from ``n`` client threads (the server gathers them into
  batched rollouts of up to ``--max-batch-size``).

Prints a markdown table (wall time, requests/s, p50 and p95 latency per mode), the throughput
ratio (target: concurrent >= 3x serial for 32 questions on a 2-core CPU), how many greedy answers
are the same in both passes (batching may round differently), the CPU model, torch's CPU
capability and the load average before the run: timings only mean something on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import openai
import yaml

COUNTRIES = ["France", "Japan", "Brazil", "Canada", "Egypt", "India", "Mexico", "Kenya"]
TEMPLATES = [
    "What is the capital of {}?",
    "What currency is used in {}?",
    "What is the official language of {}?",
    "On which continent is {}?",
]


def questions(n: int) -> list[str]:
    """``n`` distinct questions (8 countries x 4 templates, then numbered variants)."""
    base = [t.format(c) for t in TEMPLATES for c in COUNTRIES]
    return [base[i % len(base)] + (f" ({i // len(base)})" if i >= len(base) else "")
            for i in range(n)]  # fmt: skip


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    def __init__(self, config: Path, args: list[str], log: Path, timeout_s: float) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "routerr1.cli", "serve", "--config", str(config),
               "--port", str(self.port), *args]  # fmt: skip
        self.log = log
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited {self.proc.returncode}; log {log}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"serve was not healthy within {timeout_s:g}s; log {log}")
            time.sleep(0.5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ask(client: openai.OpenAI, model: str, question: str) -> tuple[float, str, int]:
    """Latency, answer, and how many requests shared the rollout."""
    t0 = time.perf_counter()
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}]
    )
    return time.perf_counter() - t0, resp.choices[0].message.content, resp.routerr1["batch_size"]


def serial(client, model: str, qs: list[str]) -> tuple[float, list[tuple[float, str, int]]]:
    t0 = time.perf_counter()
    results = [ask(client, model, q) for q in qs]
    return time.perf_counter() - t0, results


def concurrent(client, model: str, qs: list[str]) -> tuple[float, list[tuple[float, str, int]]]:
    results: list[tuple[float, str, int] | None] = [None] * len(qs)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = ask(client, model, qs[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(qs))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, results  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--router", default=None, help="folder or name; default: the first found")
    parser.add_argument("--results", default="results")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-window-ms", type=float, default=20.0)
    parser.add_argument("--startup-timeout-s", type=float, default=900.0)
    parser.add_argument("--quick", action="store_true", help="8 questions")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of the server (default: config)"
    )
    args = parser.parse_args()
    n = 8 if args.quick else args.n

    import torch

    from routerr1.config import load_config
    from routerr1.router_service import select_routers

    cfg = load_config(args.config)
    if args.threads is not None:
        cfg["threads"] = args.threads
    router = select_routers(cfg, [args.router] if args.router else [], args.results)[0]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump({**cfg, "pool_cache": False}))
        serve_args = ["--router", str(router.path), "--results", args.results,
                      "--max-batch-size", str(args.max_batch_size),
                      "--batch-window-ms", str(args.batch_window_ms),
                      "--max-question-tokens", "4096"]  # fmt: skip
        server = ServeProcess(config, serve_args, Path(tmp) / "serve.log", args.startup_timeout_s)
        try:
            client = openai.OpenAI(
                base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=3600
            )
            qs = questions(n)
            ask(client, router.name, "What is the capital of Peru?")  # warm-up
            s_wall, s_res = serial(client, router.name, qs)
            c_wall, c_res = concurrent(client, router.name, qs)
        finally:
            server.stop()

    print(f"routerr1 serve, {router.name} ({router.path}), {n} questions, greedy, no call cache")
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}; threads {cfg.get('threads')}; "
          f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")  # fmt: skip
    print("| mode | requests | wall s | req/s | p50 latency s | p95 latency s |")
    print("|---|---|---|---|---|---|")
    for mode, wall, res in (("serial", s_wall, s_res), ("concurrent", c_wall, c_res)):
        lat = [r[0] for r in res]
        print(f"| {mode} | {n} | {wall:.1f} | {n / wall:.3f} | {np.percentile(lat, 50):.1f} | "
              f"{np.percentile(lat, 95):.1f} |")  # fmt: skip
    ratio = s_wall / c_wall
    same = sum(a[1] == b[1] for a, b in zip(s_res, c_res, strict=True))
    # each rollout of k requests shows up k times among the replies
    sizes = Counter(r[2] for r in c_res)
    rollouts = ", ".join(
        f"{k} x {size}" for size, k in sorted((s, c // s) for s, c in sizes.items())
    )
    print(f"\nconcurrent rollouts (count x requests): {rollouts}")
    print(f"concurrent / serial throughput: {ratio:.2f}x (target >= 3x for 32 on 2 cores)")
    print(f"answers identical in both passes: {same}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
