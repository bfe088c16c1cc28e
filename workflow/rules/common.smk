from routerr1.config import PER_ALPHA_ROUTING, alpha_label, seed_level, train_seeds
from routerr1.methods import BASELINES, baseline_outputs
from routerr1.workflow import conda_env, fetched_model_keys, slug

POLICY_MODEL = config["policy"]["model"]
POOL = {slug(p["name"]): p for p in config["pool"]}
# weights to fetch: models run in process or served by the pipeline (serve: vllm); other
# openai entries call an endpoint someone else runs
POOL_MODEL_KEYS = fetched_model_keys(config["pool"])
UNSEEN_MODEL_KEYS = fetched_model_keys(config["pool_unseen"])
# GRPO starts from the warm-started policy when the format warm start is on: one for every
# alpha, or one per alpha with warm_start.routing: reward, predicted or benchmark
WARM_PER_ALPHA = config["warm_start"]["routing"] in PER_ALPHA_ROUTING
# Router decoding at evaluation (greedy unless eval.temperature > 0): a changed setting redoes the
# router evaluations (Snakemake tracks params) but not the single-model ones.
EVAL_DECODING = {k: config["eval"][k] for k in ("temperature", "top_p", "sample_seed")}


def grpo_policy(wildcards):
    if not config["warm_start"]["enabled"]:
        return f"resources/models/{POLICY_MODEL}"
    if WARM_PER_ALPHA:
        return f"results/warmstart/alpha~{wildcards.alpha}/model"
    return "results/warmstart/model"


def prompt_filter_answers(wildcards):
    """The pool answers train.prompt_filter reads; with no filter GRPO needs none."""
    if config["train"]["prompt_filter"] == "none":
        return []
    return rules.pool_answers.output[0]


ALPHAS = [alpha_label(a) for a in config["train"]["alphas"]]
# One router per alpha and training seed. The top-level seed keeps the one-seed paths
# (results/train/alpha~A/model, results/eval/router/alpha~A.parquet): the outputs of every
# earlier run stay valid. Other seeds add a level (alpha~A/seed~S) through the *_seed rules.
SEEDS = train_seeds(config)
ROUTER_RUNS = [(a, seed_level(config, s)) for a in ALPHAS for s in SEEDS]


def router_models():
    return [f"results/train/alpha~{a}{level}/model" for a, level in ROUTER_RUNS]


def router_evals(folder="router"):
    return [f"results/eval/{folder}/alpha~{a}{level}.parquet" for a, level in ROUTER_RUNS]


wildcard_constraints:
    alpha=r"[0-9.]+",
    # any seed but the top-level one, whose router lives at the one-seed paths: a seed~S target
    # for it would train a second copy that the reports never read
    seed=rf"(?!{config['seed']}(?![0-9]))[0-9]+",
    model=r"[A-Za-z0-9._-]+",
    member=r"[A-Za-z0-9._-]+",


def model_dir(key):
    return f"resources/models/{key}"


def eval_outputs():
    outs = router_evals()
    outs += baseline_outputs(config["eval"]["baselines"], list(POOL))
    if config["pool_unseen"]:
        outs += router_evals("router_unseen")
    return outs


def routing_inputs():
    """Evaluations whose rows come from a routing policy (the routing-behaviour report)."""
    outs = router_evals()
    routing = [n for n in config["eval"]["baselines"] if BASELINES[n].routes]
    outs += baseline_outputs(routing, list(POOL))
    if config["pool_unseen"]:
        outs += router_evals("router_unseen")
    return outs


# The headroom report and the intervals compare against each pool model alone.
HAS_SINGLE = "single" in config["eval"]["baselines"]


def rule_env(name):
    """conda env of `name` under --sdm conda: the GPU env (vllm, deepspeed) where needed."""
    return conda_env(config, name, base_dirs=[workflow.basedir])
