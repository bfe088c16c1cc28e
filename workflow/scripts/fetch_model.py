from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.fetch(snakemake.params.source, snakemake.output[0])
