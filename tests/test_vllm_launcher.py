"""Tests for routerr1.pool.vllm_launcher (``serve: vllm``).

The lifecycle runs a real process speaking the protocol in vLLM's place: ``tests/pool_servers.py``
as a script parses ``vllm serve``'s flags and serves ``serve-pool``'s app with an echo model
(``vllm.command`` overrides ``vllm serve``). Each launch takes about two seconds.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest

from routerr1.config import ConfigError, PoolEntry, pool_entries, validate_config
from routerr1.pool.base import BackendStartError, build_pool
from routerr1.pool.cache import call_key
from routerr1.pool.messages import question_messages, render_fewshot
from routerr1.pool.vllm_launcher import (
    ServerStartError,
    VllmOptions,
    VllmServer,
    _alive_in_group,
    fewshot_chat_template,
    serve_args,
)
from routerr1.reward import call_cost

FAKE_VLLM = [sys.executable, str(Path(__file__).with_name("pool_servers.py"))]
QUESTION = "what is the capital of france"


def _entry(tmp_path: Path, *extra: str, prompt_style: str = "chat", **opts) -> PoolEntry:
    vllm = {
        "command": FAKE_VLLM,
        "log_dir": str(tmp_path / "logs"),
        "startup_timeout_s": 60,
        "stop_timeout_s": 5,
        "extra_args": list(extra),
        **opts,
    }
    return PoolEntry(
        "Served", "m", 1.0, 2.0, backend="openai", serve="vllm", vllm=vllm,
        prompt_style=prompt_style, timeout_s=5.0, max_retries=0,
    )  # fmt: skip


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}))
    return folder


# -- the command line ----------------------------------------------------------------------
def test_real_vllm_command_line() -> None:
    opts = VllmOptions(
        tensor_parallel_size=4, gpu_memory_utilization=0.9, extra_args=("--max-model-len", "4096")
    )
    assert serve_args("/w/qwen", "Qwen-7B", 8123, opts) == [
        "vllm", "serve", "/w/qwen", "--served-model-name", "Qwen-7B",
        "--host", "127.0.0.1", "--port", "8123",
        "--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.9",
        "--max-model-len", "4096",
    ]  # fmt: skip
    custom = VllmOptions(command=(".venv-vllm/bin/vllm", "serve"))
    args = serve_args("org/m", "M", 1, custom, chat_template="/t.jinja")
    assert args[:3] == [".venv-vllm/bin/vllm", "serve", "org/m"]
    assert args[-2:] == ["--chat-template", "/t.jinja"]
    assert "--gpu-memory-utilization" in args and args[args.index("--port") + 1] == "1"


def test_default_options() -> None:
    opts = VllmOptions.from_mapping({})
    assert (opts.tensor_parallel_size, opts.gpu_memory_utilization, opts.port) == (1, 0.85, None)
    assert opts.command is None and opts.startup_timeout_s == 900.0


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"extra_args": ["--port=9000"]}, r"x\.extra_args: '--port' is set by the launcher"),
        ({"extra_args": ["-tp", "2"]}, r"x\.extra_args: '-tp'.*tensor_parallel_size"),
        ({"extra_args": ["--api-key", "k"]}, r"x\.extra_args: '--api-key'.*api_key_env"),
        ({"gpu_memory_utilization": 0}, r"x\.gpu_memory_utilization"),
        ({"gpu_memory_utilization": 1.5}, r"x\.gpu_memory_utilization"),
        ({"tensor_parallel_size": 0}, r"x\.tensor_parallel_size"),
        ({"tensor_parallel_size": 1.5}, r"x\.tensor_parallel_size"),
        ({"port": 70000}, r"x\.port"),
        ({"command": []}, r"x\.command: must not be empty"),
        ({"command": "vllm serve"}, r"x\.command: .* list of strings"),
        ({"env": {"A": 1}}, r"x\.env"),
        ({"tp": 2}, r"x\.tp: unknown option"),
    ],
)
def test_bad_options_name_the_field(raw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VllmOptions.from_mapping(raw, "x")


def test_fewshot_template_renders_like_the_in_process_prompt() -> None:
    shots = (("q1", "a1"), ("q2", "a2"))
    msgs = question_messages("  who  ", "fewshot", fewshot=shots)
    with_system = [{"role": "system", "content": " Be brief. "}, *msgs]
    for messages in (msgs, with_system):
        for bos in (False, True):
            rendered = jinja2.Template(fewshot_chat_template(bos), keep_trailing_newline=True)
            expected = ("<s>" if bos else "") + render_fewshot(messages)
            assert rendered.render(messages=messages, bos_token="<s>") == expected


# -- config --------------------------------------------------------------------------------
def _cfg(**entry) -> dict:
    return {
        "models": {"m": {"source": {"kind": "hub", "repo_id": "org/m", "revision": "abc"}}},
        "pool": [{"name": "Served", "model": "m", "price_in": 1.0, "price_out": 2.0, **entry}],
        "policy": {"model": "m"},
    }


def test_config_accepts_a_vllm_entry_and_fills_defaults() -> None:
    cfg = validate_config(
        _cfg(backend="openai", serve="vllm", vllm={"tensor_parallel_size": 2, "port": None})
    )
    (entry,) = pool_entries(cfg)
    assert entry.serve == "vllm" and entry.base_url is None
    opts = VllmOptions.from_mapping(entry.vllm)
    assert (opts.tensor_parallel_size, opts.gpu_memory_utilization) == (2, 0.85)
    assert opts.log_dir == "results/logs/vllm" and opts.extra_args == ()
    (plain,) = pool_entries(validate_config(_cfg()))
    assert plain.serve == "none" and plain.vllm == {}


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (
            {"serve": "vllm"},
            r"pool\[0\]\.serve: 'vllm' needs backend 'openai'.*got backend 'local'",
        ),
        (
            {"serve": "vllm", "backend": "openai", "base_url": "http://127.0.0.1:8000/v1"},
            r"pool\[0\]\.base_url: conflicts with serve 'vllm'",
        ),
        ({"vllm": {"tensor_parallel_size": 2}}, r"pool\[0\]\.vllm: only used with serve 'vllm'"),
        (
            {"serve": "vllm", "backend": "openai", "vllm": {"extra_args": ["--host", "0.0.0.0"]}},
            r"pool\[0\]\.vllm\.extra_args: '--host' is set by the launcher",
        ),
        (
            {"serve": "vllm", "backend": "openai", "vllm": {"gpu_memory_utilization": 1.5}},
            r"pool\.0\.vllm\.gpu_memory_utilization",
        ),
        ({"serve": "docker"}, r"pool\.0\.serve"),
    ],
)
def test_config_rejects_bad_vllm_entries(entry: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_config(_cfg(**entry))


def test_config_checks_pool_unseen_vllm_entries() -> None:
    cfg = _cfg()
    cfg["pool_unseen"] = [copy.deepcopy(cfg["pool"][0]) | {"name": "U", "serve": "vllm"}]
    with pytest.raises(ConfigError, match=r"pool_unseen\[0\]\.serve"):
        validate_config(cfg)


def test_build_pool_needs_weights_or_vllm_model(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    with pytest.raises(
        ValueError, match=r"\['Served'\] have no fetched weights and no vllm\.model"
    ):
        build_pool([entry], {})
    with pytest.raises(ValueError, match=r"\['Served'\] need backend 'openai'"):
        build_pool([replace(entry, backend="local")], {"m": tmp_path})
    build_pool([replace(entry, vllm={**entry.vllm, "model": "org/m"})], {})  # nothing started


def test_cache_key_ignores_the_port_but_not_the_served_model(tmp_path: Path) -> None:
    entry = _entry(tmp_path, port=8001)
    same = replace(entry, vllm={**entry.vllm, "port": 8002, "log_dir": "elsewhere"})
    assert call_key(entry, QUESTION, 32) == call_key(same, QUESTION, 32)
    other_args = replace(entry, vllm={**entry.vllm, "extra_args": ["--dtype", "float32"]})
    assert call_key(entry, QUESTION, 32) != call_key(other_args, QUESTION, 32)
    endpoint = replace(entry, serve="none", vllm={}, base_url="http://127.0.0.1:8001/v1")
    assert call_key(entry, QUESTION, 32) != call_key(endpoint, QUESTION, 32)


# -- the lifecycle, with a real process -------------------------------------------------------
def test_launch_call_and_stop_the_whole_group(tmp_path: Path, weights: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROUTERR1_TEST_VLLM_KEY", "sk-never-printed")
    argv_file = tmp_path / "argv.json"
    entry = replace(
        _entry(tmp_path, "--fake-child", "--fake-argv-file", str(argv_file)),
        api_key_env="ROUTERR1_TEST_VLLM_KEY",
    )
    with build_pool([entry], {"m": weights}) as pool:
        pool.check()  # starts the server; /v1/models answers with the key
        served = pool.backend("Served")
        server = served.server
        pgid = server.proc.pid
        assert served.base_url == f"http://127.0.0.1:{server.port}/v1"
        (call,) = pool.call([("Served", QUESTION)])
        assert call.error is None and call.text == QUESTION
        n_in = len(question_messages(QUESTION)[-1]["content"].encode())
        assert (call.in_tokens, call.out_tokens) == (n_in, len(QUESTION.split()) + 1)
        assert call.cost == call_cost(n_in, call.out_tokens, 1.0, 2.0)
        assert len(_alive_in_group(pgid)) >= 2  # the server and its "engine" child
    assert _alive_in_group(pgid) == [] and server.proc is None
    argv = json.loads(argv_file.read_text())
    assert argv[:2] == [str(weights), "--served-model-name"] and argv[2] == "Served"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "1"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.85"
    assert "--chat-template" not in argv  # a chat model keeps its own template
    log_text = server.log_path.read_text()
    assert "fake vllm: loading" in log_text and "sk-never-printed" not in log_text + str(argv)


def test_a_server_that_exits_is_a_clear_error_with_the_log_tail(
    tmp_path: Path, weights: Path
) -> None:
    argv_file = tmp_path / "argv.json"
    entry = _entry(
        tmp_path, "--fake-mode", "exit", "--fake-argv-file", str(argv_file), prompt_style="fewshot"
    )
    pool = build_pool([entry], {"m": weights})
    with pytest.raises(ServerStartError) as err:
        pool.call([("Served", QUESTION)])  # not a counted error: the pipeline stops
    message = str(err.value)
    assert isinstance(err.value, BackendStartError)
    assert "pool model 'Served'" in message and "exited with code 3" in message
    assert "http://127.0.0.1:" in message and "CUDA out of memory" in message
    # a base model gets the fewshot chat template, with BOS since its tokenizer adds one
    argv = json.loads(argv_file.read_text())
    template = Path(argv[argv.index("--chat-template") + 1])
    assert template.read_text() == fewshot_chat_template(bos_token=True)
    pool.close()


def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(
    tmp_path: Path, weights: Path
) -> None:
    entry = _entry(tmp_path, "--fake-mode", "hang", "--fake-child", startup_timeout_s=1.5)
    server = VllmServer("Hung", weights, VllmOptions.from_mapping(entry.vllm))
    launch, pids = server._launch, []

    def recording_launch(port: int) -> None:
        launch(port)
        pids.append(server.proc.pid)

    server._launch = recording_launch  # type: ignore[method-assign]
    with pytest.raises(ServerStartError) as err:
        server.start()
    message = str(err.value)
    assert f"http://127.0.0.1:{server.port}/health did not answer 200 within 1.5s" in message
    assert "vllm.startup_timeout_s" in message and "'Hung'" in message
    assert len(pids) == 1 and _alive_in_group(pids[0]) == []


def test_a_missing_executable_names_the_option(tmp_path: Path, weights: Path) -> None:
    entry = _entry(tmp_path, command=[str(tmp_path / "no-such-vllm"), "serve"])
    with pytest.raises(ServerStartError, match=r"'Served': cannot run .*vllm\.command"):
        build_pool([entry], {"m": weights}).check()


def test_sigterm_to_the_pipeline_stops_the_server(tmp_path: Path, weights: Path) -> None:
    """The server has its own session, so a job kill (SIGTERM to the pipeline) must reach it
    through the launcher's exit path."""
    script = f"""
import sys, time
from routerr1.config import PoolEntry
from routerr1.pool.base import build_pool
entry = PoolEntry("Served", "m", 1.0, 2.0, backend="openai", serve="vllm", vllm={{
    "command": {FAKE_VLLM!r}, "log_dir": {str(tmp_path / "logs")!r}, "stop_timeout_s": 5}})
pool = build_pool([entry], {{"m": {str(weights)!r}}})
pool.check()
print(pool.backend("Served").server.proc.pid, flush=True)
time.sleep(120)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(parent.stdout.readline())
        assert _alive_in_group(pgid)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        assert _alive_in_group(pgid) == []
    finally:
        parent.kill()
        parent.wait()


def test_sigkill_to_the_pipeline_stops_the_server(tmp_path: Path, weights: Path) -> None:
    """Nothing runs in a SIGKILLed process: the kernel's parent-death signal stops the server."""
    script = f"""
import time
from routerr1.config import PoolEntry
from routerr1.pool.base import build_pool
entry = PoolEntry("Served", "m", 1.0, 2.0, backend="openai", serve="vllm", vllm={{
    "command": {FAKE_VLLM!r}, "log_dir": {str(tmp_path / "logs")!r}, "stop_timeout_s": 5}})
pool = build_pool([entry], {{"m": {str(weights)!r}}})
pool.check()
print(pool.backend("Served").server.proc.pid, flush=True)
time.sleep(120)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(parent.stdout.readline())
        assert _alive_in_group(pgid)
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive_in_group(pgid) == []
    finally:
        parent.kill()
        parent.wait()
