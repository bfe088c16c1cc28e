rule fetch_model:
    output:
        directory("resources/models/{model}"),
    log:
        "logs/fetch_model/{model}.log",
    benchmark:
        "results/benchmarks/fetch_model/{model}.tsv",
    params:
        source=lambda wc: config["models"][wc.model]["source"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/fetch_model.py"
