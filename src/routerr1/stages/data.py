"""Stages of ``workflow/rules/data.smk``: sample the question sets, describe what was sampled."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from routerr1.config import RunConfig
from routerr1.io import write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)


def _sampled(run: RunConfig):
    from routerr1.data import resolve_benchmark_dir, sample_splits

    d = run.data

    def source(bench: str):
        return resolve_benchmark_dir(bench, d.mirror, d.hub_repo, d.hub_revision)

    return sample_splits(d.sampling, source), d.source_name


def download_data(
    run: RunConfig,
    train_out: str,
    eval_out: str,
    profile_out: str,
    manifest_out: str | None = None,
) -> dict[str, Any]:
    """Sample the three sets; an eval benchmark missing from the source is skipped with a
    warning, and the returned manifest (also written to ``manifest_out``) says which and why."""
    from routerr1.data import records_to_frame, with_question_mark

    splits, source_name = _sampled(run)
    for name, path in (("train", train_out), ("eval", eval_out), ("profile", profile_out)):
        records = getattr(splits, name)
        if run.data.question_mark:  # as Router-R1's data scripts
            records = with_question_mark(records)
        write_parquet_atomic(records_to_frame(records), path)
        log.info("%s: %d questions -> %s", name, len(records), path)
    for bench, reason in splits.skipped.items():
        log.warning("SKIPPED eval benchmark %r: %s", bench, reason)
    manifest = {"source": source_name, "benchmarks": splits.eval_manifest}
    if manifest_out is not None:
        write_json_atomic(manifest, manifest_out)
    return manifest


def eval_manifest(run: RunConfig, eval_in: str, out: str) -> dict[str, Any]:
    """Which configured eval benchmarks were evaluated (split, questions) and which skipped
    (why), for the report. Sampling is seeded, so redoing it gives download_data's manifest;
    it is checked against ``eval_in`` so a stale eval set cannot be described wrongly."""
    splits, source_name = _sampled(run)
    counts = pd.read_parquet(eval_in, columns=["benchmark"])["benchmark"].value_counts()
    for entry in splits.eval_manifest:
        have = int(counts.get(entry["benchmark"], 0))
        if have != entry.get("n", 0):
            raise ValueError(
                f"eval_in: {entry['benchmark']!r} has {have} questions in {eval_in}, but the data "
                f"config samples {entry.get('n', 0)}; rerun download_data"
            )
        if entry["status"] != "ok":
            log.warning("SKIPPED eval benchmark %r: %s", entry["benchmark"], entry["reason"])
    manifest = {"source": source_name, "benchmarks": splits.eval_manifest}
    write_json_atomic(manifest, out)
    return manifest
