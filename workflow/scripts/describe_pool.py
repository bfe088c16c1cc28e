from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.describe(
        snakemake.input.profile,
        snakemake.output[0],
        snakemake.params.compressed,
        snakemake.params.cost_per_call,
    )
