rule download_data:
    output:
        train="results/data/train.parquet",
        eval="results/data/eval.parquet",
        profile="results/data/profile.parquet",
    log:
        "logs/download_data.log",
    benchmark:
        "results/benchmarks/download_data.tsv",
    params:
        data=config["data"],
        mirror=config["data_mirror"],
        seed=config["seed"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/download_data.py"
