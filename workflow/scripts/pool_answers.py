from routerr1.config import RunConfig
from routerr1.stages import train
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    train.pool_answers(
        RunConfig.from_dict(snakemake.config),
        snakemake.input.train,
        snakemake.output[0],
        models=list(snakemake.input.models),
    )
