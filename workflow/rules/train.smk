rule train_router:
    input:
        train="results/data/train.parquet",
        descriptors="results/pool/descriptors.json",
        policy=model_dir(POLICY_MODEL),
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
    output:
        directory("results/train/alpha~{alpha}/model"),
    log:
        "logs/train_router/alpha~{alpha}.log",
    benchmark:
        "results/benchmarks/train_router/alpha~{alpha}.tsv",
    params:
        # checkpoints live outside the declared output so a killed job resumes from them
        checkpoints=lambda wc: f"results/train/alpha~{wc.alpha}/checkpoints",
    threads: config["threads"]
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/train_router.py"
