"""What every pool backend returns and promises; imported by ``pool.base`` and by each backend.

Kept apart from ``pool.base`` (which builds backends) so that a backend module never imports the
module that imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass
class Generation:
    """One answer from a backend.

    ``in_tokens``: prompt tokens, padding excluded. ``out_tokens``: tokens generated up to and
    including the EOS or the stop token (tokens after the cut in post-processing still count:
    they were computed). ``latency_s``: for the local backend, wall time of the whole batch the
    request ran in (the latency a caller in that batch observes); for the openai backend, the
    request's own wall time, retries included. ``error``: set (and ``text`` empty) when the call
    failed. ``finish_reason``: "stop" or "length" where known. ``cached``: answered from the
    call cache (tokens and latency are the recorded ones).
    """

    text: str
    in_tokens: int
    out_tokens: int
    latency_s: float
    error: str | None = None
    finish_reason: str | None = None
    cached: bool = False


class BackendStartError(RuntimeError):
    """A backend's server could not be started (``serve: vllm``). Unlike a failing call, this
    stops the pipeline: every later call would fail the same way, slowly."""


class Backend(Protocol):
    def answer(self, questions: Sequence[str], max_new_tokens: int = 32) -> list[Generation]: ...
