from routerr1.routing import write_routing
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    write_routing(
        list(snakemake.input.evals),
        snakemake.output.md,
        snakemake.output.pdf,
        snakemake.output.csv,
        pool_names=list(snakemake.params.pool),
        aliases=dict(snakemake.params.aliases),
        seed=snakemake.params.seed,
    )
