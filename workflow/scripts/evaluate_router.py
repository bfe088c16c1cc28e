from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    alpha = snakemake.wildcards.get("alpha")
    stages.evaluate_router(
        snakemake.config,
        eval_in=snakemake.input.eval,
        descriptors_in=snakemake.input.descriptors,
        policy_dir=snakemake.input.policy,
        out=snakemake.output[0],
        method=snakemake.params.method,
        family=snakemake.params.family,
        alpha=None if alpha is None else float(alpha),
    )
