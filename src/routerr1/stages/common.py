"""What the stages share: the pool built from the fetched model folders, its price table and
hash, the evaluation metrics, and the tracked MLflow run that writes a stage's rows."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from routerr1.config import PoolEntry, RunConfig
from routerr1.io import write_parquet_atomic
from routerr1.prompt import descriptor_from_mapping


def model_dirs(models: Iterable[str | Path]) -> dict[str, Path]:
    """Loadable folder per model key, from the fetched folders (``resources/models/<key>``, as
    the rules' ``input.models``); a local source is used in place, not copied."""
    from routerr1.models import model_dir

    return {Path(folder).name: model_dir(Path(folder)) for folder in models}


def fetched_models(root: str | Path, cfg: Mapping[str, Any]) -> list[Path]:
    """The folders under ``root`` of the config's model keys that were fetched (for callers,
    such as ``routerr1 serve``, that hold a models root rather than a rule's inputs)."""
    return [Path(root) / key for key in cfg["models"] if (Path(root) / key).exists()]


def loadable(folder: str | Path) -> Path:
    """A fetched model (resolved through its marker) or a trained/warm-started one (as is)."""
    from routerr1.models import MARKER, model_dir

    folder = Path(folder)
    return model_dir(folder) if (folder / MARKER).exists() else folder


def open_pool(
    run: RunConfig,
    models: Iterable[str | Path],
    entries: Sequence[PoolEntry] | None = None,
    cache_path: str | Path | None = None,
):
    """The pool of ``entries`` (default: the run's training pool) over the fetched folders;
    its call cache is ``cache_path`` (default: ``results/cache/calls.sqlite`` of the working
    directory)."""
    from routerr1.pool.base import build_pool
    from routerr1.pool.cache import DEFAULT_CACHE_PATH, CallCache

    # deterministic calls are replayed from the cache; their recorded tokens are still priced
    cache = CallCache(cache_path or DEFAULT_CACHE_PATH) if run.pool_cache else None
    return build_pool(
        list(run.pool if entries is None else entries),
        model_dirs(models),
        max_batch_size=run.eval.batch_size,
        cache=cache,
        linear_kernel=run.linear_kernel,
    )


def price_table(entries: Iterable[PoolEntry]) -> list[dict[str, Any]]:
    return [
        {
            "name": e.name,
            "model": e.model,
            "price_in_per_1M": e.price_in,
            "price_out_per_1M": e.price_out,
        }
        for e in entries
    ]


def pool_hash(entries: Iterable[PoolEntry]) -> str:
    """sha256 of the pool's (name, model, prices, and prompt and extractor where not the
    default), sorted by name: equal pools, equal hash."""

    def fields(e: PoolEntry) -> dict[str, Any]:
        out = {"name": e.name, "model": e.model, "price_in": e.price_in, "price_out": e.price_out}
        if (e.prompt, e.extract) != ("short", None):  # older pools keep their hash
            out.update(prompt=e.prompt, extract=e.extract)
        return out

    rows = sorted((fields(e) for e in entries), key=lambda d: d["name"])
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def load_descriptors(path: str | Path):
    return [descriptor_from_mapping(d) for d in json.loads(Path(path).read_text())]


def log_eval(rows: pd.DataFrame) -> None:
    """Per-benchmark and overall accuracy, cost and pool use of evaluation rows."""
    for bench, grp in rows.groupby("benchmark"):
        mlflow.log_metrics(
            {
                f"{bench}.em": 100 * grp["em"].mean(),
                f"{bench}.f1": 100 * grp["f1"].mean(),
                f"{bench}.cost": grp["cost"].mean(),
                f"{bench}.pool_calls": grp["pool_calls"].mean(),
                f"{bench}.pool_errors": float(grp["pool_errors"].sum()),
            }
        )
    mlflow.log_metrics({"em": 100 * rows["em"].mean(), "cost": rows["cost"].mean()})
    mlflow.set_tag("benchmarks", ",".join(sorted(rows["benchmark"].unique())))


def eval_tags(
    method: str, family: str, entries: Iterable[PoolEntry], **more: str
) -> dict[str, str]:
    """The tags of an evaluation run (``routerr1.runs`` groups runs by them)."""
    return {
        "stage": "evaluate",
        "method": method,
        "family": family,
        **more,
        "pool_hash": pool_hash(entries),
    }


@dataclass(frozen=True)
class StageRun:
    """The open MLflow run of a pool stage (see :func:`pool_stage`)."""

    entries: tuple[PoolEntry, ...]

    def log_price_table(self) -> None:
        from routerr1.tracking import log_json_artifact

        log_json_artifact(price_table(self.entries), "price_table.json")

    def write_rows(self, rows: pd.DataFrame, out: str | Path) -> None:
        """Log the evaluation metrics and the price table, then write ``rows`` atomically."""
        log_eval(rows)
        self.log_price_table()
        write_parquet_atomic(rows, out)


@contextlib.contextmanager
def pool_stage(
    run: RunConfig,
    key: str,
    tags: Mapping[str, str],
    name: str | None = None,
    pool: Any = None,
    entries: Sequence[PoolEntry] | None = None,
) -> Iterator[StageRun]:
    """Run a stage inside the MLflow run ``key`` (started, or resumed under the same config),
    with ``pool`` (if given) open and closed on the way out.

    ``entries``: the pool whose price table the run logs (default: the run's training pool).
    """
    from routerr1.tracking import tracked_run

    entries = tuple(run.pool if entries is None else entries)
    pool_ctx = contextlib.nullcontext() if pool is None else pool
    with pool_ctx, tracked_run(run.raw, key, key if name is None else name, tags):
        yield StageRun(entries)
