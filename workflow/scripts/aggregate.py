import json
from pathlib import Path

import pandas as pd

from routerr1.report.aggregate import aggregate
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    headroom = [pd.read_csv(p) for p in snakemake.input.headroom]  # none without single models
    aggregate(
        [Path(p) for p in snakemake.input.evals],
        Path(snakemake.output.duckdb),
        Path(snakemake.output.csv),
        Path(snakemake.output.md),
        manifest=json.loads(Path(snakemake.input.manifest).read_text()),
        decoding=dict(snakemake.params.decoding),
        base_seed=snakemake.params.base_seed,
        headroom=headroom[0] if headroom else None,
        n_resamples=snakemake.params.resamples,
        level=snakemake.params.level,
    )
