from routerr1.launch import TrainJob, run_train_job
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    # train_router with the job's seed (train.seeds) instead of the top-level one
    run_train_job(
        snakemake.config,
        TrainJob(
            alpha=float(snakemake.wildcards.alpha),
            train_in=snakemake.input.train,
            descriptors_in=snakemake.input.descriptors,
            policy_dir=snakemake.input.policy,
            checkpoints=snakemake.params.checkpoints,
            model_out=snakemake.output[0],
            models=tuple(snakemake.input.models),
            # train.prompt_filter's pool answers; none without a filter
            answers_in=str(snakemake.input.answers) if snakemake.input.answers else None,
            seed=int(snakemake.wildcards.seed),
        ),
        gpus=int(getattr(snakemake.resources, "gpu", 0) or 0),
    )
