from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.download_data(
        snakemake.config, snakemake.output.train, snakemake.output.eval, snakemake.output.profile
    )
