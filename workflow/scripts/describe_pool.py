from routerr1.stages import pool
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    pool.describe(
        snakemake.input.profile,
        snakemake.output[0],
        snakemake.params.compressed,
        snakemake.params.cost_per_call,
    )
