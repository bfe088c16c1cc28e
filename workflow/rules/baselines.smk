# Baselines derived from the single-model answers (no new pool inference), and the trained
# routers re-evaluated with the pool extended by pool_unseen (descriptors only, no retraining).
from routerr1.config import extended_pool_config
from routerr1.methods import BASELINES, derived_baselines

SINGLE_OUTPUTS = expand(BASELINES["single"].output, member=sorted(POOL))
if config["pool_unseen"]:
    extended_pool_config(config)  # unknown model keys or clashing names fail before any job


localrules:
    derive_baseline,
    fetch_embedder,
    describe_unseen,


rule derive_baseline:
    input:
        single=SINGLE_OUTPUTS,
    output:
        "results/eval/baselines/{baseline}.parquet",
    wildcard_constraints:
        baseline="|".join(derived_baselines()),
    log:
        "logs/evaluate/baseline_{baseline}.log",
    benchmark:
        "results/benchmarks/evaluate/baseline_{baseline}.tsv"
    params:
        # rerun triggers: the choice depends on the pool entries (prices, largest) and the seed
        pool=config["pool"],
        seed=config["seed"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/derive_baseline.py"


rule fetch_embedder:
    output:
        directory("resources/embedder"),
    log:
        "logs/fetch_embedder.log",
    benchmark:
        "results/benchmarks/fetch_embedder.tsv"
    params:
        embedder=config["eval"]["knn"]["embedder"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/fetch_embedder.py"


# KNN learns from every pool model's direct answers to the training questions (pool_answers,
# shared with the warm start) and to the profiling questions.
rule knn_baseline:
    input:
        single=SINGLE_OUTPUTS,
        calls=["results/warmstart/pool_answers.parquet", "results/pool/profile_calls.parquet"],
        embedder="resources/embedder",
    output:
        "results/eval/baselines/knn.parquet",
    log:
        "logs/evaluate/baseline_knn.log",
    benchmark:
        "results/benchmarks/evaluate/baseline_knn.tsv"
    params:
        knn=config["eval"]["knn"],
    threads: config["threads"]
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/knn_baseline.py"


rule profile_unseen:
    input:
        profile="results/data/profile.parquet",
        models=[model_dir(k) for k in UNSEEN_MODEL_KEYS],
    output:
        profile="results/pool/unseen/profile.parquet",
        calls="results/pool/unseen/profile_calls.parquet",
    log:
        "logs/profile_unseen.log",
    benchmark:
        "results/benchmarks/profile_unseen.tsv"
    params:
        unseen=config["pool_unseen"],
    threads: config["threads"]
    conda:
        rule_env("profile_unseen")
    script:
        "../scripts/profile_unseen.py"


rule describe_unseen:
    input:
        pool="results/pool/profile.parquet",
        unseen="results/pool/unseen/profile.parquet",
    output:
        "results/pool/unseen/descriptors.json",
    log:
        "logs/describe_unseen.log",
    benchmark:
        "results/benchmarks/describe_unseen.tsv"
    params:
        cost_per_call=config["rollout"]["cost_per_call_descriptors"],
    conda:
        "../envs/routerr1.yaml"
    script:
        "../scripts/describe_unseen.py"


rule evaluate_router_unseen:
    input:
        eval="results/data/eval.parquet",
        descriptors="results/pool/unseen/descriptors.json",
        policy="results/train/alpha~{alpha}/model",
        models=[model_dir(k) for k in sorted({*POOL_MODEL_KEYS, *UNSEEN_MODEL_KEYS})],
    output:
        "results/eval/router_unseen/alpha~{alpha}.parquet",
    log:
        "logs/evaluate/router_unseen_alpha~{alpha}.log",
    benchmark:
        "results/benchmarks/evaluate/router_unseen_alpha~{alpha}.tsv"
    params:
        method=lambda wc: f"router-r1+unseen@a{wc.alpha}",
        decoding=EVAL_DECODING,
    threads: config["threads"]
    conda:
        rule_env("evaluate_router_unseen")
    script:
        "../scripts/evaluate_router_unseen.py"


use rule evaluate_router_seed as evaluate_router_unseen_seed with:
    input:
        eval="results/data/eval.parquet",
        descriptors="results/pool/unseen/descriptors.json",
        policy="results/train/alpha~{alpha}/seed~{seed}/model",
        models=[model_dir(k) for k in sorted({*POOL_MODEL_KEYS, *UNSEEN_MODEL_KEYS})],
    output:
        "results/eval/router_unseen/alpha~{alpha}/seed~{seed}.parquet",
    log:
        "logs/evaluate/router_unseen_alpha~{alpha}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/router_unseen_alpha~{alpha}/seed~{seed}.tsv"
    params:
        method=lambda wc: f"router-r1+unseen@a{wc.alpha}",
        family="router-r1-unseen",
        unseen=True,
        decoding=EVAL_DECODING,
    conda:
        rule_env("evaluate_router_unseen_seed")
