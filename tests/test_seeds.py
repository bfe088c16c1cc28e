"""train.seeds: one router per alpha and seed; the top-level seed keeps the one-seed layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from routerr1 import launch
from routerr1.config import ConfigError, RunConfig, seed_level, train_seeds, validate_config
from routerr1.launch import TrainJob, run_worker
from routerr1.stages import common as common_stage
from routerr1.stages import evaluate as eval_stage
from routerr1.stages import train as train_stage

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def config(**train) -> dict:
    raw = {
        "seed": 3,
        "models": {"m": {"source": {"kind": "hub", "repo_id": "org/m"}}},
        "pool": [{"name": "M", "model": "m", "price_in": 0.1, "price_out": 0.2}],
        "policy": {"model": "m"},
        "train": train,
    }
    return validate_config(raw)


def test_default_is_the_top_level_seed_with_the_one_seed_layout():
    cfg = config()
    assert cfg["train"]["seeds"] is None and train_seeds(cfg) == [3]
    assert seed_level(cfg, 3) == "" and seed_level(cfg, None) == ""
    cfg = config(seeds=[3, 7])
    assert train_seeds(cfg) == [3, 7]
    assert [seed_level(cfg, s) for s in train_seeds(cfg)] == ["", "/seed~7"]


def test_bad_seeds_name_the_field():
    with pytest.raises(ConfigError, match="train.seeds"):
        config(seeds=[1, 1])
    with pytest.raises(ConfigError, match="train.seeds"):
        config(seeds=[])


@contextmanager
def _fake_run(seen, cfg, key, name, tags):
    seen.update(key=key, tags=tags)
    yield


def test_train_stage_trains_with_the_seed_and_keys_its_run(monkeypatch):
    import routerr1.data
    import routerr1.tracking
    import routerr1.train

    seen: dict = {}
    monkeypatch.setattr(routerr1.train, "step_metrics", lambda history: {})
    monkeypatch.setattr(routerr1.tracking, "tracked_run", lambda *a: _fake_run(seen, *a))
    monkeypatch.setattr(routerr1.tracking, "log_json_artifact", lambda *a, **k: None)
    monkeypatch.setattr(routerr1.data, "read_records", lambda path: [])
    monkeypatch.setattr(train_stage, "open_pool", lambda run, models: nullcontext(None))
    monkeypatch.setattr(train_stage, "load_descriptors", lambda path: [])
    params: dict = {}
    monkeypatch.setattr(
        train_stage, "mlflow", SimpleNamespace(log_params=params.update, log_metrics=lambda m: None)
    )
    monkeypatch.setattr(
        routerr1.train, "train_router", lambda **kw: seen.update(kw) or {"history": []}
    )
    run = RunConfig.from_dict(config(seeds=[3, 7]))
    paths = dict(train_in="t", descriptors_in="d", policy_dir="p", checkpoints="c", model_out="m")
    train_stage.train(run, 0.5, **paths, models=[], seed=7)
    assert seen["seed"] == 7 and seen["key"] == "train/alpha~0.5/seed~7"
    assert seen["tags"]["seed"] == "7" and params["seed"] == 7
    train_stage.train(run, 0.5, **paths, models=[])  # the top-level seed: the one-seed key
    assert seen["seed"] == 3 and seen["key"] == "train/alpha~0.5"


def test_evaluation_of_another_seed_adds_a_seed_column_and_its_own_run(monkeypatch, tmp_path):
    import routerr1.data
    import routerr1.evaluate
    import routerr1.tracking
    import routerr1.train

    seen: dict = {}
    rows = pd.DataFrame({"benchmark": ["nq"], "qid": ["1"], "em": [1.0], "f1": [1.0]})
    rows = rows.assign(cost=0.0, pool_calls=1, pool_errors=0)
    monkeypatch.setattr(routerr1.evaluate, "evaluate_router", lambda **kw: rows)
    monkeypatch.setattr(routerr1.train, "load_policy", lambda folder, dtype: (None, None))
    monkeypatch.setattr(routerr1.tracking, "tracked_run", lambda *a: _fake_run(seen, *a))
    monkeypatch.setattr(routerr1.tracking, "log_json_artifact", lambda *a, **k: None)
    monkeypatch.setattr(routerr1.data, "read_records", lambda path: [])
    monkeypatch.setattr(eval_stage, "open_pool", lambda run, models: nullcontext(None))
    monkeypatch.setattr(eval_stage, "load_descriptors", lambda path: [])
    monkeypatch.setattr(eval_stage, "loadable", lambda folder: folder)
    monkeypatch.setattr(common_stage, "log_eval", lambda rows: None)
    monkeypatch.setattr(eval_stage, "mlflow", SimpleNamespace(log_params=lambda p: None))
    out = tmp_path / "alpha~0.5" / "seed~7.parquet"
    kw = dict(eval_in="e", descriptors_in="d", policy_dir="p", method="router-r1@a0.5")
    run = RunConfig.from_dict(config(seeds=[3, 7]))
    got = eval_stage.evaluate_router(
        run, **kw, out=str(out), family="router-r1", alpha=0.5, models=[], seed=7
    )
    assert got["seed"].tolist() == [7] and pd.read_parquet(out)["seed"].tolist() == [7]
    assert seen["key"] == "eval/router-r1@a0.5/seed~7" and seen["tags"]["seed"] == "7"


def test_job_file_carries_the_seed_and_older_files_mean_the_top_level_seed(tmp_path, monkeypatch):
    cfg = config(seeds=[3, 7])
    job = TrainJob(0.5, "t", "d", "p", str(tmp_path / "ckpt"), str(tmp_path / "model"), seed=7)
    calls = []
    monkeypatch.setattr(train_stage, "train", lambda c, **kw: calls.append(kw) or {})
    run_worker(launch.write_job(cfg, job))
    assert calls[-1]["seed"] == 7
    older = json.loads((tmp_path / "ckpt" / launch.JOB_FILE).read_text())
    del older["job"]["seed"]
    (tmp_path / "old.json").write_text(json.dumps(older))
    run_worker(tmp_path / "old.json")
    assert calls[-1]["seed"] is None


def _plan(workdir: Path, mirror: Path, configfile: Path, *targets: str) -> str:
    cmd = [
        str(SNAKEMAKE),
        *("-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(configfile)),
        *("--config", f"data_mirror={mirror}", "-n", "--quiet", "rules", "--", *targets),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_plan_has_one_training_and_evaluation_per_alpha_and_seed(tmp_path, tiny_mirror):
    cfg = yaml.safe_load((REPO / "tests" / "data" / "smoke.yaml").read_text())
    cfg["train"]["seeds"] = [0, 5]  # smoke's top-level seed is 0
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    plan = _plan(tmp_path, tiny_mirror, path)
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in plan.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    # seed 0 in the one-seed layout, seed 5 under seed~5, for both alphas
    assert counts["train_router"] == 2 and counts["train_router_seed"] == 2
    assert counts["evaluate_router"] == 2 and counts["evaluate_router_seed"] == 2
    assert counts["evaluate_router_unseen"] == 2 and counts["evaluate_router_unseen_seed"] == 2
    assert counts["headroom"] == 1 and counts["routing"] == 1


def test_the_top_level_seed_has_no_seed_level_target(tmp_path, tiny_mirror):
    """seed~0 with top-level seed 0 is refused: the reports read seed 0 at the one-seed paths,
    so such a target would train a copy that no report uses."""
    cfg = yaml.safe_load((REPO / "tests" / "data" / "smoke.yaml").read_text())
    cfg["train"]["seeds"] = [0, 10]
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    plan = _plan(tmp_path, tiny_mirror, path, "results/eval/router/alpha~0.0/seed~10.parquet")
    assert "evaluate_router_seed" in plan and "train_router_seed" in plan  # 10 is not 0
    cmd = [
        str(SNAKEMAKE),
        *("-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile", str(path)),
        *("--config", f"data_mirror={tiny_mirror}", "-n", "--quiet", "rules"),
        *("--", "results/eval/router/alpha~0.0/seed~0.parquet"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "MissingRuleException" in proc.stdout + proc.stderr
