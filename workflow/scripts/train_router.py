from routerr1.launch import TrainJob, run_train_job
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    # in process, or `accelerate launch` over the job's GPUs, as config `launch` says
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
        ),
        gpus=int(getattr(snakemake.resources, "gpu", 0) or 0),
    )
