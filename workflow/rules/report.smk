rule aggregate:
    input:
        eval_outputs(),
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
