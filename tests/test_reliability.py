"""Reliability under Snakemake: kill -9 and resume, pool faults counted through, no leaked
secrets, concurrent jobs sharing the call cache and the MLflow store.

Every test runs the real rules of the Snakefile in a subprocess on a config derived from
``tests/data/smoke.yaml`` (SmolLM2-135M as policy and pool, used in place as a ``local`` model
source so no job downloads anything).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from conftest import HOTPOT, NQ, NQ_TRAIN
from pool_servers import FaultServer

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SMOKE = REPO / "tests" / "data" / "smoke.yaml"

KEY_ENV = "ROUTERR1_TEST_KEY"
SENTINEL = "sk-routerr1-SENTINEL-3f9c1e7a5d2b4c60"
REMOTE = "Remote-LLM"


# -- helpers ----------------------------------------------------------------------------------
def smoke_config(mirror: Path, policy_dir: Path) -> dict:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["data_mirror"] = str(mirror)
    # the converted test model, used in place: fetch_model only writes its marker
    cfg["models"]["smollm2-135m"]["source"] = {"kind": "local", "path": str(policy_dir)}
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def smk_cmd(workdir: Path, configfile: Path, *args: str, cores: int = 2) -> list[str]:
    return [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        str(cores),
        *args,
    ]


def job_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TQDM_DISABLE": "1", **extra}


def run_smk(cmd: list[str], env: dict[str, str], timeout: float = 1200):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"snakemake ended (rc {proc.returncode}) before {what}:\n{out}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def job_process(snakemake_pid: int, script: str) -> psutil.Process:
    """The python process running a rule's script (Snakemake's child running ``script``)."""
    for child in psutil.Process(snakemake_pid).children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if any(part.endswith(script) for part in cmdline):
            return child
    raise AssertionError(f"no job process running {script}")


def kill9_job(proc: subprocess.Popen, script: str) -> float:
    """SIGKILL the job (not Snakemake); Snakemake sees the job fail and exits. Returns when."""
    job = job_process(proc.pid, script)
    killed_at = time.time()
    os.kill(job.pid, signal.SIGKILL)
    proc.wait(timeout=300)
    assert proc.returncode != 0
    return killed_at


def mlflow_runs(db: Path) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    return mlflow.search_runs(search_all_experiments=True)


def metric_history(db: Path, run_id: str, key: str) -> list:
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{db}").get_metric_history(run_id, key)


# -- 1. kill -9 training ----------------------------------------------------------------------
def _complete_checkpoints(ckpt_dir: Path) -> list[int]:
    if not ckpt_dir.is_dir():
        return []
    return sorted(
        int(p.name.split("-")[1])
        for p in ckpt_dir.glob("checkpoint-*")
        if (p / "trainer_state.json").is_file()
    )


@pytest.mark.slow
def test_kill9_training_resumes_same_step_optimizer_rng_and_mlflow_run(
    tmp_path, tiny_mirror, smollm2_dir
):
    import torch

    cfg = smoke_config(tiny_mirror, smollm2_dir)
    cfg["warm_start"] = {"enabled": False}
    # keep_checkpoints: the test reads the optimizer state of the last one
    cfg["train"].update(alphas=[0.0], max_steps=3, save_steps=1, keep_checkpoints=True)
    wd = tmp_path / "wd"
    conf = write_config(cfg, tmp_path / "config.yaml")
    target = "results/train/alpha~0.0/model"
    cmd = smk_cmd(wd, conf, target)
    # transformers' info lines say whether the checkpoint's RNG file was found and loaded
    env = job_env(TRANSFORMERS_VERBOSITY="info")
    ckpts = wd / "results" / "train" / "alpha~0.0" / "checkpoints"

    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for(lambda: bool(_complete_checkpoints(ckpts)), proc, 900, "checkpoint-1")
    killed_at = kill9_job(proc, "train_router.py")
    done = _complete_checkpoints(ckpts)
    last = done[-1]
    assert last < 3, f"training finished before the kill ({done})"
    assert not (wd / target).exists()
    resume_from = ckpts / f"checkpoint-{last}"
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= {
        p.name for p in resume_from.iterdir()
    }
    # A kill during a save leaves checkpoint-(last+1) without trainer_state.json; make sure that
    # case is covered whatever the kill hit: a torn folder with half a model in it.
    torn = ckpts / f"checkpoint-{last + 1}"
    if not torn.exists():
        torn.mkdir()
        (torn / "model.safetensors").write_bytes(b"\0" * 1024)

    rerun_at = time.time()
    run_smk(cmd, env)

    # the global step continued from the checkpoint to max_steps
    info = json.loads((wd / target / "routerr1_train.json").read_text())
    assert info["global_step"] == 3
    final_state = json.loads((ckpts / "checkpoint-3" / "trainer_state.json").read_text())
    assert final_state["global_step"] == 3
    logged_steps = [h["step"] for h in final_state["log_history"] if "loss" in h]
    assert logged_steps == [1, 2, 3]
    log = (wd / "logs" / "train_router" / "alpha~0.0.log").read_text()
    assert f"resuming alpha=0.0 from {Path('results/train/alpha~0.0/checkpoints')}" in log
    assert re.search(rf"resuming alpha=0\.0 from \S*checkpoint-{last}\b", log), log[-3000:]
    assert "ignoring incomplete checkpoints" in log
    # the RNG file was there and loaded (transformers logs this line when it is missing)
    assert f"Loading model from {Path('results/train/alpha~0.0/checkpoints')}" in log
    assert "Didn't find an RNG file" not in log
    # the optimizer state was restored: Adam's per-parameter step counts all 3 updates
    optim = torch.load(ckpts / "checkpoint-3" / "optimizer.pt", weights_only=True)
    steps = {int(s["step"]) for s in optim["state"].values()}
    assert steps == {3}, steps
    sched = torch.load(ckpts / "checkpoint-3" / "scheduler.pt", weights_only=True)
    assert sched["last_epoch"] == 3

    # one MLflow run for the job, FINISHED, with metrics from before and after the kill
    runs = mlflow_runs(wd / "results" / "mlflow.db")
    mine = runs[runs["tags.routerr1.key"] == "train/alpha~0.0"]
    assert len(mine) == 1 and mine.iloc[0]["status"] == "FINISHED"
    hist = metric_history(wd / "results" / "mlflow.db", mine.iloc[0]["run_id"], "loss")
    before = [m.step for m in hist if m.timestamp < killed_at * 1000]
    after = [m.step for m in hist if m.timestamp >= rerun_at * 1000]
    assert before and min(before) == 1 and max(before) <= last + 1
    assert sorted(after) == list(range(last + 1, 4)), (before, after)
    print(f"killed after checkpoint-{last}; MLflow loss steps before={before} after={after}")


# -- 2. kill -9 evaluation --------------------------------------------------------------------
@pytest.mark.slow
def test_kill9_evaluation_keeps_finished_chunks(tmp_path, tiny_mirror, smollm2_dir):
    from routerr1.report.aggregate import aggregate

    cfg = smoke_config(tiny_mirror, smollm2_dir)
    cfg["eval"]["batch_size"] = 1  # six chunks of one question
    # no call cache: a recomputed row would then differ (latency), a reused one cannot
    cfg["pool_cache"] = False
    wd = tmp_path / "wd"
    conf = write_config(cfg, tmp_path / "config.yaml")
    target = "results/eval/single/SmolLM2-Cheap.parquet"
    cmd = smk_cmd(wd, conf, target)
    env = job_env()
    chunk_dir = wd / (target + ".chunks")

    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for(lambda: any(chunk_dir.glob("chunk-*.parquet")), proc, 600, "the first chunk")
    kill9_job(proc, "evaluate_single.py")
    kept = {p.name: p for p in sorted(chunk_dir.glob("chunk-*.parquet"))}
    assert 1 <= len(kept) < 6, f"the job finished {len(kept)} chunks before the kill"
    assert not (wd / target).exists()
    before = {n: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
              for n, p in kept.items()}  # fmt: skip
    kept_rows = pd.concat([pd.read_parquet(p) for p in kept.values()], ignore_index=True)

    # watch the kept chunks while the rerun works: never rewritten
    seen_changes: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for name, (mtime, _) in before.items():
                p = chunk_dir / name
                if p.exists() and p.stat().st_mtime_ns != mtime:
                    seen_changes.append(name)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run_smk(cmd, env)
    finally:
        stop.set()
        watcher.join()
    assert not seen_changes

    rows = pd.read_parquet(wd / target)
    expected = pd.read_parquet(wd / "results" / "data" / "eval.parquet")
    keys = list(zip(rows["benchmark"], rows["qid"].astype(str), strict=True))
    assert len(keys) == len(set(keys)) == 6
    assert set(keys) == set(zip(expected["benchmark"], expected["id"].astype(str), strict=True))
    # the rows finished before the kill are the ones in the result, byte for byte in value
    merged = kept_rows.merge(rows, on=["benchmark", "qid"], suffixes=("_kept", ""))
    assert len(merged) == len(kept_rows)
    for col in ("prediction", "latency_s", "in_tokens", "out_tokens", "cost"):
        assert list(merged[f"{col}_kept"]) == list(merged[col]), col
    log = (wd / "logs" / "evaluate" / "single_SmolLM2-Cheap.log").read_text()
    assert f"resuming, {len(kept)} of 6 questions already done" in log

    # the aggregated summary counts every question once
    agg = aggregate([wd / target], tmp_path / "s.duckdb", tmp_path / "s.csv", tmp_path / "s.md")
    avg = agg[agg["benchmark"] != "average"]
    assert avg["n"].sum() == 6 and set(avg["benchmark"]) == {"nq", "hotpotqa"}
    runs = mlflow_runs(wd / "results" / "mlflow.db")
    mine = runs[runs["tags.routerr1.key"] == "eval/single:SmolLM2-Cheap"]
    assert len(mine) == 1 and mine.iloc[0]["status"] == "FINISHED"
    print(f"killed after {len(kept)} of 6 chunks; the rerun kept them and added the rest")


# -- 3-5. the whole DAG against a faulty remote pool member, two jobs at a time ---------------
TRANSIENT = ("delay", "429", "500", "drop", "truncated")


DATASET_QUESTIONS = {q for q, _ in NQ + HOTPOT}
TRAIN_SPLIT_QUESTIONS = {q for q, _ in NQ[:NQ_TRAIN]}  # tiny_mirror's nq/train.jsonl


def poisoned(question: str) -> bool:
    """Questions the server never answers (every attempt fails): every question of the training
    split, a fixed half of the other dataset questions, by hash, and every sub-question the
    policy wrote itself. So each call GRPO makes to the remote model fails, whether the policy
    copies its training question (CI once drew only answerable ones) or writes its own."""
    question = question.strip()
    if question in TRAIN_SPLIT_QUESTIONS or question not in DATASET_QUESTIONS:
        return True
    return zlib.crc32(question.encode()) % 2 == 0


class RandomFaultServer(FaultServer):
    """Seeded random faults. A poisoned question fails on every attempt (the call is counted
    as failed); any other question fails its first attempt with probability ``p`` and then
    succeeds (retries recover it). More than ``max_requests`` requests all get 500.

    The recoverable faults take the kinds in turn rather than at random: which questions reach
    the server depends on how concurrent jobs share the cache, and a random pick over a few
    draws once left "drop" out of a whole run."""

    def __init__(self, seed: int, p: float, max_requests: int, **kw) -> None:
        super().__init__(**kw)
        import random

        self.rng = random.Random(seed)
        self.p = p
        self.max_requests = max_requests
        self.attempts: dict[str, int] = {}
        self.questions: list[str] = []
        self.recoverable_faults = 0

    def pick(self, question: str) -> str:
        with self._lock:
            n = self.attempts.get(question, 0)
            self.attempts[question] = n + 1
            if len(self.log) >= self.max_requests:
                return "500"
            if poisoned(question):
                return TRANSIENT[n % len(TRANSIENT)]
            if n == 0 and self.rng.random() < self.p:
                self.recoverable_faults += 1
                return TRANSIENT[(self.recoverable_faults - 1) % len(TRANSIENT)]
            return "ok"

    def _handler(self):
        base = super()._handler()
        server = self

        class Handler(base):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = json.loads(raw)
                question = req["messages"][-1]["content"].rsplit("Question: ", 1)[-1].strip()
                fault = server.pick(question)
                with server._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.log.append((time.monotonic(), fault, headers))
                    server.bodies.append(req)
                    server.questions.append(question)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._reply(fault, req)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected for "delay"
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler


MAX_REQUESTS = 400
MAX_RETRIES = 2  # a poisoned call fails 3 attempts; its fault kinds rotate per question


@pytest.fixture(scope="module")
def fault_pipeline(tmp_path_factory, tiny_mirror, smollm2_dir):
    """The smoke DAG to results/pareto.pdf, ``--cores 2`` with one thread per job, the pool's
    second member behind a fault-injecting OpenAI-compatible server on loopback."""
    tmp = tmp_path_factory.mktemp("faults")
    wd = tmp / "wd"
    cfg = smoke_config(tiny_mirror, smollm2_dir)
    cfg["threads"] = 1
    server = RandomFaultServer(seed=7, p=0.5, max_requests=MAX_REQUESTS, delay_s=1.5)
    cfg["pool"][1] = {
        "name": REMOTE,
        "model": "smollm2-135m",  # its tokenizer counts tokens if the server reports none
        "backend": "openai",
        "base_url": server.base_url,
        "served_model": "m",
        "api_key_env": KEY_ENV,
        "price_in": 0.2,
        "price_out": 0.4,
        "description": "Remote, priced higher.",
        "max_new_tokens": 12,
        "timeout_s": 1.0,
        "max_retries": MAX_RETRIES,
        "max_concurrency": 2,
    }
    # overfit the format warm start so the policy writes searches during GRPO and evaluation
    # (and skip the report-only compliance passes of the base policy: tested below). The remote
    # model fails every training question, so its trajectories end in the gold answer (relay
    # would skip them) and still teach calls to it.
    cfg["warm_start"].update(epochs=8, learning_rate=5e-4, compliance_before=False, answer="gold")
    # fp32 on every CPU: with bf16 autocast (auto on CPUs with native bf16) this SFT at seed 0
    # wrote no search in 10 greedy rollouts on a Zen 4 (avx512_bf16), fp32 10 of 10, and GRPO
    # then never called the remote model (the training check below needs it to)
    cfg["train"]["precision"] = "fp32"
    cfg["rollout"].update(max_turn_tokens=48, max_total_tokens=128)
    conf = write_config(cfg, tmp / "config.yaml")
    env = job_env(**{KEY_ENV: SENTINEL})
    t0 = time.monotonic()
    with server:
        proc = run_smk(smk_cmd(wd, conf, "results/pareto.pdf", cores=2), env, timeout=1500)
    return {
        "wd": wd,
        "proc": proc,
        "server": server,
        "seconds": time.monotonic() - t0,
        "config": cfg,
    }


@pytest.mark.slow
def test_warm_start_without_before_pass(fault_pipeline):
    # warm_start.compliance_before: false leaves the base policy unmeasured; the trained one is
    wd, cfg = fault_pipeline["wd"], fault_pipeline["config"]
    report = json.loads((wd / "results" / "warmstart" / "format.json").read_text())
    assert report["before"] is None
    assert set(report["after"]) == {"greedy", "sampled"}
    assert report["after"]["greedy"]["n"] == cfg["warm_start"]["n_eval"]
    log = (wd / "logs" / "warm_start.log").read_text()
    assert log.count("format compliance of") == 2  # after SFT only: greedy and sampled


def _all_files(root: Path):
    return (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
def test_secret_key_reaches_server_but_no_file(fault_pipeline):
    wd, server = fault_pipeline["wd"], fault_pipeline["server"]
    auth = {h.get("authorization") for _, _, h in server.log}
    assert auth == {f"Bearer {SENTINEL}"}, "the server must have received the key"
    needle = SENTINEL.encode()
    scanned, hits = 0, []
    # results/ (mlflow.db, mlartifacts/), logs/, .snakemake/ (its logs, metadata, scripts)
    for sub in ("results", "logs", ".snakemake"):
        for path in _all_files(wd / sub):
            scanned += 1
            if needle in path.read_bytes():
                hits.append(str(path.relative_to(wd)))
    assert (wd / "results" / "mlflow.db").is_file() and any((wd / ".snakemake" / "log").iterdir())
    assert scanned > 50 and not hits, hits
    proc = fault_pipeline["proc"]
    assert SENTINEL not in proc.stdout + proc.stderr
    print(f"{len(server.log)} requests carried the key; {scanned} files scanned, 0 hits")


def _snakemake_log(wd: Path) -> str:
    logs = sorted((wd / ".snakemake" / "log").glob("*.snakemake.log"))
    return "\n".join(p.read_text() for p in logs)


def max_jobs_running(log: str) -> int:
    """Most jobs started and not yet finished at once, replaying Snakemake's log in order."""
    running: set[str] = set()
    most = 0
    for line in log.splitlines():
        if m := re.match(r"\s*jobid: (\d+)$", line):
            running.add(m.group(1))
            most = max(most, len(running))
        elif m := re.match(r"Finished jobid: (\d+)", line):
            running.discard(m.group(1))
    return most


