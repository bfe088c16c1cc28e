from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    # a router of another training seed, on the training pool or with pool_unseen added
    job = dict(
        eval_in=snakemake.input.eval,
        descriptors_in=snakemake.input.descriptors,
        policy_dir=snakemake.input.policy,
        out=snakemake.output[0],
        method=snakemake.params.method,
        alpha=float(snakemake.wildcards.alpha),
        seed=int(snakemake.wildcards.seed),
    )
    if snakemake.params.unseen:
        stages.evaluate_router_unseen(snakemake.config, **job)
    else:
        stages.evaluate_router(snakemake.config, family=snakemake.params.family, **job)
