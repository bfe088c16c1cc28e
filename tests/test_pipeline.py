"""End-to-end: the real Snakemake DAG on the smoke config (SmolLM2-135M as policy and pool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
RULES = [
    "pool_answers",
    "warm_start",
    "download_data",
    "fetch_model",
    "profile_pool",
    "describe_pool",
    "train_router",
    "evaluate_router",
    "evaluate_prompt_router",
    "evaluate_single",
    "derive_baseline",
    "fetch_embedder",
    "eval_manifest",
    "knn_baseline",
    "aggregate",
    "pareto",
]


SMOKE = REPO / "tests" / "data" / "smoke.yaml"


def snakemake(
    workdir: Path, mirror: Path, *args: str, check: bool = True, configfile: Path = SMOKE
):
    cmd = [
        str(SNAKEMAKE),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(configfile),
        "--config",
        f"data_mirror={mirror}",
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def test_dry_run_shows_whole_dag(tmp_path, tiny_mirror):
    out = snakemake(tmp_path, tiny_mirror, "-n", "results/pareto.pdf").stdout
    for rule in RULES:
        assert f"{rule} " in out or f"rule {rule}:" in out, rule
    assert (
        "train_router                  2" in out.replace("\t", " ")
        or out.count("rule train_router:") == 2
    )


@pytest.mark.parametrize("routing", ["reward", "predicted", "benchmark"])
def test_reward_routing_warm_starts_once_per_alpha(tmp_path, tiny_mirror, routing):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["warm_start"]["routing"] = routing
    configfile = tmp_path / "reward.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, tiny_mirror, "-n", "results/pareto.pdf", configfile=configfile)
    plan = out.stdout
    assert plan.count("rule warm_start_alpha:") == 2 and "rule warm_start:" not in plan
    inputs = {
        line.split("output: results/train/")[1]: block.split("input:")[1].split("\n")[0]
        for block in plan.split("rule train_router:")[1:]
        for line in block.splitlines()
        if "output: results/train/" in line
    }
    assert set(inputs) == {"alpha~0.0/model", "alpha~0.9/model"}
    for out, inp in inputs.items():
        assert f"results/warmstart/{out}" in inp


def test_bad_config_refused_before_any_job(tmp_path, tiny_mirror):
    proc = snakemake(tmp_path, tmp_path / "missing-mirror", "results/pareto.pdf", check=False)
    assert proc.returncode != 0
    assert "data_mirror" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_smoke_dag_end_to_end(tmp_path_factory, tiny_mirror):
    wd = tmp_path_factory.mktemp("smoke")
    snakemake(wd, tiny_mirror, "results/pareto.pdf")
    res = wd / "results"

    # every artefact the issue names
    assert (res / "pareto.pdf").read_bytes().startswith(b"%PDF")
    summary = pd.read_csv(res / "summary.csv")
    methods = set(summary["method"])
    assert {
        "router-r1@a0.0",
        "router-r1@a0.9",
        "prompt-router",
        "single:SmolLM2-Cheap",
        "single:SmolLM2-Dear",
        "oracle",
        "largest:SmolLM2-Dear",
        "random",
        "knn",
        "router-r1+unseen@a0.0",
        "router-r1+unseen@a0.9",
    } <= methods
    assert {"em", "f1", "cost", "pool_calls"} <= set(summary.columns)
    assert "| method |" in (res / "summary.md").read_text()

    # DuckDB holds one row per (method, question); eval questions are 3 nq + 3 hotpotqa
    with duckdb.connect(str(res / "summary.duckdb"), read_only=True) as con:
        n_rows, n_methods = con.execute(
            "select count(*), count(distinct method) from eval_rows"
        ).fetchone()
    assert n_methods == 11 and n_rows == 11 * 6

    # single-model baselines are priced from real token counts: same answers, 10x the price
    cheap = pd.read_parquet(res / "eval" / "single" / "SmolLM2-Cheap.parquet")
    dear = pd.read_parquet(res / "eval" / "single" / "SmolLM2-Dear.parquet")
    assert (cheap["in_tokens"] > 0).all() and (cheap["out_tokens"] > 0).all()
    assert dear["cost"].sum() == pytest.approx(10 * cheap["cost"].sum())
    # derived baselines reuse those rows: the oracle bounds both models, largest is Dear alone
    oracle = pd.read_parquet(res / "eval" / "baselines" / "oracle.parquet")
    assert oracle["em"].mean() >= max(cheap["em"].mean(), dear["em"].mean())
    largest = pd.read_parquet(res / "eval" / "baselines" / "largest.parquet")
    assert list(largest["prediction"]) == list(dear["prediction"])
    assert len(pd.read_parquet(res / "eval" / "baselines" / "knn.parquet")) == 6
    unseen = pd.read_parquet(res / "eval" / "router_unseen" / "alpha~0.9.parquet")
    assert len(unseen) == 6 and "unseen_calls" in unseen.columns
    unseen_descs = json.loads((res / "pool" / "unseen" / "descriptors.json").read_text())
    assert "SmolLM2-New" in {d["name"] for d in unseen_descs}

    # descriptors carry measured numbers
    descs = json.loads((res / "pool" / "descriptors.json").read_text())
    assert {d["name"] for d in descs} == {"SmolLM2-Cheap", "SmolLM2-Dear"}
    assert all(d["latency_p50_s"] > 0 for d in descs)

    # the format warm start ran before GRPO and measured compliance before and after
    warm = json.loads((res / "warmstart" / "format.json").read_text())
    assert set(warm) >= {"before", "after", "sft"}
    assert warm["sft"]["examples"] == 4 and warm["after"]["greedy"]["n"] == 3

    # trained routers were saved, with their GRPO history
    for alpha in ("0.0", "0.9"):
        info = json.loads(
            (res / "train" / f"alpha~{alpha}" / "model" / "routerr1_train.json").read_text()
        )
        assert info["global_step"] == 2
        assert any("reward" in h for h in info["history"])
        # the model is written, so the resume checkpoints (GBs per alpha) are gone
        assert not (res / "train" / f"alpha~{alpha}" / "checkpoints").exists()

    # MLflow on SQLite: one run per alpha, one per evaluation, one for profiling
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{res / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    keys = sorted(runs["tags.routerr1.key"])
    assert keys == sorted(
        [
            "profile_pool",
            "warm_start",
            "train/alpha~0.0",
            "train/alpha~0.9",
            "eval/router-r1@a0.0",
            "eval/router-r1@a0.9",
            "eval/prompt-router",
            "eval/single:SmolLM2-Cheap",
            "eval/single:SmolLM2-Dear",
            "eval/oracle",
            "eval/largest:SmolLM2-Dear",
            "eval/random",
            "eval/knn",
            "profile_pool_unseen",
            "eval/router-r1+unseen@a0.0",
            "eval/router-r1+unseen@a0.9",
        ]
    )
    assert set(runs["status"]) == {"FINISHED"}
    train_run = runs[runs["tags.routerr1.key"] == "train/alpha~0.9"].iloc[0]
    assert train_run["params.alpha"] == "0.9"
    assert "metrics.router/format_ok" in runs.columns
    client = mlflow.MlflowClient()
    assert "price_table.json" in [a.path for a in client.list_artifacts(train_run["run_id"])]

    # the default target adds what pareto.pdf does not need: learning curves (out of that
    # store, one reward point per alpha and step) and the routing-behaviour report
    snakemake(wd, tiny_mirror, "all")
    assert (res / "routing.md").read_text().startswith("#")
    assert (res / "learning_curves.pdf").read_bytes().startswith(b"%PDF")
    curves = pd.read_csv(res / "learning_curves.csv")
    reward = curves[curves["metric"] == "reward"]
    points = sorted(zip(reward["alpha"], reward["step"], strict=True))
    assert points == [(0.0, 1), (0.0, 2), (0.9, 1), (0.9, 2)]
    # each step's share of first calls per pool model, and the route-shift table built on them
    shares = set(curves.loc[curves["metric"].str.startswith("router/first/"), "metric"])
    assert {"router/first/SmolLM2-Cheap", "router/first/SmolLM2-Dear"} <= shares
    gain = (res / "learning_gain.md").read_text()
    assert "# Did training move the routing?" in gain
    assert "# Did a run collapse onto one route?" in gain

    # the Snakemake HTML report embeds the annotated figures and table
    snakemake(wd, tiny_mirror, "--report", str(res / "report.html"))
    html = (res / "report.html").read_text(errors="ignore")
    assert "pareto.pdf" in html and "summary.csv" in html and "learning_curves.pdf" in html
    assert "headroom.md" in html and "routing.md" in html

    # rerunning the same command does nothing; a lost result redoes only its own jobs
    again = snakemake(wd, tiny_mirror, "results/pareto.pdf")
    assert "Nothing to be done" in again.stdout + again.stderr
    # as if the run had stopped while evaluating: that job and everything after it are missing
    for lost in (
        "eval/single/SmolLM2-Dear.parquet",
        "summary.csv",
        "summary.duckdb",
        "summary.md",
        "pareto.pdf",
    ):
        (res / lost).unlink()
    plan = snakemake(wd, tiny_mirror, "-n", "results/pareto.pdf").stdout
    assert "evaluate_single" in plan and "aggregate" in plan
    assert "train_router" not in plan and "profile_pool" not in plan
