from routerr1.config import RunConfig
from routerr1.stages import data
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    data.eval_manifest(
        RunConfig.from_dict(snakemake.config), snakemake.input.eval, snakemake.output[0]
    )
