"""Tests for `routerr1 runs`: a real MLflow SQLite store written by the test, read back."""

from __future__ import annotations

import io
import time

import mlflow
import pandas as pd
import pytest

from routerr1.runs import comparison_table, main
from routerr1.tracking import RUN_KEY_TAG, ensure_experiment


def log_eval(
    method, family, alpha, metrics, status="FINISHED", stage="evaluate", pool="abc", key=None
):
    tags = {
        RUN_KEY_TAG: key or f"eval/{method}",
        "stage": stage,
        "method": method,
        "family": family,
        "alpha": "" if alpha is None else str(alpha),
        "pool_hash": pool * 20,
    }
    with mlflow.start_run(run_name=method, tags=tags):
        mlflow.log_metrics(metrics)
        if status != "FINISHED":
            mlflow.end_run(status=status)
    time.sleep(0.01)  # distinct start times: the latest run of a key wins


def bench(em_nq, em_hp, cost=1e-6):
    out = {}
    for b, em in (("nq", em_nq), ("hotpotqa", em_hp)):
        out |= {f"{b}.em": em, f"{b}.f1": em + 5, f"{b}.cost": cost, f"{b}.pool_calls": 1.0}
    return out | {"em": (em_nq + em_hp) / 2, "cost": cost, "route_share.Qwen2.5-1.5B": 0.5}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{db}"
    exp = ensure_experiment(uri, "routerr1")
    mlflow.set_experiment(experiment_id=exp)
    log_eval("single:Tiny", "single", None, bench(2.0, 4.0, 1e-7))
    log_eval("router-r1@a0.9", "router-r1", 0.9, bench(6.0, 8.0, 2e-7))
    # the same router trained with another seed (train.seeds)
    seed1 = "eval/router-r1@a0.9/seed~1"
    log_eval("router-r1@a0.9", "router-r1", 0.9, bench(7.0, 9.0, 2e-7), key=seed1)
    log_eval("router-r1@a0.0", "router-r1", 0.0, bench(1.0, 1.0))  # superseded below
    log_eval("router-r1@a0.0", "router-r1", 0.0, bench(10.0, 20.0, 5e-7))
    log_eval("oracle", "oracle", None, bench(30.0, 40.0, 1e-7))
    log_eval("knn", "knn", None, bench(99.0, 99.0), status="FAILED")  # never shown
    log_eval("train", "", 0.0, {"nq.em": 50.0}, stage="train")  # not an evaluation
    return uri


def test_comparison_table_from_search_runs(store):
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["routerr1"])
    table = comparison_table(runs)
    assert list(table.columns) == [
        "method",
        "family",
        "alpha",
        "benchmark",
        "em",
        "f1",
        "cost",
        "pool_calls",
        "pool_hash",
    ]
    # routers first in alpha order, baselines in the report's family order, average last
    assert list(dict.fromkeys(table["method"])) == [
        "router-r1@a0.0",
        "router-r1@a0.9",
        "router-r1@a0.9/seed~1",
        "single:Tiny",
        "oracle",
    ]
    r0 = table[table["method"] == "router-r1@a0.0"].set_index("benchmark")
    assert list(r0.index) == ["hotpotqa", "nq", "average"]
    assert r0.loc["nq", "em"] == 10.0 and r0.loc["hotpotqa", "f1"] == 25.0  # the latest run
    assert r0.loc["average", "em"] == pytest.approx(15.0)
    assert r0.loc["nq", "cost"] == pytest.approx(5e-7)
    assert (
        r0["alpha"].eq(0.0).all() and table.loc[table["method"] == "oracle", "alpha"].isna().all()
    )
    assert set(table["pool_hash"]) == {"abc" * 4}
    only = comparison_table(runs, benchmark="average")
    assert set(only["benchmark"]) == {"average"} and len(only) == 5
    assert comparison_table(runs.iloc[0:0]).empty


def test_main_prints_the_table(store, capsys):
    assert main(["--tracking-uri", store, "--benchmark", "nq"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == list(
        ["method", "family", "alpha", "benchmark", "em", "f1", "cost", "pool_calls", "pool_hash"]
    )
    assert lines[1].split()[:5] == ["router-r1@a0.0", "router-r1", "0", "nq", "10.0"]
    assert "knn" not in out and "train" not in out

    assert main(["--tracking-uri", store, "--format", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    avg = csv[csv["benchmark"] == "average"].set_index("method")["em"]
    assert len(csv) == 5 * 3 and avg["oracle"] == 35.0 and avg["single:Tiny"] == 3.0

    assert main(["--tracking-uri", store, "--format", "markdown", "--benchmark", "average"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| method | family |") and "| oracle | oracle |  | average | 35.0 |" in md


def test_main_refuses_a_missing_store(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    assert main(["--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert "no MLflow database" in capsys.readouterr().err
    assert not missing.exists()


def test_main_unknown_experiment(store, capsys):
    assert main(["--tracking-uri", store, "--experiment", "other"]) == 2
    assert "other" in capsys.readouterr().err
