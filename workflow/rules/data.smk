# Evaluation benchmarks the mirror (or hub) lacks are skipped, not fatal: download_data samples
# the others and logs the skip, eval_manifest records it (with the reason) for the report's
# "Skipped benchmarks" section, and the warning below puts it in the Snakemake log up front.
from pathlib import Path as _Path

if config["data_mirror"]:
    for _bench in config["data"]["eval_benchmarks"]:
        if not (_Path(config["data_mirror"]) / _bench).is_dir():
            logger.warning(
                f"WARNING: eval benchmark {_bench!r} is not in data_mirror "
                f"{config['data_mirror']!r}; it is skipped (see results/summary.md)"
            )


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


localrules:
    eval_manifest,


# A rule of its own (not a download_data output) so adding it never resamples existing data.
rule eval_manifest:
    input:
        eval="results/data/eval.parquet",
    output:
        "results/data/eval_manifest.json",
    log:
        "logs/eval_manifest.log",
    params:
        data=config["data"],
        mirror=config["data_mirror"],
        seed=config["seed"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/eval_manifest.py"
