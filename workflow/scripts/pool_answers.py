from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.pool_answers(snakemake.config, snakemake.input.train, snakemake.output[0])
