from routerr1.stages import baselines
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    baselines.describe_unseen(
        snakemake.input.pool,
        snakemake.input.unseen,
        snakemake.output[0],
        snakemake.params.cost_per_call,
    )
