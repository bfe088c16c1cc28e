rule aggregate:
    input:
        eval_outputs(),
    output:
        duckdb="results/summary.duckdb",
        csv="results/summary.csv",
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
        "results/pareto.pdf",
    log:
        "logs/pareto.log",
    benchmark:
        "results/benchmarks/pareto.tsv",
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/pareto.py"
