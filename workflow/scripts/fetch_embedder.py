from routerr1.config import RunConfig
from routerr1.stages import baselines
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    baselines.fetch_embedder(RunConfig.from_dict(snakemake.config), snakemake.output[0])
