from routerr1.curves import write_curves
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    write_curves(
        snakemake.params.tracking_uri,
        snakemake.output.pdf,
        snakemake.output.csv,
        experiment=snakemake.params.experiment,
    )
