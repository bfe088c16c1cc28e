from routerr1.curves import write_curves
from routerr1.tracking import tracking_uri
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    write_curves(
        tracking_uri(snakemake.config),  # resolved in the job: parsing must not create results/
        snakemake.output.pdf,
        snakemake.output.csv,
        experiment=snakemake.params.experiment,
        gain_path=snakemake.output.gain,
    )
