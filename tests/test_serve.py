"""``routerr1 serve`` and ``routerr1 ask``: a real server process, driven with the real ``openai``
client (plain, streaming, 16 at once) and raw HTTP for malformed bodies.

The trained routers are made here from the real SmolLM2-135M: each folder is the model with a
chat template whose system message demonstrates the tag format for one pool model, and whose
assistant turn opens the way an R1-style template does. Greedy decoding then routes every
question to that model, so each router exercises one pool backend:

* ``router-r1@a0.0`` asks ``SmolLM2``, an in-process model, and writes its own ``<think>``;
* ``router-r1@a0.5`` asks ``Echo``, a ``serve: vllm`` entry (``tests/pool_servers.py`` stands
  in for vLLM and echoes the question) reached over the OpenAI API;
* ``router-r1@a0.9`` asks ``Remote``, an OpenAI endpoint that is down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
import yaml

from routerr1.reward import call_cost

REPO = Path(__file__).resolve().parents[1]
FAKE_VLLM = [sys.executable, str(REPO / "tests" / "pool_servers.py")]
KEY_ENV = "ROUTERR1_TEST_SERVE_KEY"
KEY = "sk-test-serve"
PRICES = {"SmolLM2": (0.1, 0.2), "Echo": (1.0, 2.0), "Remote": (0.5, 1.0)}
ROUTERS = {  # alpha -> (pool model it asks, what the assistant turn opens with)
    "0.0": ("SmolLM2", "<think>"),
    "0.5": ("Echo", "<think>I ask Echo.</think>\n"),
    "0.9": ("Remote", "<think>I ask Remote.</think>\n"),
}
QUESTIONS = [
    "what is the capital of france",
    "who wrote hamlet",
    "what is the largest planet",
    "who painted the mona lisa",
    "what is the chemical symbol for gold",
    "how many continents are there",
    "what is the boiling point of water",
    "what is the capital of japan",
    "what gas do plants absorb",
    "what is the fastest land animal",
    "what language is spoken in brazil",
    "who discovered penicillin",
    "which planet is larger, mars or venus",
    "what river flows through egypt",
    "where was mozart born",
    "who wrote 1984",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_router(base: Path, out: Path, alpha: str, target: str, opening: str) -> None:
    """A "trained router" folder: the SmolLM2 weights (hard-linked) with a routing template."""
    out.mkdir(parents=True)
    for f in base.iterdir():
        if f.is_file() and f.name != "chat_template.jinja":
            try:
                os.link(f, out / f.name)
            except OSError:
                shutil.copy(f, out / f.name)
    demo = (
        "You route questions. Always reply in exactly this form:\\n"
        f"<think>I ask {target}.</think>\\n<search>{target}: the question</search>\\n"
        "then, after the information, <answer>short answer</answer>"
    )
    template = (base / "chat_template.jinja").read_text()
    default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert default_system in template
    template = template.replace(default_system, demo)
    opening = opening.replace("\n", "\\n")
    template = template.replace(
        "{{ '<|im_start|>assistant\n' }}", "{{ '<|im_start|>assistant\n" + opening + "' }}"
    )
    (out / "chat_template.jinja").write_text(template)
    info = {
        "alpha": float(alpha),
        "mlflow_run_id": f"run-{alpha}",
        "global_step": 2,
        "pool": [{"name": n, "model": "smollm2", "price_in": i, "price_out": o}
                 for n, (i, o) in PRICES.items()],
    }  # fmt: skip
    (out / "routerr1_train.json").write_text(json.dumps(info))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A project folder: config, fetched pool weights, descriptors and three trained routers."""
    from routerr1.models import fetch_model, source_from_dict

    wd = tmp_path_factory.mktemp("serve")
    source = {"kind": "local", "path": str(smollm2_dir)}
    fetch_model(source_from_dict(source), wd / "resources" / "models" / "smollm2")
    fast = {"timeout_s": 10, "max_retries": 0}
    cfg = {
        "seed": 0,
        # one thread: on a shared 2-core box two threads each wait for the other (9x slower)
        "threads": 1,
        "models": {"smollm2": {"source": source, "prompt_style": "chat"}},
        "policy": {"model": "smollm2", "dtype": "float32"},
        "pool": [
            {"name": "SmolLM2", "model": "smollm2", "max_new_tokens": 8, "chat_examples": True},
            {"name": "Echo", "model": "smollm2", "backend": "openai", "serve": "vllm", **fast,
             "vllm": {"command": FAKE_VLLM, "log_dir": str(wd / "logs"), "stop_timeout_s": 5,
                      "startup_timeout_s": 120}},
            {"name": "Remote", "model": "smollm2", "backend": "openai", **fast,
             "base_url": f"http://127.0.0.1:{free_port()}/v1"},
        ],
        "rollout": {"max_turns": 2, "max_turn_tokens": 32, "max_final_tokens": 24,
                    "info_max_tokens": 16, "max_total_tokens": 128},
        "eval": {"batch_size": 16},
    }  # fmt: skip
    for entry in cfg["pool"]:
        entry["price_in"], entry["price_out"] = PRICES[entry["name"]]
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    descriptors = [
        {"name": "SmolLM2", "description": "A small chat model.", "latency_p50_s": 0.1},
        {"name": "Echo", "description": "Repeats the question.", "latency_p50_s": 0.05},
        {"name": "Remote", "description": "A remote model.", "latency_p50_s": 0.1},
    ]
    for d in descriptors:
        d.update(price_in=PRICES[d["name"]][0], price_out=PRICES[d["name"]][1], em=5.0, f1=5.0)
    (wd / "results" / "pool").mkdir(parents=True)
    (wd / "results" / "pool" / "descriptors.json").write_text(json.dumps(descriptors))
    for alpha, (target, opening) in ROUTERS.items():
        out = wd / "results" / "train" / f"alpha~{alpha}" / "model"
        make_router(smollm2_dir, out, alpha, target, opening)
    return wd


