rule profile_pool:
    input:
        profile="results/data/profile.parquet",
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
    output:
        profile="results/pool/profile.parquet",
        calls="results/pool/profile_calls.parquet",
    log:
        "logs/profile_pool.log",
    benchmark:
        "results/benchmarks/profile_pool.tsv",
    threads: config["threads"]
    conda:
        rule_env("profile_pool")
    script:
        "../scripts/profile_pool.py"


rule describe_pool:
    input:
        profile="results/pool/profile.parquet",
    output:
        "results/pool/descriptors.json",
    log:
        "logs/describe_pool.log",
    benchmark:
        "results/benchmarks/describe_pool.tsv",
    params:
        compressed=config["rollout"]["compressed_descriptors"],
        cost_per_call=config["rollout"]["cost_per_call_descriptors"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/describe_pool.py"
