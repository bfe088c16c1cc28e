from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.derived_baseline(
        snakemake.config,
        snakemake.wildcards.baseline,
        list(snakemake.input.single),
        snakemake.output[0],
    )
