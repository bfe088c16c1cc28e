from routerr1.config import alpha_label
from routerr1.workflow import slug

POLICY_MODEL = config["policy"]["model"]
POOL = {slug(p["name"]): p for p in config["pool"]}
POOL_MODEL_KEYS = sorted({p["model"] for p in config["pool"]})
ALPHAS = [alpha_label(a) for a in config["train"]["alphas"]]


wildcard_constraints:
    alpha=r"[0-9.]+",
    model=r"[A-Za-z0-9._-]+",
    member=r"[A-Za-z0-9._-]+",


def model_dir(key):
    return f"resources/models/{key}"


def eval_outputs():
    outs = expand("results/eval/router/alpha~{alpha}.parquet", alpha=ALPHAS)
    if "single" in config["eval"]["baselines"]:
        outs += expand("results/eval/single/{member}.parquet", member=sorted(POOL))
    if "prompt_router" in config["eval"]["baselines"]:
        outs.append("results/eval/prompt_router/untrained.parquet")
    return outs
