from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.train(
        snakemake.config,
        alpha=float(snakemake.wildcards.alpha),
        train_in=snakemake.input.train,
        descriptors_in=snakemake.input.descriptors,
        policy_dir=snakemake.input.policy,
        checkpoints=snakemake.params.checkpoints,
        model_out=snakemake.output[0],
    )