class Server:
    """``routerr1 serve`` as a real process in its own session, on a free loopback port."""

    def __init__(self, wd: Path, *args: str, startup_timeout_s: float = 600.0) -> None:
        self.port = free_port()
        self.log = wd / f"serve-{self.port}.log"
        env = {
            **os.environ,
            KEY_ENV: KEY,
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "TQDM_DISABLE": "1",
        }
        cmd = [sys.executable, "-m", "routerr1.cli", "serve", "--config", "config.yaml",
               "--port", str(self.port), "--api-key-env", KEY_ENV, *args]  # fmt: skip
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                cmd, cwd=wd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.root}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"serve was not healthy in time:\n{self.tail()}")
            time.sleep(0.5)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.root}/v1", api_key=key, max_retries=0, timeout=600)

    def children(self) -> list[int]:
        """Live processes whose parent is the server (e.g. the launched vLLM server)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                rest = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(rest[1]) == self.proc.pid and rest[0] not in ("Z", "X"):
                found.append(int(stat.parent.name))
        return found

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture(scope="module")
def server(workspace: Path):
    srv = Server(workspace, "--max-pool-calls", "3", "--max-cost-usd", "1.0",
                 "--max-question-tokens", "64", "--batch-window-ms", "200")  # fmt: skip
    yield srv
    srv.stop()


@pytest.fixture
def one_thread():
    """Decode in this process as the server does (the config's one thread): a greedy answer is
    only reproducible under the same reduction order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ask(srv: Server, question: str, model: str = "router-r1@a0.0", **kw):
    return srv.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], **kw
    )


