from routerr1.config import RunConfig
from routerr1.stages import evaluate
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    evaluate.evaluate_single(
        RunConfig.from_dict(snakemake.config),
        snakemake.input.eval,
        snakemake.params.name,
        snakemake.output[0],
        models=list(snakemake.input.models),
    )
