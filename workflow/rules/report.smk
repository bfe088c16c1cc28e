from routerr1.config import eval_config


# Placed against the routers in summary.md and pareto.pdf (needs the single-model answers).
HEADROOM_CSV = ["results/headroom.csv"] if HAS_SINGLE else []
HEADROOM_MD = ["results/headroom.md"] if HAS_SINGLE else []
REPORT = config["report"]


rule headroom:
    input:
        single=SINGLE_OUTPUTS,
    output:
        md=report(
            "results/headroom.md",
            caption="../report/headroom.rst",
            category="Headroom",
            labels={"file": "headroom.md"},
        ),
        csv=report(
            "results/headroom.csv",
            caption="../report/headroom.rst",
            category="Headroom",
            labels={"file": "headroom.csv"},
        ),
    log:
        "logs/headroom.log",
    benchmark:
        "results/benchmarks/headroom.tsv"
    params:
        folds=REPORT["headroom_folds"],
        resamples=REPORT["bootstrap_resamples"],
        level=REPORT["ci_level"],
        seed=config["seed"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/headroom.py"


rule routing:
    input:
        evals=routing_inputs(),
    output:
        md=report(
            "results/routing.md",
            caption="../report/routing.rst",
            category="Routing",
            labels={"file": "routing.md"},
        ),
        pdf=report(
            "results/routing.pdf",
            caption="../report/routing.rst",
            category="Routing",
            labels={"file": "routing.pdf"},
        ),
        csv="results/routing.csv",
    log:
        "logs/routing.log",
    benchmark:
        "results/benchmarks/routing.tsv"
    params:
        # to name the models of older rows, read from their trajectory text
        pool=[p["name"] for p in [*config["pool"], *config["pool_unseen"]]],
        aliases={
            p["name"]: list(p.get("aliases", []))
            for p in [*config["pool"], *config["pool_unseen"]]
        },
        seed=config["seed"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/routing.py"


rule aggregate:
    input:
        evals=eval_outputs(),
        # which configured eval benchmarks the data source lacked (listed as skipped)
        manifest="results/data/eval_manifest.json",
        headroom=HEADROOM_CSV,
    output:
        duckdb="results/summary.duckdb",
        csv=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "per method and benchmark"},
        ),
        md="results/summary.md",
    log:
        "logs/aggregate.log",
    params:
        decoding=eval_config(config).decoding(config["seed"]),
        # router rows without a seed column were trained with the top-level seed
        base_seed=config["seed"],
        resamples=REPORT["bootstrap_resamples"],
        level=REPORT["ci_level"],
    benchmark:
        "results/benchmarks/aggregate.tsv",
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/aggregate.py"


rule pareto:
    input:
        csv="results/summary.csv",
        headroom=HEADROOM_CSV,
    output:
        report("results/pareto.pdf", caption="../report/pareto.rst", category="Pareto"),
    log:
        "logs/pareto.log",
    benchmark:
        "results/benchmarks/pareto.tsv",
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/pareto.py"


rule learning_curves:
    input:
        # the trained routers: their runs are finished in the MLflow store once these exist
        models=router_models(),
    output:
        pdf=report(
            "results/learning_curves.pdf",
            caption="../report/learning_curves.rst",
            category="Training",
        ),
        csv="results/learning_curves.csv",
        # per alpha: reward of the first vs the last 10 steps, against the seed spread
        gain=report(
            "results/learning_gain.md",
            caption="../report/learning_gain.rst",
            category="Training",
        ),
    log:
        "logs/learning_curves.log",
    params:
        experiment=config["mlflow"]["experiment"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/learning_curves.py"
