from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.evaluate_router_unseen(
        snakemake.config,
        eval_in=snakemake.input.eval,
        descriptors_in=snakemake.input.descriptors,
        policy_dir=snakemake.input.policy,
        out=snakemake.output[0],
        method=snakemake.params.method,
        alpha=float(snakemake.wildcards.alpha),
    )
