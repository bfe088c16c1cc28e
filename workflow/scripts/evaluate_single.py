from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.evaluate_single(
        snakemake.config, snakemake.input.eval, snakemake.params.name, snakemake.output[0]
    )
