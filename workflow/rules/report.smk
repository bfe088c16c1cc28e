rule aggregate:
    input:
        eval_outputs(),
    output:
        duckdb="results/summary.duckdb",
        csv="results/summary.csv",
        md="results/summary.md",
    log:
        "logs/aggregate.log",
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/aggregate.py"


rule pareto:
    input:
        csv="results/summary.csv",
    output:
        "results/pareto.pdf",
    log:
        "logs/pareto.log",
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/pareto.py"
