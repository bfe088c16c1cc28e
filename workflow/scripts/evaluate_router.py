from routerr1.config import RunConfig
from routerr1.stages import evaluate
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    alpha = snakemake.wildcards.get("alpha")
    evaluate.evaluate_router(
        RunConfig.from_dict(snakemake.config),
        eval_in=snakemake.input.eval,
        descriptors_in=snakemake.input.descriptors,
        policy_dir=snakemake.input.policy,
        out=snakemake.output[0],
        method=snakemake.params.method,
        family=snakemake.params.family,
        alpha=None if alpha is None else float(alpha),
        models=list(snakemake.input.models),
    )
