"""MLflow on a SQLite backend with an explicit artifact location.

Runs are keyed by a stable ``routerr1.key`` tag (e.g. ``train/alpha~0.5``) so a restarted job
continues its unfinished run instead of creating a duplicate.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from routerr1 import precision as hardware_precision

DEFAULT_DB = "results/mlflow.db"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_DB}"  # the CLIs' default, relative to the cwd
RUN_KEY_TAG = "routerr1.key"
# a killed job resumes its run only under the same config: params may not change in a run
RUN_CONFIG_TAG = "routerr1.config_sha"


def tracking_uri(
    cfg: Mapping[str, Any], results_dir: str | Path = "results", *, create: bool = True
) -> str | None:
    """``mlflow.tracking_uri``, else the SQLite store ``<results_dir>/mlflow.db`` (its folder
    made). ``create=False`` (a reader): None where that store does not exist yet, rather than
    create an empty store just to find nothing in it."""
    uri = (cfg.get("mlflow") or {}).get("tracking_uri")
    if uri:
        return uri
    db = Path(results_dir).resolve() / "mlflow.db"
    if not create:
        return f"sqlite:///{db}" if db.is_file() else None
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """A CLI's ``--tracking-uri`` (default: ./results/mlflow.db) and ``--experiment``."""
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--experiment", default="routerr1", help="experiment name")


def missing_store(uri: str) -> str | None:
    """A CLI's error when ``uri`` names a SQLite file that does not exist (MLflow would
    silently create an empty store), else None."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            return f"--tracking-uri: no MLflow database at {db}"
    return None


def ensure_experiment(uri: str, name: str, artifact_root: Path | None = None) -> str:
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        # parallel jobs that find a fresh SQLite file race in MLflow's schema migration
        from filelock import FileLock

        with FileLock(uri.removeprefix("sqlite:///") + ".lock"):
            return _ensure_experiment(uri, name, artifact_root)
    return _ensure_experiment(uri, name, artifact_root)


def _ensure_experiment(uri: str, name: str, artifact_root: Path | None) -> str:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # keep artifacts beside the database, not in ./mlruns of whatever cwd the job had
        root = artifact_root or Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        location = Path(root).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by a sibling job
        return client.get_experiment_by_name(name).experiment_id


def config_fingerprint(cfg: Mapping[str, Any]) -> str:
    """Short hash of the whole config (key order does not matter)."""
    text = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _find_resumable(client: MlflowClient, exp_id: str, key: str, config_sha: str) -> str | None:
    runs = client.search_runs(
        [exp_id],
        filter_string=(
            f"tags.`{RUN_KEY_TAG}` = '{key}' and tags.`{RUN_CONFIG_TAG}` = '{config_sha}'"
        ),
        order_by=["start_time DESC"],
    )
    for run in runs:
        if run.info.status != "FINISHED":
            return run.info.run_id
    return None


@contextlib.contextmanager
def tracked_run(
    cfg: Mapping[str, Any],
    key: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    results_dir: str | Path = "results",
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume) the MLflow run for ``key``; marks it FAILED if the body raises.

    An unfinished run is resumed only when the config is unchanged; after a config change
    the job starts a new run, since MLflow refuses to change a logged param.
    """
    uri = tracking_uri(cfg, results_dir)
    exp_id = ensure_experiment(uri, (cfg.get("mlflow") or {}).get("experiment", "routerr1"))
    client = MlflowClient(uri)
    # the precisions `auto` chose on this machine are part of the run: a job resumed on a
    # machine that resolves them differently starts a new run instead of mixing dtypes
    precision = hardware_precision.resolved_params(cfg)
    config_sha = config_fingerprint({**cfg, "resolved_precision": precision})
    resume_id = _find_resumable(client, exp_id, key, config_sha)
    all_tags = {RUN_KEY_TAG: key, RUN_CONFIG_TAG: config_sha, **(tags or {})}
    with mlflow.start_run(
        run_id=resume_id,
        experiment_id=None if resume_id else exp_id,
        run_name=None if resume_id else run_name,
        tags=all_tags,
    ) as run:
        if not resume_id:
            mlflow.log_params(precision)
            mlflow.set_tag("routerr1.hardware", hardware_precision.probe().describe())
        yield run


def log_json_artifact(obj: Any, name: str, artifact_path: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(obj, indent=2, default=str))
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def flat_params(prefix: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """Flatten a nested mapping into MLflow params (values truncated to MLflow's limit)."""
    out: dict[str, str] = {}
    for k, v in obj.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flat_params(name, v))
        else:
            out[name] = str(v)[:500]
    return out
