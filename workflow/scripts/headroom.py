from routerr1.report.headroom import write_headroom
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    write_headroom(
        list(snakemake.input.single),
        snakemake.output.md,
        snakemake.output.csv,
        folds=snakemake.params.folds,
        seed=snakemake.params.seed,
        n_resamples=snakemake.params.resamples,
        level=snakemake.params.level,
    )