def post(srv: Server, body: bytes, key: str | None = KEY) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{srv.root}/v1/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def check_accounting(ext: dict, usage) -> None:
    """The extension's totals are its trajectory's information steps."""
    infos = [s for s in ext["trajectory"] if s["type"] == "information" and s["source"] == "pool"]
    assert ext["pool_calls"] == len(infos)
    assert ext["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in infos))
    assert usage.prompt_tokens == sum(s["in_tokens"] for s in infos)
    assert usage.completion_tokens == sum(s["out_tokens"] for s in infos)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    for s in infos:
        price_in, price_out = PRICES[s["model"]]
        expect = call_cost(s["in_tokens"], s["out_tokens"], price_in, price_out)
        assert s["cost_usd"] == pytest.approx(expect)


# -- finding routers and reading trajectories (no models) ----------------------------------------
def _info(folder: Path, **info) -> Path:
    folder.mkdir(parents=True)
    (folder / "routerr1_train.json").write_text(json.dumps(info))
    return folder


def test_routers_are_found_named_by_alpha_and_checked(tmp_path: Path) -> None:
    from routerr1.router_service import select_routers
    from routerr1.routers import find_routers, read_router

    train = tmp_path / "train"
    _info(train / "alpha~0.9" / "model", alpha=0.9, mlflow_run_id="abc", pool=[{"name": "A"}])
    _info(train / "alpha~0.0" / "model", alpha=0.0, global_step=4)
    (train / "alpha~0.5" / "checkpoints").mkdir(parents=True)  # training never finished
    assert find_routers(tmp_path) == [train / "alpha~0.0" / "model", train / "alpha~0.9" / "model"]
    info = read_router(train / "alpha~0.9")  # the alpha folder stands for its model folder
    assert (info.name, info.run_id, info.trained_pool) == ("router-r1@a0.9", "abc", ("A",))
    assert read_router(train / "alpha~0.0" / "model").name == "router-r1@a0.0"
    assert [r.name for r in select_routers({}, ["router-r1@a0.9"], tmp_path)] == ["router-r1@a0.9"]
    with pytest.raises(ValueError, match=r"'router-r1@a0.7' is neither a folder nor a router"):
        select_routers({}, ["router-r1@a0.7"], tmp_path)
    with pytest.raises(ValueError, match="is not a trained router"):
        read_router(train / "alpha~0.5")
    with pytest.raises(ValueError, match="has no valid 'alpha'"):
        read_router(_info(tmp_path / "odd", global_step=1))
    with pytest.raises(ValueError, match="no trained routers under"):
        select_routers({}, [], tmp_path / "empty")


def test_run_id_of_an_older_router_comes_from_mlflow(tmp_path: Path) -> None:
    from routerr1.routers import read_router
    from routerr1.tracking import tracked_run

    cfg = {"mlflow": {"experiment": "serve-test"}}
    results = tmp_path / "results"
    with tracked_run(cfg, "train/alpha~0.5", "train alpha=0.5", results_dir=results) as run:
        pass
    folder = _info(results / "train" / "alpha~0.5" / "model", alpha=0.5)
    assert read_router(folder, cfg, results).run_id == run.info.run_id
    assert read_router(folder, cfg, tmp_path / "elsewhere").run_id is None  # no store there


def test_policy_text_becomes_steps() -> None:
    from routerr1.parse import ModelNameResolver
    from routerr1.steps import policy_steps

    names = ModelNameResolver(["SmolLM2", "Echo"])
    # an R1-style template opened <think> in the prompt
    assert policy_steps("I ask SmolLM2.</think>\n<search>smollm2: capital?</search>", names) == [
        {"type": "think", "text": "I ask SmolLM2."},
        {"type": "search", "model": "SmolLM2", "query": "capital?", "error": None},
    ]
    steps = policy_steps("<think>hm</think> so <search>GPT-9: x</search>", names)
    assert [s["type"] for s in steps] == ["think", "text", "search"]
    assert steps[2]["model"] == "GPT-9" and "unknown model 'GPT-9'" in steps[2]["error"]
    assert policy_steps("\n<answer> Paris </answer>", names) == [
        {"type": "answer", "text": "Paris"}
    ]
    assert policy_steps("rambling <answer>cut off", names) == [
        {"type": "text", "text": "rambling <answer>cut off"}
    ]


def test_request_limits_stay_within_the_server_caps() -> None:
    from routerr1.rollout import CallBudget
    from routerr1.router_service import RouterService
    from routerr1.serving import APIError

    def service(**caps) -> RouterService:
        return RouterService({}, None, [], None, **caps)

    assert service().budget(None, None) is None  # no limits at all
    capped = service(max_pool_calls=3, max_cost_usd=0.5)
    assert capped.budget(None, None) == CallBudget(3, 0.5)
    assert capped.budget(1, 0.25) == CallBudget(1, 0.25)
    with pytest.raises(APIError, match="routerr1.max_cost_usd: 0.75 is above") as err:
        capped.budget(None, 0.75)
    assert err.value.status == 400 and err.value.param == "routerr1.max_cost_usd"
    with pytest.raises(ValueError, match="--max-pool-calls: -1 must be >= 0"):
        service(max_pool_calls=-1)
    with pytest.raises(ValueError, match="--max-batch-size: 0 must be at least 1"):
        service(max_batch_size=0)


def test_serve_refuses_to_start_without_routers(tmp_path: Path, capsys) -> None:
    from routerr1.serve import main

    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    smoke = str(REPO / "tests" / "data" / "smoke.yaml")
    assert main(["--config", smoke, "--results", str(tmp_path)]) == 2
    assert "serve: --router: no trained routers under" in capsys.readouterr().out


# -- the served API (a real server process, real models) -----------------------------------------
@pytest.mark.slow
def test_models_lists_each_router_with_alpha_run_policy_and_pool(server: Server) -> None:
    models = {m.id: m for m in server.client().models.list()}
    assert list(models) == ["router-r1@a0.0", "router-r1@a0.5", "router-r1@a0.9"]
    card = models["router-r1@a0.5"].routerr1
    assert card["alpha"] == 0.5 and card["run_id"] == "run-0.5" and card["global_step"] == 2
    assert card["policy"]["model"] == "smollm2" and card["policy"]["dtype"] == "float32"
    assert card["policy"]["router"].endswith("alpha~0.5/model")
    assert [(m["name"], m["backend"]) for m in card["pool"]] == [
        ("SmolLM2", "local"),
        ("Echo", "vllm"),
        ("Remote", "openai"),
    ]
    assert card["pool"][1]["price_out_per_1M"] == 2.0


@pytest.mark.slow
def test_served_answer_and_cost_equal_the_evaluation_path(
    server: Server, workspace: Path, monkeypatch, one_thread
) -> None:
    from routerr1.config import RunConfig, load_config, rollout_config
    from routerr1.data import QARecord
    from routerr1.evaluate import evaluate_router
    from routerr1.stages.common import fetched_models, load_descriptors, open_pool
    from routerr1.train import load_policy

    question = QUESTIONS[0]
    resp = ask(server, question)
    ext = resp.routerr1
    assert resp.object == "chat.completion" and resp.model == "router-r1@a0.0"
    assert resp.choices[0].finish_reason == "stop" and ext["answered"] is True
    kinds = [s["type"] for s in ext["trajectory"]]
    assert kinds[:3] == ["think", "search", "information"] and kinds[-1] == "answer"
    search = ext["trajectory"][1]
    assert search["model"] == "SmolLM2" and search["error"] is None and search["query"]
    assert resp.choices[0].message.content == ext["trajectory"][-1]["text"]
    assert ext["pool_calls"] == 1 and ext["cost_usd"] > 0 and ext["batch_size"] == 1
    check_accounting(ext, resp.usage)

    # the pipeline's evaluation of the same router on the same question, in this process
    monkeypatch.chdir(workspace)
    cfg = load_config("config.yaml")
    model, tok = load_policy(workspace / "results/train/alpha~0.0/model", "float32")
    models = fetched_models(workspace / "resources" / "models", cfg)
    with open_pool(RunConfig.from_dict(cfg), models) as pool:
        rows = evaluate_router(
            model=model,
            tokenizer=tok,
            pool=pool,
            descriptors=load_descriptors("results/pool/descriptors.json"),
            records=[QARecord("q0", question, ("Paris",), "nq", "test")],
            rollout_cfg=rollout_config(cfg),
            method="router-r1@a0.0",
            family="router-r1",
            alpha=0.0,
            batch_size=16,
        )
    row = rows.iloc[0]
    assert resp.choices[0].message.content == row["prediction"]
    assert ext["cost_usd"] == row["cost"]
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (
        row["in_tokens"],
        row["out_tokens"],
    )
    assert ext["pool_calls"] == row["pool_calls"]


@pytest.mark.slow
def test_streaming_sends_each_step_then_the_answer(server: Server) -> None:
    question = QUESTIONS[1]
    plain = ask(server, question)
    arrivals: list[tuple[float, object]] = []
    for chunk in ask(server, question, stream=True):
        arrivals.append((time.monotonic(), chunk))
    chunks = [c for _, c in arrivals]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    steps = [c.routerr1["step"] for c in chunks if getattr(c, "routerr1", None)
             and "step" in c.routerr1]  # fmt: skip

    def same(step: dict) -> dict:  # what a replay changes: latency, and the cache now answers
        return {k: v for k, v in step.items() if k not in ("latency_s", "cached")}

    assert [same(s) for s in steps] == [same(s) for s in plain.routerr1["trajectory"]]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert last.routerr1["cost_usd"] == plain.routerr1["cost_usd"]
    # steps arrive while the rollout runs: the first turn before the pool call and the next turn
    first_step = next(t for t, c in arrivals if getattr(c, "routerr1", None))
    assert arrivals[-1][0] - first_step > 0.05


@pytest.mark.slow
def test_sixteen_concurrent_requests_share_batched_rollouts(server: Server) -> None:
    client = server.client()
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = client.chat.completions.create(
                model="router-r1@a0.0", messages=[{"role": "user", "content": QUESTIONS[i]}]
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    assert errors == [] and len(results) == 16
    for resp in results.values():
        ext = resp.routerr1
        check_accounting(ext, resp.usage)
        answers = [s["text"] for s in ext["trajectory"] if s["type"] == "answer"]
        assert resp.choices[0].message.content == (answers[-1] if answers else "")
    sizes = [r.routerr1["batch_size"] for r in results.values()]
    assert max(sizes) >= 8  # the requests that came together shared one rollout


@pytest.mark.slow
def test_served_vllm_member_and_the_call_cache(server: Server) -> None:
    first = ask(server, QUESTIONS[2], model="router-r1@a0.5")
    again = ask(server, QUESTIONS[2], model="router-r1@a0.5")
    for resp in (first, again):
        check_accounting(resp.routerr1, resp.usage)
    info = [s for s in first.routerr1["trajectory"] if s["type"] == "information"]
    search = next(s for s in first.routerr1["trajectory"] if s["type"] == "search")
    assert info[0]["model"] == "Echo" and info[0]["error"] is None
    assert info[0]["text"] == search["query"]  # the stand-in for vLLM echoes the question
    cached = [s for s in again.routerr1["trajectory"] if s["type"] == "information"]
    assert cached[0]["cached"] is True and info[0]["cached"] is False
    assert again.routerr1["cost_usd"] == first.routerr1["cost_usd"]  # a hit is priced the same
    assert again.choices[0].message.content == first.choices[0].message.content


@pytest.mark.slow
def test_a_failing_pool_member_is_a_counted_error_not_a_500(server: Server) -> None:
    resp = ask(server, QUESTIONS[3], model="router-r1@a0.9")
    ext = resp.routerr1
    info = next(s for s in ext["trajectory"] if s["type"] == "information")
    assert info["model"] == "Remote" and info["error"] and "failed" in info["text"]
    assert ext["pool_errors"] == 1 and ext["pool_calls"] == 1 and ext["cost_usd"] == 0


@pytest.mark.slow
def test_per_request_limits_on_calls_and_cost(server: Server) -> None:
    for limits in ({"max_pool_calls": 0}, {"max_cost_usd": 0.0}):
        resp = ask(server, QUESTIONS[0], extra_body={"routerr1": limits})
        ext = resp.routerr1
        assert ext["pool_calls"] == 0 and ext["cost_usd"] == 0 and ext["refused_calls"] >= 1
        note = next(s for s in ext["trajectory"] if s["type"] == "information")
        assert note["source"] == "limit" and "No model was called" in note["text"]
    with pytest.raises(openai.BadRequestError, match="above this server's limit 3") as err:
        ask(server, QUESTIONS[0], extra_body={"routerr1": {"max_pool_calls": 4}})
    assert err.value.body["param"] == "routerr1.max_pool_calls"


def _body(**fields) -> bytes:
    body = {"model": "router-r1@a0.0", "messages": [{"role": "user", "content": "who?"}]}
    return json.dumps({**body, **fields}).encode()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (_body(model="router-r1@a0.7"), 404, "model"),
        (_body(messages=[{"role": "system", "content": "be brief"}]), 400, "messages"),
        (_body(messages=[{"role": "user", "content": "why " * 200}]), 400, "messages"),
        (b'{"model": "router-r1@a0.0", "messages": [', 400, "body"),
        (_body(messages="who wrote hamlet"), 400, "messages"),
        (_body(stream="yes"), 400, "stream"),
        (_body(routerr1={"max_pool_calls": "two"}), 400, "routerr1.max_pool_calls"),
        (_body(routerr1={"max_calls": 1}), 400, "routerr1.max_calls"),
        (_body(temperature=0.7), 400, "temperature"),
        (_body(n=2), 400, "n"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(server: Server, body, status, field) -> None:
    got, reply = post(server, body)
    assert got == status, reply
    error = reply["error"]
    assert error["type"] == "invalid_request_error"
    if field == "body":  # malformed JSON: no field to name
        assert "JSON" in error["message"]
    else:
        assert error["param"] == field and error["message"].startswith(field)
    assert server.proc.poll() is None


@pytest.mark.slow
def test_over_long_question_says_how_long(server: Server) -> None:
    with pytest.raises(openai.BadRequestError, match=r"has \d+ tokens; .* at most 64") as err:
        ask(server, "why " * 200)
    assert err.value.body["code"] == "context_length_exceeded"


@pytest.mark.slow
def test_bearer_key_is_required(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    status, reply = post(server, _body(), key=None)
    assert status == 401 and reply["error"]["code"] == "invalid_api_key"
    with urllib.request.urlopen(f"{server.root}/health", timeout=10) as resp:
        assert json.loads(resp.read())["routers"][0] == "router-r1@a0.0"  # health needs no key


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(server: Server) -> None:
    """Runs last in this module: the fixture's server is stopped here."""
    children = server.children()
    assert children  # the launched stand-in for vLLM
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(120) == 0, server.tail()
    assert not port_open(server.port)
    assert wait_until(lambda: not any(alive(pid) for pid in children))
    log = server.tail()
    assert "Application shutdown complete" in log and "serve: stopped" in log


@pytest.mark.slow
def test_sigkill_leaves_no_port_or_child_behind(workspace: Path) -> None:
    srv = Server(workspace, "--router", "router-r1@a0.5")
    try:
        children = srv.children()
        assert children and port_open(srv.port)
        ports = [int(p) for c in children for p in _listening_ports(c)]
        srv.proc.kill()
        srv.proc.wait(30)
        assert not port_open(srv.port)
        assert wait_until(lambda: not any(alive(pid) for pid in children)), children
        assert not any(port_open(p) for p in ports)
    finally:
        srv.stop()


def _listening_ports(pid: int) -> list[str]:
    """Loopback TCP ports ``pid`` listens on (from /proc: its sockets' inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
            ports.append(str(int(parts[1].split(":")[1], 16)))
    return ports


# -- routerr1 ask -----------------------------------------------------------------------------
@pytest.mark.slow
def test_ask_prints_the_trajectory_and_the_evaluated_answer(
    workspace: Path, monkeypatch, capsys, one_thread
) -> None:
    from routerr1.ask import main

    monkeypatch.chdir(workspace)
    monkeypatch.setenv("COLUMNS", "200")
    assert main([QUESTIONS[0], "--config", "config.yaml", "--router", "router-r1@a0.0"]) == 0
    out = capsys.readouterr().out
    assert "router-r1@a0.0" in out and "α=0" in out and "run run-0.0" in out
    assert "ask     SmolLM2: " in out and "reply   SmolLM2: " in out
    assert " in + " in out and " out tokens, $0.0000" in out
    assert "final answer" in out and "1 pool call(s)" in out


@pytest.mark.slow
def test_ask_needs_one_router(workspace: Path, monkeypatch, capsys) -> None:
    from routerr1.ask import main

    monkeypatch.chdir(workspace)
    assert main(["who?", "--config", "config.yaml"]) == 2
    assert "pick one of router-r1@a0.0, router-r1@a0.5, router-r1@a0.9" in capsys.readouterr().out
