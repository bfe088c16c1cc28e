rule evaluate_router:
    input:
        eval="results/data/eval.parquet",
        descriptors="results/pool/descriptors.json",
        policy="results/train/alpha~{alpha}/model",
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
    output:
        "results/eval/router/alpha~{alpha}.parquet",
    log:
        "logs/evaluate/router_alpha~{alpha}.log",
    benchmark:
        "results/benchmarks/evaluate/router_alpha~{alpha}.tsv",
    params:
        method=lambda wc: f"router-r1@a{wc.alpha}",
        family="router-r1",
        decoding=EVAL_DECODING,
    threads: config["threads"]
    conda:
        rule_env("evaluate_router")
    script:
        "../scripts/evaluate_router.py"


# A router of another training seed (see train_router_seed): its rows carry a `seed` column.
rule evaluate_router_seed:
    input:
        eval="results/data/eval.parquet",
        descriptors="results/pool/descriptors.json",
        policy="results/train/alpha~{alpha}/seed~{seed}/model",
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
    output:
        "results/eval/router/alpha~{alpha}/seed~{seed}.parquet",
    log:
        "logs/evaluate/router_alpha~{alpha}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/router_alpha~{alpha}/seed~{seed}.tsv"
    params:
        method=lambda wc: f"router-r1@a{wc.alpha}",
        family="router-r1",
        unseen=False,
        decoding=EVAL_DECODING,
    threads: config["threads"]
    conda:
        rule_env("evaluate_router_seed")
    script:
        "../scripts/evaluate_router_seed.py"


use rule evaluate_router as evaluate_prompt_router with:
    input:
        eval="results/data/eval.parquet",
        descriptors="results/pool/descriptors.json",
        policy=model_dir(POLICY_MODEL),
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
    output:
        "results/eval/prompt_router/untrained.parquet",
    log:
        "logs/evaluate/prompt_router.log",
    benchmark:
        "results/benchmarks/evaluate/prompt_router.tsv",
    params:
        method="prompt-router",
        family="prompt-router",
        decoding=EVAL_DECODING,


rule evaluate_single:
    input:
        eval="results/data/eval.parquet",
        models=[model_dir(k) for k in POOL_MODEL_KEYS],
    output:
        "results/eval/single/{member}.parquet",
    log:
        "logs/evaluate/single_{member}.log",
    benchmark:
        "results/benchmarks/evaluate/single_{member}.tsv",
    params:
        name=lambda wc: POOL[wc.member]["name"],
        # a changed price or prompt setting must redo this model's rows (Snakemake tracks params)
        entry=lambda wc: POOL[wc.member],
    threads: config["threads"]
    conda:
        rule_env("evaluate_single")
    script:
        "../scripts/evaluate_single.py"
