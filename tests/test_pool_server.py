"""Tests for ``routerr1 serve-pool`` (routerr1.pool.server): the real app under uvicorn on a free
loopback port, spoken to with the official ``openai`` client, with raw HTTP for malformed
bodies, and with OpenAIBackend, whose answers must equal the in-process backend's.

Fast tests serve toy Llama models (tests/test_pool_local.py: greedy decoding always emits the
vocabulary's first token); the slow test serves the real SmolLM2-135M conversion.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
import yaml
from pool_servers import serve_app
from test_pool_local import _toy_model

from routerr1.pool.base import Generation
from routerr1.pool.local import LocalModel
from routerr1.pool.openai_backend import OpenAIBackend
from routerr1.pool.server import APIError, ModelWorker, create_app, main, workers_from_config

QUESTIONS = ["who is the queen", "who", "is the sky blue today", "the end"]


@pytest.fixture(scope="module")
def toys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("toys")
    return {
        "word": _toy_model(base / "word", "paris"),
        "eos": _toy_model(base / "eos", "<eos>"),
        "base": _toy_model(base / "base", "paris", chat_template=False),
    }


def _workers(toys: dict[str, Path], batch_wait_s: float = 0.005) -> dict[str, ModelWorker]:
    specs = {
        "Toy-Word": ("word", "chat"),
        "Toy-Eos": ("eos", "chat"),
        "Toy-Base": ("base", "fewshot"),
    }

    def loader(folder: Path, style: str):
        return lambda: LocalModel(folder, prompt_style=style, dtype="float32")

    return {
        name: ModelWorker(name, loader(toys[key], style), style, 5, 16, batch_wait_s)
        for name, (key, style) in specs.items()
    }


@pytest.fixture(scope="module")
def served(toys: dict[str, Path]):
    workers = _workers(toys)
    with serve_app(create_app(workers)) as url:
        yield url, workers


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_models_and_health(served) -> None:
    url, _ = served
    assert [m.id for m in client(url).models.list()] == ["Toy-Word", "Toy-Eos", "Toy-Base"]
    with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"


def test_chat_completion_has_openai_shape_and_usage(served, toys) -> None:
    url, _ = served
    messages = [{"role": "user", "content": "who is the king"}]
    resp = client(url).chat.completions.create(model="Toy-Word", messages=messages, max_tokens=3)
    local = LocalModel(toys["word"], dtype="float32")
    assert resp.object == "chat.completion" and resp.model == "Toy-Word"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "paris paris paris"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.prompt_tokens == len(local.encode_messages(messages))
    assert resp.usage.completion_tokens == 3
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 3


def test_stop_token_counts_and_finishes(served) -> None:
    url, _ = served
    resp = client(url).chat.completions.create(
        model="Toy-Eos", messages=[{"role": "user", "content": "who"}], max_tokens=4
    )
    assert resp.choices[0].message.content == ""
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == 1  # the EOS was generated, so it is counted


def test_default_max_tokens_and_stop_strings(served) -> None:
    url, _ = served
    c = client(url)
    resp = c.chat.completions.create(model="Toy-Word", messages=[{"role": "user", "content": "x"}])
    assert resp.usage.completion_tokens == 5  # the pool entry's max_new_tokens
    resp = c.chat.completions.create(
        model="Toy-Word", messages=[{"role": "user", "content": "x"}], max_tokens=4, stop=" paris"
    )
    assert resp.choices[0].message.content == "paris"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == 4  # tokens past the stop string were computed


@pytest.mark.parametrize(("name", "style"), [("Toy-Word", "chat"), ("Toy-Base", "fewshot")])
def test_openai_backend_equals_local_backend(served, toys, name: str, style: str) -> None:
    url, _ = served
    folder = toys["word"] if style == "chat" else toys["base"]
    local = LocalModel(folder, prompt_style=style, dtype="float32").answer(QUESTIONS, 4)
    remote = OpenAIBackend(url, name, prompt_style=style, timeout_s=30).answer(QUESTIONS, 4)
    for want, got in zip(local, remote, strict=True):
        assert got.error is None
        assert (got.text, got.in_tokens, got.out_tokens) == (
            want.text,
            want.in_tokens,
            want.out_tokens,
        )


def test_concurrent_requests_are_batched(toys) -> None:
    workers = _workers(toys, batch_wait_s=0.3)
    with serve_app(create_app(workers)) as url:
        c = client(url)
        results: list[str] = []

        def ask(i: int) -> None:
            msg = [{"role": "user", "content": f"who {i}"}]
            resp = c.chat.completions.create(model="Toy-Word", messages=msg, max_tokens=2)
            results.append(resp.choices[0].message.content)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert results == ["paris paris"] * 8
    batches = workers["Toy-Word"].batches
    assert sum(batches) == 8 and max(batches) >= 4


def test_unknown_model_is_404_naming_it(served) -> None:
    url, _ = served
    with pytest.raises(openai.NotFoundError, match="'Nope' not found") as err:
        client(url).chat.completions.create(
            model="Nope", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "Toy-Word"}, "messages"),
        ({"model": "Toy-Word", "messages": []}, "messages"),
        ({"model": "Toy-Word", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"model": "Toy-Word", "messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "Toy-Word", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
         "max_tokens"),
        ({"model": "Toy-Word", "messages": [{"role": "user", "content": "x"}], "temperature": 0.7},
         "temperature"),
        ({"model": "Toy-Word", "messages": [{"role": "user", "content": "x"}], "stream": True},
         "stream"),
        ({"model": "Toy-Word", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "Toy-Base", "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ],
)  # fmt: skip
def test_bad_bodies_are_400_naming_the_field(served, body: dict, field: str) -> None:
    url, _ = served
    status, reply = post(f"{url}/chat/completions", json.dumps(body).encode())
    assert status == 400
    assert reply["error"]["param"] == field
    assert reply["error"]["message"].startswith(field)


def test_malformed_json_is_400(served) -> None:
    url, _ = served
    status, reply = post(f"{url}/chat/completions", b'{"model": "Toy-Word", "messages": [')
    assert status == 400 and reply["error"]["type"] == "invalid_request_error"


def test_api_key_is_required_when_configured(toys, monkeypatch) -> None:
    monkeypatch.setenv("ROUTERR1_TEST_SERVE_KEY", "right-key")
    with serve_app(create_app(_workers(toys), api_key="right-key")) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, key="wrong-key").models.list()
        assert [m.id for m in client(url, key="right-key").models.list()][0] == "Toy-Word"
        good = OpenAIBackend(url, "Toy-Word", api_key_env="ROUTERR1_TEST_SERVE_KEY")
        assert good.answer(["who"], 2)[0].text == "paris paris"
        monkeypatch.setenv("ROUTERR1_TEST_SERVE_KEY", "wrong-key")
        bad = OpenAIBackend(url, "Toy-Word", api_key_env="ROUTERR1_TEST_SERVE_KEY")
        gen = bad.answer(["who"], 2)[0]
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=10) as resp:
            assert resp.status == 200  # health needs no key
    assert "ROUTERR1_TEST_SERVE_KEY" in gen.error and "wrong-key" not in gen.error


def test_a_model_that_fails_to_load_fails_its_requests_only(toys) -> None:
    def broken() -> LocalModel:
        raise OSError("weights missing")

    workers = {"Broken": ModelWorker("Broken", broken), **_workers(toys)}
    with serve_app(create_app(workers)) as url:
        with pytest.raises(openai.InternalServerError, match="weights missing"):
            client(url).chat.completions.create(
                model="Broken", messages=[{"role": "user", "content": "x"}]
            )
        ok = client(url).chat.completions.create(
            model="Toy-Word", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
    assert ok.choices[0].message.content == "paris"


def _config(tmp_path: Path, models_root: Path, toys: dict[str, Path]) -> Path:
    """A config whose two pool models are the toys, fetched as local sources."""
    from routerr1.models import fetch_model, source_from_dict

    models = {}
    for key in ("word", "base"):
        source = {"kind": "local", "path": str(toys[key])}
        fetch_model(source_from_dict(source), models_root / key)
        models[key] = {"source": source, "prompt_style": "chat" if key == "word" else "fewshot"}
    cfg = {
        "models": models,
        "pool": [
            {"name": "Word", "model": "word", "price_in": 0.1, "price_out": 0.2},
            {"name": "Base", "model": "base", "price_in": 0.1, "price_out": 0.2},
        ],
        "pool_unseen": [{"name": "Gone", "model": "missing", "price_in": 1, "price_out": 1}],
        "policy": {"model": "word"},
    }
    cfg["models"]["missing"] = {"source": {"kind": "local", "path": str(toys["word"])}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_workers_from_config_serve_fetched_models(tmp_path: Path, toys) -> None:
    from routerr1.config import load_config

    root = tmp_path / "models"
    cfg = load_config(_config(tmp_path, root, toys))
    workers = workers_from_config(cfg, root)
    assert list(workers) == ["Word", "Base"]  # "Gone" has no weights under root
    assert workers["Base"].prompt_style == "fewshot"
    with serve_app(create_app(workers)) as url:
        gen = OpenAIBackend(url, "Base", prompt_style="fewshot").answer(["who"], 3)[0]
    assert gen.error is None and gen.text == "paris paris paris"


def test_main_reports_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": {}, "pool": [], "policy": {"model": "x"}}))
    assert main(["--config", str(bad)]) == 2
    assert "invalid config" in capsys.readouterr().out


@pytest.mark.slow
def test_serve_smollm2_to_the_openai_client(smollm2_dir: Path) -> None:
    def load() -> LocalModel:
        return LocalModel(smollm2_dir, dtype="float32", chat_examples=True)

    worker = ModelWorker("SmolLM2-135M", load, "chat", 16, 8)
    questions = ["What is the capital of France?", "Who wrote Hamlet?", "What color is the sky?"]
    with serve_app(create_app({"SmolLM2-135M": worker})) as url:
        resp = client(url).chat.completions.create(
            model="SmolLM2-135M",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        remote = OpenAIBackend(url, "SmolLM2-135M", chat_examples=True).answer(questions, 16)
    assert resp.usage.prompt_tokens > 10 and 1 <= resp.usage.completion_tokens <= 16
    assert "paris" in resp.choices[0].message.content.lower()
    local = load().answer(questions, 16)
    assert [g.text for g in remote] == [g.text for g in local]
    assert [(g.in_tokens, g.out_tokens) for g in remote] == [
        (g.in_tokens, g.out_tokens) for g in local
    ]


class _FakeModel:
    """Stands in for LocalModel inside a worker: blocks until released, or raises."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.fail = fail

    def encode_messages(self, messages) -> list[int]:
        return [1, 2, 3]

    def complete(self, prompts, max_tokens, newline):
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("kernel panic")
        return [Generation("x", len(p), 1, 0.0, finish_reason="stop") for p in prompts]


def test_worker_skips_cancelled_requests_and_keeps_serving() -> None:
    fake = _FakeModel()
    worker = ModelWorker("F", lambda: fake, batch_wait_s=0.0)
    msg = [{"role": "user", "content": "x"}]
    first = worker.submit(msg, 2, None)
    deadline = time.monotonic() + 10
    while not first.running() and time.monotonic() < deadline:
        time.sleep(0.005)  # the worker is now blocked inside complete()
    second = worker.submit(msg, 2, None)
    assert second.cancel()  # e.g. its client went away
    fake.release.set()
    assert first.result(10).text == "x"
    assert worker.submit(msg, 2, None).result(10).text == "x"
    worker.stop()
    assert worker.batches == [1, 1]  # the cancelled request was never generated


def test_worker_survives_a_failing_batch() -> None:
    fake = _FakeModel(fail=True)
    fake.release.set()
    worker = ModelWorker("F", lambda: fake, batch_wait_s=0.0)
    msg = [{"role": "user", "content": "x"}]
    with pytest.raises(APIError, match="kernel panic"):
        worker.submit(msg, 2, None).result(10)
    fake.fail = False
    assert worker.submit(msg, 2, None).result(10).text == "x"
    worker.stop()
