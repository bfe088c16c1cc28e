from routerr1.config import RunConfig
from routerr1.stages import train
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    train.warmstart(
        RunConfig.from_dict(snakemake.config),
        train_in=snakemake.input.train,
        answers_in=snakemake.input.answers,
        descriptors_in=snakemake.input.descriptors,
        heldout_in=snakemake.input.heldout,
        policy_dir=snakemake.input.policy,
        model_out=snakemake.output.model,
        report_out=snakemake.output.report,
        models=list(snakemake.input.models),
        alpha=snakemake.params.alpha,
    )
