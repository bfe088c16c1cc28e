from routerr1.config import RunConfig
from routerr1.stages import data
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    data.download_data(
        RunConfig.from_dict(snakemake.config),
        snakemake.output.train,
        snakemake.output.eval,
        snakemake.output.profile,
    )
