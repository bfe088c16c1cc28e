from routerr1.stages import models
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    models.fetch(snakemake.params.source, snakemake.output[0])
