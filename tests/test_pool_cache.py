"""Tests for routerr1.pool.cache: keys, hits priced like fresh calls, schema rebuilds, two
concurrent writer processes, and a writer killed with SIGKILL mid-loop."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from routerr1.config import PoolEntry
from routerr1.pool.base import Generation, Pool
from routerr1.pool.cache import SCHEMA_VERSION, CallCache, call_key
from routerr1.reward import call_cost

ENTRY = PoolEntry("Small", "small", price_in=0.5, price_out=1.5, revision="r1", max_new_tokens=8)


class CountingBackend:
    """Answers 'A:<question>' with 3 + len(question) input tokens; fails questions with 'fail'."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def answer(self, questions, max_new_tokens=32):
        self.seen += list(questions)
        return [
            Generation("", 0, 0, 0.1, error="boom")
            if "fail" in q
            else Generation(f"A:{q}", 3 + len(q), 2, 0.25, finish_reason="stop")
            for q in questions
        ]


def _pool(cache: CallCache, entry: PoolEntry = ENTRY) -> tuple[Pool, CountingBackend]:
    backend = CountingBackend()
    return Pool([entry], lambda _e: backend, cache=cache), backend


def test_key_covers_model_prompt_and_sampling() -> None:
    base = call_key(ENTRY, "who wrote hamlet", 8)
    assert base == call_key(ENTRY, "who wrote hamlet", 8)
    assert len(base) == 64
    variants = [
        call_key(ENTRY, "who wrote hamlet?", 8),
        call_key(ENTRY, "who wrote hamlet", 16),
        call_key(replace(ENTRY, revision="r2"), "who wrote hamlet", 8),
        call_key(replace(ENTRY, model="other"), "who wrote hamlet", 8),
        call_key(replace(ENTRY, dtype="float32"), "who wrote hamlet", 8),
        call_key(replace(ENTRY, chat_examples=True), "who wrote hamlet", 8),
        call_key(replace(ENTRY, prompt_style="fewshot"), "who wrote hamlet", 8),
        call_key(replace(ENTRY, backend="openai", base_url="http://h/v1"), "who wrote hamlet", 8),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # The pool name and prices are not part of what decides the answer.
    assert call_key(replace(ENTRY, name="Renamed", price_out=9.0), "who wrote hamlet", 8) == base


def test_sampled_calls_have_no_key() -> None:
    assert call_key(replace(ENTRY, temperature=0.7), "q", 8) is None


def test_hits_are_priced_like_fresh_calls(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    pool, backend = _pool(cache)
    fresh = pool.call([("Small", "q1"), ("Small", "q2")])
    again = pool.call([("Small", "q2"), ("Small", "q1"), ("Small", "q3")])
    assert backend.seen == ["q1", "q2", "q3"]  # only the new question reached the backend
    assert [c.cached for c in fresh] == [False, False]
    assert [c.cached for c in again] == [True, True, False]
    for cached, orig in ((again[0], fresh[1]), (again[1], fresh[0])):
        assert (
            cached.text,
            cached.in_tokens,
            cached.out_tokens,
            cached.cost,
            cached.latency_s,
        ) == (
            orig.text,
            orig.in_tokens,
            orig.out_tokens,
            orig.cost,
            orig.latency_s,
        )
    assert again[0].cost == call_cost(5, 2, 0.5, 1.5)
    assert cache.stats() == {"hits": 2, "misses": 3, "writes": 3}
    # New prices apply to cached calls too: the cache stores tokens, not dollars.
    repriced, _ = _pool(cache, replace(ENTRY, price_in=5.0, price_out=15.0))
    (call,) = repriced.call([("Small", "q1")])
    assert call.cached and call.cost == call_cost(5, 2, 5.0, 15.0)


def test_failures_and_sampled_calls_are_not_cached(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    pool, backend = _pool(cache)
    pool.call([("Small", "please fail")])
    (call,) = pool.call([("Small", "please fail")])
    assert call.error == "boom" and not call.cached
    sampled, sampled_backend = _pool(cache, replace(ENTRY, temperature=0.8))
    sampled.call([("Small", "q")])
    sampled.call([("Small", "q")])
    assert sampled_backend.seen == ["q", "q"]
    assert len(cache) == 0


def test_cache_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "calls.sqlite"
    pool, _ = _pool(CallCache(path))
    pool.call([("Small", "q1")])
    pool.close()
    pool2, backend2 = _pool(CallCache(path))
    (call,) = pool2.call([("Small", "q1")])
    assert call.cached and backend2.seen == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_old_schema_is_rebuilt_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "calls.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, answer TEXT)")
        conn.execute("INSERT INTO calls VALUES ('k', 'old')")
    with caplog.at_level(logging.WARNING):
        cache = CallCache(path)
        assert len(cache) == 0
    assert "rebuilding" in caplog.text
    pool, _ = _pool(cache)
    pool.call([("Small", "q1")])
    assert len(cache) == 1
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)


def test_unreadable_file_is_moved_aside(tmp_path: Path, caplog) -> None:
    path = tmp_path / "calls.sqlite"
    path.write_bytes(b"this is not a database, just bytes" * 100)
    with caplog.at_level(logging.WARNING):
        cache = CallCache(path)
        assert len(cache) == 0
    assert "unreadable" in caplog.text
    assert len(list(tmp_path.glob("calls.sqlite.corrupt-*"))) == 1


def test_rejects_bad_busy_timeout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="busy_timeout_s"):
        CallCache(tmp_path / "c.sqlite", busy_timeout_s=0)


