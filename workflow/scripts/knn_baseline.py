from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.knn_baseline(
        snakemake.config,
        list(snakemake.input.single),
        list(snakemake.input.calls),
        snakemake.input.embedder,
        snakemake.output[0],
    )
