from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.describe_unseen(
        snakemake.input.pool,
        snakemake.input.unseen,
        snakemake.output[0],
        snakemake.params.cost_per_call,
    )
