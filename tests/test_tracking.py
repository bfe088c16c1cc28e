"""MLflow on a real SQLite store: runs are keyed, failed runs are resumed, not duplicated."""

from __future__ import annotations

import mlflow
import pytest

from routerr1.tracking import flat_params, tracked_run, tracking_uri


def test_failed_run_is_resumed_by_key(tmp_path):
    cfg = {"mlflow": {"tracking_uri": None, "experiment": "t"}}
    with pytest.raises(RuntimeError):
        with tracked_run(cfg, "train/alpha~0.5", "train", {"alpha": "0.5"}, results_dir=tmp_path):
            mlflow.log_metric("loss", 1.0, step=1)
            raise RuntimeError("killed")
    with tracked_run(cfg, "train/alpha~0.5", "train", results_dir=tmp_path) as run:
        mlflow.log_metric("loss", 0.5, step=2)
        run_id = run.info.run_id
    runs = mlflow.search_runs(experiment_names=["t"])
    assert len(runs) == 1 and runs.iloc[0]["run_id"] == run_id
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    # a finished key starts a fresh run when the job is run again on purpose
    with tracked_run(cfg, "train/alpha~0.5", "train", results_dir=tmp_path):
        pass
    assert len(mlflow.search_runs(experiment_names=["t"])) == 2
    assert tracking_uri(cfg, tmp_path).startswith("sqlite:///")
    assert (tmp_path / "mlflow.db").is_file()


def test_a_changed_config_starts_a_new_run_instead_of_resuming(tmp_path):
    cfg = {"mlflow": {"tracking_uri": None, "experiment": "t"}, "warm_start": {"epochs": 2}}
    with pytest.raises(RuntimeError):
        with tracked_run(cfg, "warm_start", "warm_start", results_dir=tmp_path) as run:
            mlflow.log_params({"warm_start.epochs": 2})
            killed = run.info.run_id
            raise RuntimeError("killed")
    changed = {**cfg, "warm_start": {"epochs": 1}}
    with tracked_run(changed, "warm_start", "warm_start", results_dir=tmp_path) as run:
        mlflow.log_params({"warm_start.epochs": 1})  # MLflow would refuse this in the old run
        fresh = run.info.run_id
    assert fresh != killed
    # the unchanged config still resumes its own killed run
    with tracked_run(dict(reversed(cfg.items())), "warm_start", "w", results_dir=tmp_path) as run:
        assert run.info.run_id == killed


def test_artifacts_live_beside_the_database(tmp_path):
    cfg = {"mlflow": {"experiment": "a"}}
    with tracked_run(cfg, "k", "k", results_dir=tmp_path) as run:
        mlflow.log_text("hello", "note.txt")
    uri = run.info.artifact_uri
    assert uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_flat_params_flattens_nested_config():
    assert flat_params("train", {"a": 1, "b": {"c": [1, 2]}}) == {
        "train.a": "1",
        "train.b.c": "[1, 2]",
    }
