# routerr1: Router-R1 as one reproducible Snakemake DAG.
#   snakemake --cores 2 results/pareto.pdf            (embedded CPU default)
#   snakemake --configfile tests/data/smoke.yaml ...  (tiny end-to-end check)
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

from routerr1.config import validate_config  # noqa: E402

# cross-field checks (unknown model keys, duplicate names, missing folders) before any job runs
config.update(validate_config(config))


onstart:
    # Create (and migrate) the MLflow store once, before any job: parallel jobs (SLURM,
    # --cores N) that both find a fresh SQLite file race in MLflow's schema migration.
    from routerr1.tracking import ensure_experiment, tracking_uri

    ensure_experiment(tracking_uri(config), config["mlflow"]["experiment"])


# downloads and cheap bookkeeping stay on the submit host under cluster executors
localrules:
    download_data,
    fetch_model,
    describe_pool,
    aggregate,
    pareto,
    learning_curves,
    headroom,
    routing,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/pool.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/pareto.pdf",
        "results/summary.md",
        "results/learning_curves.pdf",
        "results/learning_gain.md",
        "results/routing.md",
        # the pool's headroom needs each pool model alone (eval.baselines: single)
        HEADROOM_MD,
