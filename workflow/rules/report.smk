from routerr1.config import eval_config


rule aggregate:
    input:
        evals=eval_outputs(),
        # which configured eval benchmarks the data source lacked (listed as skipped)
        manifest="results/data/eval_manifest.json",
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
    benchmark:
        "results/benchmarks/aggregate.tsv",
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/aggregate.py"


rule pareto:
    input:
        csv="results/summary.csv",
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
        models=expand("results/train/alpha~{alpha}/model", alpha=ALPHAS),
    output:
        pdf=report(
            "results/learning_curves.pdf",
            caption="../report/learning_curves.rst",
            category="Training",
        ),
        csv="results/learning_curves.csv",
    log:
        "logs/learning_curves.log",
    params:
        experiment=config["mlflow"]["experiment"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/learning_curves.py"
