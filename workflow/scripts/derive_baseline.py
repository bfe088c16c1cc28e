from routerr1.config import RunConfig
from routerr1.stages import baselines
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    baselines.derived_baseline(
        RunConfig.from_dict(snakemake.config),
        snakemake.wildcards.baseline,
        list(snakemake.input.single),
        snakemake.output[0],
    )
