"""Pool member behind any OpenAI-compatible chat-completions endpoint.

``vllm serve``, NVIDIA NIM, OpenAI, Together, ``routerr1 serve-pool``: anything that speaks
``POST {base_url}/chat/completions``. An :class:`OpenAIBackend` sends the same chat messages the
in-process backend renders (``routerr1.pool.messages``), so one question is one prompt on every
path, and cleans the reply the same way.

* **Key.** Read from the environment variable named by ``api_key_env`` when the backend is
  built; the key itself is never stored in config, logged, or put in an error message (401/403
  errors name the variable, not the key). Without ``api_key_env`` a placeholder is sent (local
  servers ignore it).
* **Concurrency.** A thread pool of ``max_concurrency`` requests in flight per backend.
* **Timeouts and retries.** Each attempt has ``timeout_s``; 429 (honouring ``Retry-After``),
  408, 5xx, connection errors, timeouts and malformed responses are retried with exponential
  backoff and jitter, at most ``max_retries`` times and within ``max_total_s`` for the whole
  call. Other statuses (400, 401, 403, 404, ...) fail at once.
* **Failures.** A call that still fails returns a ``Generation`` with ``error`` set (the pool
  turns it into an explanatory observation and counts it); ``answer`` never raises for a
  failed call.
* **Tokens.** From the response's ``usage`` when the server reports it. Otherwise counted with
  the model's tokenizer (``tokenizer``: a folder or a loaded tokenizer; the pool passes the
  fetched model folder when there is one): the prompt as the chat template renders it, the
  reply's tokens plus one for the stop token when ``finish_reason`` is "stop". With no tokenizer
  either, a word-and-punctuation count stands in and a warning is logged once: the cost is then
  an estimate.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from routerr1.config import PoolEntry
from routerr1.pool.backend import Generation
from routerr1.pool.messages import (
    Message,
    check_prompt,
    extract_answer,
    question_messages,
    render_fewshot,
    resolve_extract,
)

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"  # what vLLM's docs use for servers started without --api-key
_WORDISH = re.compile(r"\w+|[^\w\s]")


class EndpointError(ConnectionError):
    """An endpoint is unreachable or rejects its key; the message names model and URL."""


class MalformedResponse(ValueError):
    """The server answered 200 with a body that is not a usable chat completion."""


def _transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, network trouble, garbled bodies."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    return isinstance(exc, (json.JSONDecodeError, MalformedResponse))


def retry_after_s(exc: BaseException | None) -> float | None:
    """Seconds a 429/503 asks us to wait: ``retry-after-ms``, ``Retry-After`` as seconds or as
    an HTTP date; None when absent or unreadable."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OpenAIBackend:
    """Answers questions through an OpenAI-compatible chat-completions endpoint."""

    def __init__(
        self,
        base_url: str,
        served_model: str,
        *,
        name: str | None = None,
        api_key_env: str | None = None,
        prompt_style: str = "chat",
        chat_examples: bool = False,
        system_prompt: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        max_total_s: float | None = None,
        temperature: float = 0.0,
        tokenizer: Any = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        prompt: str = "short",
        extract: str | None = None,
    ) -> None:
        """``max_total_s`` bounds a call, retries and waits included; by default
        ``(max_retries + 1) * timeout_s + max_retries * max_backoff_s``. ``prompt`` /
        ``extract``: how questions are put and answers read back (``routerr1.pool.messages``
        registries; ``extract`` None: the prompt's own)."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: {base_url!r} must start with http:// or https://")
        for field, value in (("timeout_s", timeout_s), ("backoff_s", backoff_s)):
            if value <= 0:
                raise ValueError(f"{field}: {value!r} must be positive")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency: {max_concurrency!r} must be at least 1")
        if max_retries < 0:
            raise ValueError(f"max_retries: {max_retries!r} must be at least 0")
        if not 0.0 <= temperature <= 2.0:
            raise ValueError(f"temperature: {temperature!r} must be in [0, 2]")
        self.base_url = base_url.rstrip("/")
        self.served_model = served_model
        self.name = name or served_model
        self.api_key_env = api_key_env
        self.prompt_style = prompt_style
        self.chat_examples = chat_examples
        self.system_prompt = system_prompt
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.max_total_s = (
            float(max_total_s)
            if max_total_s is not None
            else (max_retries + 1) * self.timeout_s + max_retries * max_backoff_s
        )
        self.temperature = float(temperature)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_s, max=max_backoff_s, jitter=backoff_s
        )
        check_prompt(prompt, prompt_style, chat_examples)
        self.prompt = prompt
        self.extract = resolve_extract(prompt, extract)
        # The client keeps the key for its Authorization header; this object never stores it.
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self._read_key(),
            max_retries=0,  # retries are ours: bounded total time, counted
            timeout=self.timeout_s,
        )
        self._tokenizer_src = tokenizer
        self._tokenizer: Any = None
        self._tokenizer_lock = threading.Lock()
        self._warned_estimate = False
        self._executor: ThreadPoolExecutor | None = None
        self._stats_lock = threading.Lock()
        self.counters = {"requests": 0, "attempts": 0, "retries": 0, "errors": 0}

    @classmethod
    def from_entry(cls, entry: PoolEntry, tokenizer: Any = None) -> OpenAIBackend:
        if not entry.base_url:
            raise ValueError(f"pool entry {entry.name!r}: base_url is required for 'openai'")
        return cls(
            entry.base_url,
            entry.served_model or entry.name,
            name=entry.name,
            api_key_env=entry.api_key_env,
            prompt_style=entry.prompt_style,
            chat_examples=entry.chat_examples,
            prompt=entry.prompt,
            extract=entry.extract,
            max_concurrency=entry.max_concurrency,
            timeout_s=entry.timeout_s,
            max_retries=entry.max_retries,
            temperature=entry.temperature,
            tokenizer=tokenizer,
        )

    def __repr__(self) -> str:  # no key, ever
        return (
            f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r}, "
            f"served_model={self.served_model!r}, api_key_env={self.api_key_env!r})"
        )

    def _read_key(self) -> str:
        if self.api_key_env is None:
            return PLACEHOLDER_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(
                f"api_key_env: environment variable {self.api_key_env!r} is not set "
                f"(pool model {self.name!r}, {self.base_url})"
            )
        return key

    # -- public API -----------------------------------------------------------------------
    def answer(self, questions: Sequence[str], max_new_tokens: int = 32) -> list[Generation]:
        """Answer each question (the short answer extracted like the local backend), in input
        order; failed calls come back with ``error`` set."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: {max_new_tokens!r} must be at least 1")
        messages = [
            question_messages(q, self.prompt_style, chat_examples=self.chat_examples,
                              system_prompt=self.system_prompt, prompt=self.prompt)
            for q in questions
        ]  # fmt: skip
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.max_concurrency, thread_name_prefix=f"openai-{self.name}"
            )
        gens = list(self._executor.map(lambda m: self.complete(m, max_new_tokens), messages))
        for gen in gens:
            gen.text = extract_answer(gen.text, self.extract)
        return gens

    def complete(self, messages: Sequence[Message], max_new_tokens: int = 32) -> Generation:
        """One chat completion, raw text, retried; never raises for a failed call."""
        t0 = time.perf_counter()
        self._count("requests")
        tries = [0]
        try:
            text, finish, usage = self._create_with_retries(list(messages), max_new_tokens, tries)
        except Exception as exc:
            self._count("errors")
            error = self._describe(exc, tries[0], time.perf_counter() - t0)
            log.warning("pool model %s: %s", self.name, error)
            return Generation("", 0, 0, time.perf_counter() - t0, error=error)
        latency = time.perf_counter() - t0
        if usage is not None:
            n_in, n_out = usage
        else:
            n_in, n_out = self._count_tokens(messages, text, finish)
        return Generation(text, n_in, n_out, latency, finish_reason=finish)

    def check(self) -> list[str]:
        """List the endpoint's models; raise :class:`EndpointError` naming the model and URL
        when it is unreachable or rejects the key. An unlisted ``served_model`` only warns
        (some providers list partially)."""
        where = f"pool model {self.name!r} at {self.base_url}"
        try:
            ids = [m.id for m in self._client.models.list(timeout=min(self.timeout_s, 30.0))]
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise EndpointError(
                f"{where}: HTTP {exc.status_code}, the API key was rejected "
                f"(key read from env var {self.api_key_env!r})"
            ) from None
        except openai.NotFoundError:
            log.warning("%s: no /models listing; cannot check %r", where, self.served_model)
            return []
        except openai.APIConnectionError as exc:
            raise EndpointError(f"{where}: unreachable ({_cause(exc)})") from None
        except openai.APIStatusError as exc:
            raise EndpointError(f"{where}: HTTP {exc.status_code} listing models") from None
        if ids and self.served_model not in ids:
            log.warning("%s: served_model %r is not listed (offered: %s)", where,
                        self.served_model, ids[:20])  # fmt: skip
        return ids

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self.counters)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._client.close()

    # -- internals ------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.counters[key] += n

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after_s(exc)
        if after is not None:
            return after
        return self._backoff(state)

    def _create_with_retries(
        self, messages: list[Message], max_new_tokens: int, tries: list[int]
    ) -> tuple[str, str | None, tuple[int, int] | None]:
        """``tries[0]`` counts the attempts made (for the error message)."""
        t0 = time.monotonic()
        retrying = Retrying(
            # stop_before_delay: give up when the next wait would end past the budget.
            stop=stop_after_attempt(self.max_retries + 1) | stop_before_delay(self.max_total_s),
            wait=self._wait,
            retry=retry_if_exception(_transient),
            reraise=True,
            before_sleep=lambda _: self._count("retries"),
        )
        for attempt in retrying:
            with attempt:
                self._count("attempts")
                tries[0] += 1
                remaining = self.max_total_s - (time.monotonic() - t0)
                return self._create_once(messages, max_new_tokens, max(0.05, remaining))
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _create_once(
        self, messages: list[Message], max_new_tokens: int, remaining_s: float
    ) -> tuple[str, str | None, tuple[int, int] | None]:
        extra: dict[str, Any] = {}
        if self.prompt_style == "fewshot":
            extra["stop"] = ["\n"]  # base models continue the transcript otherwise
        resp = self._client.chat.completions.create(
            model=self.served_model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_new_tokens,
            temperature=self.temperature,
            timeout=min(self.timeout_s, remaining_s),
            **extra,
        )
        choices = getattr(resp, "choices", None)
        if not choices:
            raise MalformedResponse("response has no choices")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if message is None or not (content is None or isinstance(content, str)):
            raise MalformedResponse("choices[0].message.content is missing or not text")
        usage = getattr(resp, "usage", None)
        tokens = None
        n_in = getattr(usage, "prompt_tokens", None)
        n_out = getattr(usage, "completion_tokens", None)
        if isinstance(n_in, int) and isinstance(n_out, int):
            tokens = (n_in, n_out)
        return content or "", getattr(choices[0], "finish_reason", None), tokens

    def _describe(self, exc: BaseException, attempts: int, elapsed: float) -> str:
        """An explanatory, key-free message for a call that failed for good."""
        where = self.base_url
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            what = (
                f"HTTP {exc.status_code}: {where} rejected the API key "
                f"(key read from env var {self.api_key_env!r})"
            )
        elif isinstance(exc, openai.NotFoundError):
            what = f"HTTP 404: {where} does not serve model {self.served_model!r}"
        elif isinstance(exc, openai.APIStatusError):
            what = f"HTTP {exc.status_code} from {where}: {_short_body(exc)}"
        elif isinstance(exc, openai.APITimeoutError):
            what = f"timed out at {where} (timeout {self.timeout_s:g}s per attempt)"
        elif isinstance(exc, openai.APIConnectionError):
            what = f"cannot connect to {where}: {_cause(exc)}"
        elif isinstance(exc, (json.JSONDecodeError, MalformedResponse)):
            what = f"malformed response from {where}: {exc}"
        else:
            what = f"{type(exc).__name__}: {exc}"
        if _transient(exc):
            what += f" (gave up after {attempts} attempts in {elapsed:.1f}s)"
        return self._scrub(what)

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text

    def _count_tokens(
        self, messages: Sequence[Message], text: str, finish: str | None
    ) -> tuple[int, int]:
        """Token counts when the server reports no usage: the tokenizer, else an estimate."""
        stop_token = 1 if finish == "stop" else 0
        try:
            tok = self._load_tokenizer()
            if tok is not None:
                return self._tokenize_counts(tok, messages, text, stop_token)
            reason = "no tokenizer is available"
        except Exception as exc:  # a broken tokenizer must not fail a call that succeeded
            reason = f"the tokenizer failed ({type(exc).__name__}: {exc})"
        if not self._warned_estimate:
            self._warned_estimate = True
            log.warning(
                "pool model %s: the server reports no usage and %s; token counts (and costs) "
                "are word-count estimates",
                self.name,
                reason,
            )
        prompt = " ".join(m["content"] for m in messages)
        return len(_WORDISH.findall(prompt)), len(_WORDISH.findall(text)) + stop_token

    def _tokenize_counts(
        self, tok: Any, messages: Sequence[Message], text: str, stop_token: int
    ) -> tuple[int, int]:
        """Counted like the in-process backend: the rendered prompt, the reply, the stop."""
        if self.prompt_style == "chat" and getattr(tok, "chat_template", None):
            rendered = tok.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
            n_in = len(tok(rendered, add_special_tokens=False).input_ids)
        else:
            n_in = len(tok(render_fewshot(messages)).input_ids)
        n_out = len(tok(text, add_special_tokens=False).input_ids) + stop_token
        return n_in, n_out

    def _load_tokenizer(self) -> Any:
        src = self._tokenizer_src
        if src is None or not isinstance(src, (str, Path)):
            return src
        with self._tokenizer_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(Path(src))
            return self._tokenizer


def _cause(exc: BaseException) -> str:
    """The innermost cause's text (``Connection error.`` alone says little)."""
    inner: BaseException = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    return f"{type(inner).__name__}: {inner}" if inner is not exc else str(exc)


def _short_body(exc: openai.APIStatusError, limit: int = 200) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body
        body = message.get("message", message) if isinstance(message, dict) else message
    text = str(body if body is not None else exc.message)
    return text if len(text) <= limit else text[:limit] + "..."