# -- two processes, and kill -9 ----------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from routerr1.pool.base import Generation
    from routerr1.pool.cache import CallCache

    path, tag, n_batches, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cache = CallCache(path, busy_timeout_s=30)
    len(cache)  # connect (and create the schema) before the start signal
    print("ready", flush=True)
    while not os.path.exists(path + ".go"):  # start together with the other writer
        time.sleep(0.002)
    for b in range(n_batches):
        items = []
        for i in range(batch):
            k = b * batch + i
            # half the keys are shared between writers, half are their own
            key = f"shared-{k}" if k % 2 == 0 else f"{tag}-{k}"
            items.append((key, Generation(f"text-{k}", k, k + 1, 0.5), "Small"))
        cache.put_many(items)
        print(b, flush=True)
    """
)


def _writers(path: Path, tags: list[str], n_batches: int, batch: int) -> list[subprocess.Popen]:
    """Start one writer process per tag, wait until all are connected, then let them go."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), tag, str(n_batches), str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in tags
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    Path(f"{path}.go").touch()
    return procs


def _rows(path: Path) -> dict[str, tuple]:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {
            r[0]: r[1:] for r in conn.execute("SELECT key, text, in_tokens, out_tokens FROM calls")
        }


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    procs = _writers(path, ["a", "b"], 150, 10)
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "write failed" not in err  # no lock errors swallowed
    rows = _rows(path)
    assert len(rows) == 750 + 2 * 750  # shared even keys once, odd keys per writer
    for key, (text, n_in, n_out) in rows.items():
        k = int(key.rsplit("-", 1)[1])
        assert (text, n_in, n_out) == (f"text-{k}", k, k + 1)
    with sqlite3.connect(path) as conn:
        span = dict(
            conn.execute(
                "SELECT substr(key, 1, 1), max(created) FROM calls WHERE key NOT LIKE 'shared-%' "
                "GROUP BY 1"
            ).fetchall()
        )
        first = dict(
            conn.execute(
                "SELECT substr(key, 1, 1), min(created) FROM calls WHERE key NOT LIKE 'shared-%' "
                "GROUP BY 1"
            ).fetchall()
        )
    assert first["a"] < span["b"] and first["b"] < span["a"]  # the writers really overlapped


def test_kill_9_mid_write_keeps_committed_rows(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    (proc,) = _writers(path, ["a"], 1_000_000, 50)  # writes until killed
    committed = -1
    deadline = time.monotonic() + 60
    while committed < 30 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    rows = _rows(path)  # opens, and integrity_check passes
    assert len(rows) >= (committed + 1) * 50  # every batch reported committed is there
    for b in range(committed + 1):
        for i in range(50):
            k = b * 50 + i
            key = f"shared-{k}" if k % 2 == 0 else f"a-{k}"
            assert rows[key] == (f"text-{k}", k, k + 1)
    # The cache still works after the crash.
    cache = CallCache(path)
    assert len(cache) == len(rows)
    assert cache.put_many([("after", Generation("t", 1, 1, 0.1), "Small")]) == 1


def test_release_closes_backends_but_keeps_the_cache(tmp_path: Path) -> None:
    made: list[CountingBackend] = []
    closed: list[CountingBackend] = []

    class Closable(CountingBackend):
        def close(self) -> None:
            closed.append(self)

    def factory(_entry: PoolEntry) -> CountingBackend:
        made.append(Closable())
        return made[-1]

    pool = Pool([ENTRY], factory, cache=CallCache(tmp_path / "calls.sqlite"))
    pool.call([("Small", "q1")])
    pool.release()
    assert closed == made and len(made) == 1
    again = pool.call([("Small", "q1"), ("Small", "q2")])
    assert [c.cached for c in again] == [True, False]  # the cache survived the release
    assert len(made) == 2 and made[1].seen == ["q2"]  # a fresh backend on the next call
    pool.close()
    assert closed == made
