from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.fetch_embedder(snakemake.config, snakemake.output[0])
