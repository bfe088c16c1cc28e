"""What ``routerr1 serve-pool`` and ``routerr1 serve`` share: OpenAI-shaped errors, chat
messages, bearer auth from an environment variable, startup guards, and the gathering of
queued requests into one batch.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, and name the
offending field in both ``param`` and the message, so the official clients raise a typed error
(``openai.BadRequestError``, ``NotFoundError``, ...) whose text says what to fix.
"""

from __future__ import annotations

import hmac
import logging
import os
import queue
import time
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class APIError(Exception):
    """An error reply in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"message": self.message, "type": kind, "param": self.param, "code": self.code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body()}, status_code=self.status)


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """``"field.path: what is wrong; ..."`` and the first field's path."""
    parts, first = [], None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        # pydantic reports a union's failing member as an extra location step; drop it.
        loc = [p for p in loc if p not in ("str", "list[TextPart]")]
        # malformed JSON is located at a character offset, which names no field
        where = "body" if err.get("type") == "json_invalid" else ".".join(loc) or "body"
        first = first or where
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body", first


def install_api_basics(app: FastAPI, api_key: str | None) -> None:
    """OpenAI-shaped replies for APIError and bad bodies (400, naming the field), and, with
    ``api_key``, a bearer check on every ``/v1/`` path (``/health`` stays open)."""

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return APIError(400, message, param=param).response()

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            # constant-time: the comparison must not leak how much of the key was right
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return APIError(401, "invalid API key", code="invalid_api_key").response()
        return await call_next(request)


def api_key_from_env(name: str | None) -> str | None:
    """The key held by environment variable ``name`` (None: no auth). ValueError when the
    variable is named but unset: a server meant to be protected must not start open."""
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        raise ValueError(f"--api-key-env: environment variable {name!r} is unset")
    return key


def warn_if_exposed(prog: str, host: str, api_key: str | None) -> None:
    if host not in LOOPBACK and api_key is None:
        log.warning("%s: listening on %s without --api-key-env", prog, host)


def gather(jobs: queue.Queue, first: Any, max_items: int, wait_s: float) -> list[Any]:
    """``first`` plus whatever else is queued within ``wait_s`` after it, up to ``max_items``.

    Requests that arrive together then share one batched run. A ``None`` (the stop signal)
    ends the gathering and is put back, so the worker stops after serving this batch.
    """
    batch = [first]
    deadline = time.monotonic() + wait_s
    while len(batch) < max_items:
        try:
            nxt = jobs.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if nxt is None:
            jobs.put(None)
            break
        batch.append(nxt)
    return batch
