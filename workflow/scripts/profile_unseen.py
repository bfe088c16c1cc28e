from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.profile_unseen(
        snakemake.config, snakemake.input.profile, snakemake.output.profile, snakemake.output.calls
    )
