"""Tests for routerr1.pool.openai_backend.OpenAIBackend against a real fault-injecting HTTP
server on loopback (tests/pool_servers.py): retries, Retry-After, bounded time, counted errors,
keys kept out of messages, token accounting, and the openai pool entry's config and wiring.

Every server here answers in milliseconds and every backend has small timeouts and retry
budgets, so each test makes a bounded number of requests and finishes in about a second.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import pytest
from pool_servers import FaultServer
from test_pool_local import _toy_model

from routerr1.config import ConfigError, PoolEntry, pool_entries, validate_config
from routerr1.pool.base import build_pool, local_pool
from routerr1.pool.local import LocalModel
from routerr1.pool.messages import question_messages, render_fewshot
from routerr1.pool.openai_backend import EndpointError, OpenAIBackend, retry_after_s
from routerr1.reward import call_cost

QUESTION = "what is the capital of france"
FAST = {"timeout_s": 0.3, "backoff_s": 0.01, "max_backoff_s": 0.05}
FAST_ENTRY = {"timeout_s": 0.3, "max_retries": 1}


def backend(server: FaultServer, **kwargs) -> OpenAIBackend:
    return OpenAIBackend(server.base_url, "m", name="Remote", **{**FAST, **kwargs})


def faults(server: FaultServer) -> list[str]:
    return [fault for _, fault, _ in server.log]


@pytest.mark.parametrize("fault", ["429", "500", "drop", "truncated", "delay", "no_choices"])
def test_one_transient_fault_is_retried(fault: str) -> None:
    with FaultServer([fault], delay_s=0.6) as server:
        gen = backend(server, max_retries=2).answer([QUESTION])[0]
    assert gen.error is None
    assert gen.text == QUESTION  # the server echoes the question
    assert (gen.in_tokens, gen.out_tokens) == (7, len(QUESTION.split()) + 1)  # from usage
    assert faults(server) == [fault, "ok"]


def test_every_transient_fault_in_a_row_then_success() -> None:
    script = ["429", "500", "drop", "truncated", "delay", "no_choices"]
    with FaultServer(script, delay_s=0.6) as server:
        b = backend(server, max_retries=6)
        gen = b.answer([QUESTION])[0]
    assert gen.error is None and gen.text == QUESTION
    assert faults(server) == [*script, "ok"]
    assert b.stats() == {"requests": 1, "attempts": 7, "retries": 6, "errors": 0}


def test_retry_after_is_honoured() -> None:
    with FaultServer(["429"], retry_after="0.4") as server:
        gen = backend(server, max_retries=1).answer([QUESTION])[0]
    assert gen.error is None
    (t_first, _, _), (t_second, _, _) = server.log
    assert t_second - t_first >= 0.4  # not the 0.01 s exponential backoff


def test_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    with FaultServer(then="429", retry_after="30") as server:
        t0 = time.monotonic()
        gen = backend(server, max_retries=5, max_total_s=2.0).answer([QUESTION])[0]
    assert time.monotonic() - t0 < 1.0
    assert server.requests == 1
    assert "HTTP 429" in gen.error


def test_retry_after_header_forms() -> None:
    class Resp:
        def __init__(self, headers):
            self.headers = headers

    class Exc(Exception):
        def __init__(self, headers):
            self.response = Resp(headers)

    assert retry_after_s(Exc({"retry-after": "2"})) == 2.0
    assert retry_after_s(Exc({"retry-after-ms": "250"})) == 0.25
    assert 50 < retry_after_s(Exc({"retry-after": _http_date(time.time() + 60)})) <= 61
    assert retry_after_s(Exc({"retry-after": "soon"})) is None
    assert retry_after_s(Exc({})) is None
    assert retry_after_s(ValueError("no response")) is None


def _http_date(ts: float) -> str:
    from email.utils import formatdate

    return formatdate(ts, usegmt=True)


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        ("500", "HTTP 500 from"),
        ("drop", "cannot connect to"),
        ("truncated", "malformed response from"),
        ("no_choices", "malformed response from"),
    ],
)
def test_persistent_fault_is_a_counted_error_not_an_exception(fault: str, expect: str) -> None:
    with FaultServer(then=fault) as server:
        b = backend(server, max_retries=2)
        gens = b.answer([QUESTION, "who wrote hamlet"])
    assert server.requests == 6  # 2 questions x (1 try + 2 retries)
    for gen in gens:
        assert gen.text == "" and (gen.in_tokens, gen.out_tokens) == (0, 0)
        assert expect in gen.error and server.base_url in gen.error
        assert "gave up after 3 attempts" in gen.error
    assert b.stats()["errors"] == 2


def test_persistent_delay_is_bounded_by_the_total_budget() -> None:
    with FaultServer(then="delay", delay_s=1.0) as server:
        t0 = time.monotonic()
        gen = backend(server, timeout_s=0.2, max_retries=20, max_total_s=0.7).answer([QUESTION])
        elapsed = time.monotonic() - t0
    assert elapsed < 1.2
    assert 2 <= server.requests <= 5
    assert "timed out" in gen[0].error


def test_client_errors_are_not_retried() -> None:
    with FaultServer(then="404") as server:
        gen = backend(server, max_retries=3).answer([QUESTION])[0]
    assert server.requests == 1
    assert "HTTP 404" in gen.error and "'m'" in gen.error


def test_wrong_key_names_the_env_var_never_the_key(monkeypatch, caplog) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("ROUTERR1_TEST_KEY", secret)
    with FaultServer(then="401") as server:
        b = backend(server, api_key_env="ROUTERR1_TEST_KEY", max_retries=3)
        with caplog.at_level(logging.DEBUG):
            gen = b.answer([QUESTION])[0]
        with pytest.raises(EndpointError) as err:
            b.check()
    assert server.log[0][2]["authorization"] == f"Bearer {secret}"  # the key was sent...
    assert server.requests == 1  # ...once: a 401 is not retried
    assert "ROUTERR1_TEST_KEY" in gen.error and "rejected the API key" in gen.error
    for text in (gen.error, str(err.value), repr(b), caplog.text):
        assert secret not in text and secret[:12] not in text


def test_missing_key_env_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv("ROUTERR1_NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="ROUTERR1_NO_SUCH_KEY.*not set"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key_env="ROUTERR1_NO_SUCH_KEY")


def test_unreachable_endpoint_check_names_model_and_url() -> None:
    with FaultServer() as server:
        url = server.base_url
    # the server is closed now: nothing listens on its port
    b = OpenAIBackend(url, "m", name="Remote", max_retries=2, **FAST)
    with pytest.raises(EndpointError, match=r"'Remote'.*127\.0\.0\.1.*unreachable"):
        b.check()
    gen = b.answer([QUESTION])[0]  # calls fail, counted, fast (connection refused)
    assert "cannot connect to" in gen.error


def test_check_lists_models() -> None:
    with FaultServer() as server:
        assert backend(server).check() == ["m"]


def test_concurrency_is_bounded_and_order_kept() -> None:
    questions = [f"question number {i}" for i in range(9)]
    with FaultServer(then="slow", slow_s=0.1) as server:
        gens = backend(server, max_concurrency=3).answer(questions)
    assert [g.text for g in gens] == questions
    assert server.max_in_flight == 3


def test_request_shape() -> None:
    with FaultServer() as server:
        b = backend(server)
        b.answer([QUESTION], max_new_tokens=5)
        OpenAIBackend(server.base_url, "base-m", prompt_style="fewshot", **FAST).answer(["q"])
        b.close()
    assert server.log[0][2]["authorization"] == "Bearer EMPTY"  # placeholder: no api_key_env
    chat, fewshot = server.bodies
    assert chat["model"] == "m" and chat["max_tokens"] == 5 and chat["temperature"] == 0.0
    assert chat["messages"] == question_messages(QUESTION)
    assert "stop" not in chat
    assert fewshot["model"] == "base-m" and fewshot["stop"] == ["\n"]
    assert fewshot["messages"] == question_messages("q", "fewshot")


def test_no_usage_without_tokenizer_estimates_and_warns(caplog) -> None:
    with FaultServer(then="ok_no_usage") as server, caplog.at_level(logging.WARNING):
        gen = backend(server).answer([QUESTION])[0]
    assert gen.error is None
    assert gen.out_tokens == len(QUESTION.split()) + 1  # words + the stop token
    assert gen.in_tokens > 10
    assert "word-count estimates" in caplog.text


def test_no_usage_counts_with_the_model_tokenizer(tmp_path: Path) -> None:
    folder = _toy_model(tmp_path / "toy", "paris")
    local = LocalModel(folder, dtype="float32")
    question = "who is the queen"
    with FaultServer(then="ok_no_usage") as server:
        gen = backend(server, tokenizer=folder).answer([question])[0]
    assert gen.in_tokens == len(local.encode(question))  # same prompt, same tokenizer
    assert gen.out_tokens == len(question.split()) + 1


# -- config and pool wiring -------------------------------------------------------------------
def _cfg(**entry) -> dict:
    return {
        "models": {"m": {"source": {"kind": "hub", "repo_id": "org/m", "revision": "abc"}}},
        "pool": [{"name": "Remote", "model": "m", "price_in": 1.0, "price_out": 2.0, **entry}],
        "policy": {"model": "m"},
    }


def test_config_accepts_an_openai_entry() -> None:
    cfg = validate_config(
        _cfg(
            backend="openai",
            base_url="https://api.example.com/v1",
            api_key_env="EXAMPLE_KEY",
            served_model="org/model-8b",
            max_concurrency=4,
            timeout_s=5,
            max_retries=2,
        )
    )
    (entry,) = pool_entries(cfg)
    assert entry.backend == "openai" and entry.served_model == "org/model-8b"
    assert (entry.max_concurrency, entry.timeout_s, entry.max_retries) == (4, 5.0, 2)
    assert entry.temperature == 0.0 and len(entry.revision) == 16


def test_config_defaults_keep_local() -> None:
    (entry,) = pool_entries(validate_config(_cfg()))
    assert entry.backend == "local" and entry.base_url is None


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"backend": "openai"}, r"pool\[0\]\.base_url: required"),
        ({"backend": "openai", "base_url": "ftp://x/v1"}, r"pool\[0\]\.base_url: 'ftp://x/v1'"),
        ({"backend": "openai", "base_url": "localhost:8000"}, r"pool\[0\]\.base_url"),
        ({"base_url": "http://x/v1"}, r"pool\[0\]\.base_url: only valid with backend 'openai'"),
        ({"temperature": 0.5}, r"pool\[0\]\.temperature: the local backend"),
        ({"backend": "vllm"}, r"pool\.0\.backend"),
        ({"backend": "openai", "base_url": "http://x", "api_key_env": "has-dash"}, "api_key_env"),
        ({"backend": "openai", "base_url": "http://x", "max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_config_rejects_bad_serving_fields(entry: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_config(_cfg(**entry))


def test_config_checks_pool_unseen_too() -> None:
    cfg = _cfg()
    cfg["pool_unseen"] = [copy.deepcopy(cfg["pool"][0]) | {"name": "U", "backend": "openai"}]
    with pytest.raises(ConfigError, match=r"pool_unseen\[0\]\.base_url"):
        validate_config(cfg)


def test_pool_prices_openai_calls_from_usage() -> None:
    with FaultServer(["500"]) as server:
        entry = PoolEntry(
            "Remote", "m", price_in=1.0, price_out=2.0, backend="openai",
            base_url=server.base_url, served_model="m", timeout_s=0.3,
        )  # fmt: skip
        pool = build_pool([entry], model_dirs={})  # no local weights needed
        pool.check()
        (call,) = pool.call([("Remote", QUESTION)])
        pool.close()
    assert call.error is None and call.text == QUESTION
    n_out = len(QUESTION.split()) + 1
    assert (call.in_tokens, call.out_tokens) == (7, n_out)
    assert call.cost == call_cost(7, n_out, 1.0, 2.0)
    assert local_pool is build_pool  # existing callers keep working


def test_pool_turns_a_missing_key_into_counted_errors(monkeypatch) -> None:
    monkeypatch.delenv("ROUTERR1_NO_SUCH_KEY", raising=False)
    entry = PoolEntry(
        "Remote", "m", 1.0, 2.0, backend="openai", base_url="http://127.0.0.1:9/v1",
        api_key_env="ROUTERR1_NO_SUCH_KEY",
    )  # fmt: skip
    calls = build_pool([entry], {}).call([("Remote", "q1"), ("Remote", "q2")])
    assert all("ROUTERR1_NO_SUCH_KEY" in c.error and c.cost == 0.0 for c in calls)


def test_build_pool_still_needs_weights_for_local_entries() -> None:
    with pytest.raises(ValueError, match="no fetched weights for model keys"):
        build_pool([PoolEntry("Local", "m", 1.0, 2.0)], {})


def test_profiling_stops_on_an_unreachable_endpoint() -> None:
    from routerr1.pool.profile import profile_pool

    with FaultServer() as server:
        url = server.base_url
    entry = PoolEntry("Remote", "m", 1.0, 2.0, backend="openai", base_url=url, **FAST_ENTRY)
    with pytest.raises(EndpointError, match=r"'Remote' at http://127\.0\.0\.1"):
        profile_pool(build_pool([entry], {}), ["q"], [["a"]])


# -- the shared messages ------------------------------------------------------------------------
def test_fewshot_messages_render_to_the_classic_prompt() -> None:
    shots = (("q1", "a1"), ("q2", "a2"))
    msgs = question_messages("  who  ", "fewshot", fewshot=shots)
    assert render_fewshot(msgs) == "Question: q1\nAnswer: a1\n\nQuestion: q2\nAnswer: a2\n\n" + (
        "Question: who\nAnswer:"
    )
    system = [{"role": "system", "content": "Be brief."}, *msgs]
    assert render_fewshot(system).startswith("Be brief.\n\nQuestion: q1")


def test_chat_messages_wrap_the_question_and_examples() -> None:
    msgs = question_messages("who", "chat", chat_examples=True, system_prompt="S")
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert msgs[-1]["content"].endswith("Question: who")
    assert question_messages("who")[0]["role"] == "user"


@pytest.mark.parametrize(
    ("msgs", "match"),
    [
        ([{"role": "assistant", "content": "a"}], "must end with a user message"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], r"messages\[1\]"),
    ],
)
def test_bad_fewshot_transcripts_name_the_message(msgs: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_fewshot(msgs)


def test_unknown_prompt_style() -> None:
    with pytest.raises(ValueError, match="prompt_style"):
        question_messages("q", "poetry")


def test_a_broken_tokenizer_falls_back_to_the_estimate(tmp_path: Path, caplog) -> None:
    with FaultServer(then="ok_no_usage") as server, caplog.at_level(logging.WARNING):
        gen = backend(server, tokenizer=tmp_path / "no-such-folder").answer([QUESTION])[0]
    assert gen.error is None and gen.out_tokens == len(QUESTION.split()) + 1
    assert "the tokenizer failed" in caplog.text
