from routerr1.config import RunConfig
from routerr1.stages import baselines
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    baselines.knn_baseline(
        RunConfig.from_dict(snakemake.config),
        list(snakemake.input.single),
        list(snakemake.input.calls),
        snakemake.input.embedder,
        snakemake.output[0],
    )