@pytest.mark.slow
def test_concurrent_jobs_share_cache_and_store(fault_pipeline):
    wd, cfg = fault_pipeline["wd"], fault_pipeline["config"]
    res = wd / "results"
    smk_log = _snakemake_log(wd)
    assert max_jobs_running(smk_log) >= 2, "no two jobs overlapped"
    texts = [smk_log, fault_pipeline["proc"].stderr] + [
        p.read_text(errors="replace") for p in _all_files(wd / "logs")
    ]
    for text in texts:
        assert "database is locked" not in text.lower()
        assert "OperationalError" not in text
        assert "Traceback" not in text  # no exception escaped to Snakemake
    assert (res / "cache" / "calls.sqlite").is_file()

    n = cfg["data"]["n_eval"] * len(cfg["data"]["eval_benchmarks"])
    import duckdb

    with duckdb.connect(str(res / "summary.duckdb"), read_only=True) as con:
        per_method = dict(
            con.execute("select method, count(*) from eval_rows group by 1").fetchall()
        )
        dupes = con.execute(
            "select count(*) from (select method, benchmark, qid from eval_rows "
            "group by all having count(*) > 1)"
        ).fetchone()[0]
    assert len(per_method) == 11 and set(per_method.values()) == {n}, per_method
    assert dupes == 0
    for path in (res / "eval").rglob("*.parquet"):
        assert len(pd.read_parquet(path)) == n, path

    runs = mlflow_runs(res / "mlflow.db")
    keys = list(runs["tags.routerr1.key"])
    assert len(keys) == len(set(keys)) == 16, sorted(keys)
    assert set(runs["status"]) == {"FINISHED"}
    print(f"max jobs at once: {max_jobs_running(smk_log)}; rows per method {per_method}")


