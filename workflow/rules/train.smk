rule pool_answers:
    input:
        train="results/data/train.parquet",
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
    output:
        "results/warmstart/pool_answers.parquet",
    log:
        "logs/pool_answers.log",
    benchmark:
        "results/benchmarks/pool_answers.tsv"
    threads: config["threads"]
    conda:
        rule_env("pool_answers")
    script:
        "../scripts/pool_answers.py"


rule warm_start:
    input:
        train="results/data/train.parquet",
        answers="results/warmstart/pool_answers.parquet",
        descriptors="results/pool/descriptors.json",
        heldout="results/data/eval.parquet",
        policy=model_dir(POLICY_MODEL),
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
    output:
        model=directory("results/warmstart/model"),
        report="results/warmstart/format.json",
    log:
        "logs/warm_start.log",
    benchmark:
        "results/benchmarks/warm_start.tsv"
    params:
        alpha=None,
    threads: config["threads"]
    conda:
        rule_env("warm_start")
    script:
        "../scripts/warm_start.py"


use rule warm_start as warm_start_alpha with:
    output:
        model=directory("results/warmstart/alpha~{alpha}/model"),
        report="results/warmstart/alpha~{alpha}/format.json",
    log:
        "logs/warm_start/alpha~{alpha}.log",
    benchmark:
        "results/benchmarks/warm_start/alpha~{alpha}.tsv"
    params:
        alpha=lambda wc: float(wc.alpha),


rule train_router:
    input:
        train="results/data/train.parquet",
        descriptors="results/pool/descriptors.json",
        policy=grpo_policy,
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
        answers=prompt_filter_answers,
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
        rule_env("train_router")
    script:
        "../scripts/train_router.py"


# Another training seed (train.seeds) of the same alpha. A rule of its own, not `use rule`: the
# seed reaches the job through its own script, and train_router's script stays as it was
# (Snakemake reruns a job whose script is newer than its outputs).
rule train_router_seed:
    input:
        train="results/data/train.parquet",
        descriptors="results/pool/descriptors.json",
        policy=grpo_policy,
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
        answers=prompt_filter_answers,
    output:
        directory("results/train/alpha~{alpha}/seed~{seed}/model"),
    log:
        "logs/train_router/alpha~{alpha}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/train_router/alpha~{alpha}/seed~{seed}.tsv"
    params:
        checkpoints=lambda wc: f"results/train/alpha~{wc.alpha}/seed~{wc.seed}/checkpoints",
    threads: config["threads"]
    conda:
        rule_env("train_router_seed")
    script:
        "../scripts/train_router_seed.py"
