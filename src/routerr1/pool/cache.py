"""A persistent cache of deterministic pool calls, in SQLite (``results/cache/calls.sqlite``).

A call is keyed by everything that decides its answer: the backend, the model key and a
fingerprint of its source (revision), the dtype (local), endpoint and served model id
(openai), or served model id and vllm arguments (``serve: vllm``, whose port varies), the
exact chat messages sent (prompt style, prompt variant, examples, question), the answer
extractor (the cache holds extracted answers), and the sampling parameters. A ``short`` prompt
read by ``first_line`` (the original behaviour) adds no key material, so older entries still hit.
Only temperature-0 calls get a key; sampled calls are never served from the cache.

A hit returns the recorded text, tokens and latency with ``cached=True``; the pool prices it
from those tokens exactly like a fresh call, so the cache saves time, never cost accounting.

Concurrency and crashes: WAL journal, a busy timeout, and one ``BEGIN IMMEDIATE`` transaction
per batch of writes, so two processes (two Snakemake jobs) can share the file, and a writer
killed with SIGKILL loses at most its open transaction, never committed rows. A file with an
older schema is rebuilt with a warning; a file that is not a database is moved aside.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from routerr1.config import PoolEntry
from routerr1.pool.backend import Generation
from routerr1.pool.messages import EXTRACT_VERSION, question_messages, resolve_extract

log = logging.getLogger(__name__)

CACHE_FILE = Path("cache/calls.sqlite")  # under a run's results folder
DEFAULT_CACHE_PATH = Path("results") / CACHE_FILE
# Bump when the key material or the table layout changes: older files are rebuilt.
SCHEMA_VERSION = 1
_CHUNK = 500  # keys per SELECT ... IN (...), below SQLite's variable limit

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    in_tokens INTEGER NOT NULL,
    out_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL
);
"""


def call_request(entry: PoolEntry, question: str, max_new_tokens: int) -> dict | None:
    """The key material of a call, or None when the call is not deterministic."""
    if entry.temperature != 0.0:
        return None
    served: dict[str, object]
    if entry.serve == "vllm":
        # a launched server's port changes every run: key on what it serves, not where
        served = {
            "serve": "vllm",
            "served_model": entry.served_model or entry.name,
            "vllm_model": entry.vllm.get("model"),
            "extra_args": list(entry.vllm.get("extra_args") or []),
        }
    elif entry.backend == "openai":
        served = {"base_url": entry.base_url, "served_model": entry.served_model or entry.name}
    else:
        served = {"dtype": entry.dtype}
    # the same generation read two ways is two cached answers; the default adds nothing
    extract = resolve_extract(entry.prompt, entry.extract)
    reading: dict[str, str] = {}
    if (entry.prompt, extract) != ("short", "first_line"):
        reading = {"prompt": entry.prompt, "extract": extract, "extract_version": EXTRACT_VERSION}
    return {
        "schema": SCHEMA_VERSION,
        "backend": entry.backend,
        "model": entry.model,
        "revision": entry.revision,
        **served,
        "prompt_style": entry.prompt_style,
        "messages": question_messages(
            question, entry.prompt_style, chat_examples=entry.chat_examples, prompt=entry.prompt
        ),
        **reading,
        "sampling": {"temperature": 0.0, "max_new_tokens": int(max_new_tokens)},
    }


def call_key(entry: PoolEntry, question: str, max_new_tokens: int) -> str | None:
    """sha256 of :func:`call_request`, or None for a sampled (temperature > 0) call."""
    request = call_request(entry, question, max_new_tokens)
    if request is None:
        return None
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: take the write lock up front, commit, or roll back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class CallCache:
    """Deterministic pool calls in one SQLite file, shared safely between processes.

    Reads and writes never raise: a failing cache logs a warning and behaves as a miss (the
    call then runs for real). ``hits``, ``misses`` and ``writes`` count this process's use.
    """

    def __init__(self, path: str | Path = DEFAULT_CACHE_PATH, busy_timeout_s: float = 60.0):
        if busy_timeout_s <= 0:
            raise ValueError(f"busy_timeout_s: {busy_timeout_s!r} must be positive")
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    # -- connection -----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # After a fork, the parent's connection must not be used: open a fresh one.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc) and "malformed" not in str(exc):
                raise
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.warning("call cache %s is unreadable (%s); moved to %s", self.path, exc, aside)
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):  # they belong to the unreadable file
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            conn = self._open()
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the lock
        # up front and waits on busy_timeout instead of failing on a lock upgrade.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            self._enable_wal(conn)
            # NORMAL in WAL mode: a commit survives a process kill (only power loss can undo
            # the last commits), and writes do not fsync on every batch.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switching to WAL needs an exclusive lock and SQLite can report "database is locked"
        at once, without waiting on busy_timeout, while another process opens the same file;
        retry for up to busy_timeout_s."""
        from tenacity import retry, retry_if_exception, stop_after_delay, wait_random

        def locked(exc: BaseException) -> bool:
            return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

        @retry(
            retry=retry_if_exception(locked),
            stop=stop_after_delay(self.busy_timeout_s),
            wait=wait_random(0.01, 0.1),
            reraise=True,
        )
        def switch() -> None:
            conn.execute("PRAGMA journal_mode=WAL")

        switch()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _immediate(conn):
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            version = None
            if "meta" in tables:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = row[0] if row else None
            if tables and version != str(SCHEMA_VERSION):
                log.warning(
                    "call cache %s has schema %s, expected %s: rebuilding it (entries dropped)",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                )
                for table in tables:
                    conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            for statement in _DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- use ------------------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> dict[str, Generation]:
        """Recorded generations for the keys present (``cached=True``)."""
        found: dict[str, Generation] = {}
        unique = list(dict.fromkeys(keys))
        try:
            with self._lock:
                conn = self._connection()
                for start in range(0, len(unique), _CHUNK):
                    chunk = unique[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = conn.execute(
                        "SELECT key, text, in_tokens, out_tokens, latency_s, finish_reason "
                        f"FROM calls WHERE key IN ({marks})",
                        chunk,
                    )
                    for key, text, n_in, n_out, latency, reason in rows:
                        found[key] = Generation(
                            text, n_in, n_out, latency, finish_reason=reason, cached=True
                        )
        except sqlite3.Error as exc:
            log.warning("call cache %s: read failed (%s); treating as misses", self.path, exc)
            found = {}
        self.hits += sum(1 for k in keys if k in found)
        self.misses += sum(1 for k in keys if k not in found)
        return found

    def put_many(self, items: Iterable[tuple[str, Generation, str]]) -> int:
        """Record (key, generation, pool name) triples in one transaction; failed generations
        are skipped. The first writer of a key wins (the answer is deterministic anyway).
        Returns the number of rows written."""
        now = time.time()
        rows = [
            (key, name, g.text, int(g.in_tokens), int(g.out_tokens), float(g.latency_s),
             g.finish_reason, now)
            for key, g, name in items
            if g.error is None
        ]  # fmt: skip
        if not rows:
            return 0
        try:
            with self._lock:
                conn = self._connection()
                before = conn.total_changes
                with _immediate(conn):
                    conn.executemany(
                        "INSERT OR IGNORE INTO calls (key, model, text, in_tokens, out_tokens, "
                        "latency_s, finish_reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                written = conn.total_changes - before
        except sqlite3.Error as exc:
            log.warning("call cache %s: write failed (%s); calls not cached", self.path, exc)
            return 0
        self.writes += written
        return written

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}
