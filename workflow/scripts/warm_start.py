from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.warmstart(
        snakemake.config,
        train_in=snakemake.input.train,
        answers_in=snakemake.input.answers,
        descriptors_in=snakemake.input.descriptors,
        heldout_in=snakemake.input.heldout,
        policy_dir=snakemake.input.policy,
        model_out=snakemake.output.model,
        report_out=snakemake.output.report,
        alpha=snakemake.params.alpha,
    )
