from routerr1.config import RunConfig
from routerr1.stages import pool
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    pool.profile(
        RunConfig.from_dict(snakemake.config),
        snakemake.input.profile,
        snakemake.output.profile,
        snakemake.output.calls,
        models=list(snakemake.input.models),
    )
