from routerr1 import stages
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    stages.eval_manifest(snakemake.config, snakemake.input.eval, snakemake.output[0])
