from routerr1.config import RunConfig
from routerr1.stages import baselines
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    baselines.evaluate_router_unseen(
        RunConfig.from_dict(snakemake.config),
        eval_in=snakemake.input.eval,
        descriptors_in=snakemake.input.descriptors,
        policy_dir=snakemake.input.policy,
        out=snakemake.output[0],
        method=snakemake.params.method,
        alpha=float(snakemake.wildcards.alpha),
        models=list(snakemake.input.models),
    )
