import json
from pathlib import Path

from routerr1.report import aggregate
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    aggregate(
        [Path(p) for p in snakemake.input.evals],
        Path(snakemake.output.duckdb),
        Path(snakemake.output.csv),
        Path(snakemake.output.md),
        manifest=json.loads(Path(snakemake.input.manifest).read_text()),
        decoding=dict(snakemake.params.decoding),
    )
