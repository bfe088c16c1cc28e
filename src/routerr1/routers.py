"""Trained routers on disk: find them under ``results/train``, read what their
``routerr1_train.json`` says (alpha, MLflow run, steps, pool), and name them as evaluation rows
and ``routerr1 serve`` do (``router-r1@a<alpha>``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROUTER_PREFIX = "router-r1@a"
INFO_FILE = "routerr1_train.json"


@dataclass(frozen=True)
class RouterInfo:
    """A trained router folder and what its ``routerr1_train.json`` says about it."""

    name: str
    path: Path
    alpha: float
    run_id: str | None
    global_step: int | None
    trained_pool: tuple[str, ...] | None  # pool names it was trained with, when recorded


def router_name(alpha: float) -> str:
    from routerr1.config import alpha_label

    return f"{ROUTER_PREFIX}{alpha_label(alpha)}"


def find_routers(results_dir: str | Path = "results") -> list[Path]:
    """Trained router folders under ``results_dir/train``, ordered by alpha."""
    found = [p.parent for p in Path(results_dir).glob(f"train/alpha~*/model/{INFO_FILE}")]
    return sorted(found, key=lambda p: (_folder_alpha(p), str(p)))


def _folder_alpha(path: Path) -> float:
    try:
        return float(path.parent.name.removeprefix("alpha~"))
    except ValueError:
        return float("inf")


def router_folder(path: str | Path) -> Path:
    """``path`` itself, or its ``model/`` subfolder (``results/train/alpha~0.5`` works too)."""
    path = Path(path)
    if not (path / INFO_FILE).is_file() and (path / "model" / INFO_FILE).is_file():
        return path / "model"
    return path


def read_router(
    path: str | Path, cfg: Mapping[str, Any] | None = None, results_dir: str | Path = "results"
) -> RouterInfo:
    """Read a trained router folder; ValueError names the folder and what is missing.

    The training run id is recorded in ``routerr1_train.json``; routers trained before it was
    are looked up in the MLflow store by their run key (``train/alpha~<alpha>``).
    """
    path = router_folder(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise ValueError(f"--router: {str(path)!r} is not a trained router (no {INFO_FILE})")
    try:
        info = json.loads(info_path.read_text())
        alpha = float(info["alpha"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--router: {str(info_path)!r} has no valid 'alpha' ({exc})") from None
    run_id = info.get("mlflow_run_id")
    if run_id is None and cfg is not None:
        run_id = _run_id_from_mlflow(cfg, alpha, results_dir)
    pool = info.get("pool")
    return RouterInfo(
        name=router_name(alpha),
        path=path,
        alpha=alpha,
        run_id=run_id,
        global_step=info.get("global_step"),
        trained_pool=tuple(p["name"] for p in pool) if pool else None,
    )


def _run_id_from_mlflow(
    cfg: Mapping[str, Any], alpha: float, results_dir: str | Path
) -> str | None:
    """The latest training run for this alpha in the MLflow store, when there is one."""
    from routerr1.tracking import RUN_KEY_TAG, tracking_uri

    uri = tracking_uri(cfg, results_dir, create=False)
    if uri is None:
        return None
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name((cfg.get("mlflow") or {}).get("experiment", "routerr1"))
        if exp is None:
            return None
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = 'train/alpha~{alpha!r}'",
            order_by=["start_time DESC"],
            max_results=1,
        )
    except Exception as exc:  # the id is informative only: never fail serving over it
        log.warning("serve: no MLflow run id for alpha %s (%s)", alpha, exc)
        return None
    return runs[0].info.run_id if runs else None