@pytest.mark.slow
def test_pool_faults_are_counted_through_to_mlflow_and_summary(fault_pipeline):
    wd, server, cfg = fault_pipeline["wd"], fault_pipeline["server"], fault_pipeline["config"]
    res = wd / "results"
    faults = [f for _, f, _ in server.log]
    assert len(faults) <= MAX_REQUESTS and "500" in faults
    assert {"delay", "429", "500", "drop", "truncated"} <= set(faults)
    assert fault_pipeline["seconds"] < 1500

    # the remote model alone: exactly its poisoned questions failed, every other one recovered
    eval_q = pd.read_parquet(res / "data" / "eval.parquet")
    expected = sum(poisoned(q) for q in eval_q["question"])
    assert 0 < expected < len(eval_q)
    single = pd.read_parquet(res / "eval" / "single" / f"{REMOTE}.parquet")
    assert int(single["pool_errors"].sum()) == expected
    assert (single.loc[single["pool_errors"] == 0, "prediction"] != "").all()

    runs = mlflow_runs(res / "mlflow.db").set_index("tags.routerr1.key")
    summary = pd.read_csv(res / "summary.csv")
    md = (res / "summary.md").read_text()
    eval_errors: dict[str, int] = {}
    for path in (res / "eval").rglob("*.parquet"):
        rows = pd.read_parquet(path)
        method = rows["method"].iloc[0]
        total = int(rows["pool_errors"].sum())
        eval_errors[method] = total
        run = runs.loc[f"eval/{method}"]
        benches = sorted(rows["benchmark"].unique())
        assert sum(run[f"metrics.{b}.pool_errors"] for b in benches) == total, method
        avg = summary[(summary["method"] == method) & (summary["benchmark"] == "average")]
        assert int(avg["pool_errors"].iloc[0]) == total, method
        assert re.search(rf"- {re.escape(method)}: .* {total} pool errors in total", md), method
    assert eval_errors[f"single:{REMOTE}"] == expected
    run = runs.loc[f"eval/single:{REMOTE}"]
    assert run["metrics.nq.pool_errors"] + run["metrics.hotpotqa.pool_errors"] == expected

    # training: the per-step error counts reach the run of each alpha. One turn per trajectory,
    # so a step's calls to the remote model are its first-call share times the sequences, and
    # every one of them failed (poisoned: the training split and all policy-written text).
    assert cfg["rollout"]["max_turns"] == 1
    seqs = cfg["train"]["prompts_per_step"] * cfg["train"]["num_generations"]
    train_errors = {}
    for key in ("train/alpha~0.0", "train/alpha~0.9"):
        run_id = runs.loc[key, "run_id"]
        hist = metric_history(res / "mlflow.db", run_id, "router/pool_errors")
        remote = metric_history(res / "mlflow.db", run_id, f"router/first/{REMOTE}")
        assert [m.step for m in hist] == [1, 2] and [m.step for m in remote] == [1, 2]
        for err, share in zip(hist, remote, strict=True):
            assert err.value == round(share.value * seqs), (key, err.step)
        train_errors[key] = (sum(m.value for m in hist), [m.value for m in remote])
    # the warm start overfits calls to the remote model (its priciest), so GRPO makes some
    assert sum(e for e, _ in train_errors.values()) >= 1, train_errors
    print(
        f"{len(faults)} requests, faults {pd.Series(faults).value_counts().to_dict()}; "
        f"eval errors {eval_errors}; train (errors, remote shares) {train_errors}; "
        f"{fault_pipeline['seconds']:.0f}s"
    )
