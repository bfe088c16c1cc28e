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
    threads: config["threads"]
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/evaluate_router.py"


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
        "../envs/routerr1.yaml"
    script:
        "../scripts/evaluate_single.py"
