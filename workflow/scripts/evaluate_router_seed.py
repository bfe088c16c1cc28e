from routerr1.config import RunConfig
from routerr1.stages import baselines, evaluate
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    # a router of another training seed, on the training pool or with pool_unseen added
    run = RunConfig.from_dict(snakemake.config)
    job = dict(
        eval_in=snakemake.input.eval,
        descriptors_in=snakemake.input.descriptors,
        policy_dir=snakemake.input.policy,
        out=snakemake.output[0],
        method=snakemake.params.method,
        alpha=float(snakemake.wildcards.alpha),
        models=list(snakemake.input.models),
        seed=int(snakemake.wildcards.seed),
    )
    if snakemake.params.unseen:
        baselines.evaluate_router_unseen(run, **job)
    else:
        evaluate.evaluate_router(run, family=snakemake.params.family, **job)
