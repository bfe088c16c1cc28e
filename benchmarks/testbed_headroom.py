"""Headroom of a routing testbed before any training: each pool member alone, the oracle, and a
router that knows the benchmark, on the same evaluation questions.

    python benchmarks/testbed_headroom.py --configfile config/config.yaml config/cpu-routing.yaml \
        --data-mirror ../shared/data/flashrag --n-eval 48 --out results/testbed

Runs the pipeline's own stages: ``download_data`` samples the evaluation set (the seeded sample
the DAG evaluates on, with ``--n-eval`` per benchmark) and ``evaluate_single`` runs every pool
member on it (call cache and MLflow as in the DAG). Then prints, as markdown:

* EM (%) and mean cost (micro-dollars per question) per model and benchmark, with output tokens
  and wall time;
* the **oracle** (per question, the cheapest correct model: an upper bound on any router);
* **best per benchmark**: every question goes to the model with the best EM on its benchmark
  (ties: the cheaper), a router that only has to recognise the benchmark from the question;
* the **best single model** overall (what a user without a router would pick).

The gap between "best per benchmark" and the best single model is headroom a router can learn
from the question text; the oracle bounds what any router can reach. Rows are written under
``--out`` (single/<model>.parquet) and the tables to ``--out``/headroom.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd

from routerr1.baselines import oracle_rows, routed_model
from routerr1.config import RunConfig, load_configs, pool_entries
from routerr1.stages.common import fetched_models
from routerr1.stages.data import download_data
from routerr1.stages.evaluate import evaluate_single
from routerr1.workflow import slug


def _summary(rows: pd.DataFrame, label: str) -> dict:
    out: dict = {"method": label}
    for bench, grp in rows.groupby("benchmark", sort=True):
        out[f"{bench} EM"] = 100 * grp["em"].mean()
        out[f"{bench} µ$/q"] = 1e6 * grp["cost"].mean()
    out["all EM"] = 100 * rows["em"].mean()
    out["all µ$/q"] = 1e6 * rows["cost"].mean()
    return out


def paired_gain_ci(
    routed: pd.DataFrame, base: pd.DataFrame, n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """EM points of ``routed`` minus ``base`` on the same questions, with a 95% paired
    bootstrap interval that resamples questions within each benchmark."""
    import numpy as np

    key = ["benchmark", "qid"]
    diff = routed.set_index(key)["em"] - base.set_index(key)["em"]
    groups = [g.to_numpy() for _, g in diff.groupby(level="benchmark")]
    rng = np.random.default_rng(seed)
    boots = [
        np.concatenate([rng.choice(g, size=len(g)) for g in groups]).mean() for _ in range(n_boot)
    ]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"gain": 100 * float(diff.mean()), "ci95_low": 100 * lo, "ci95_high": 100 * hi}


def headroom_tables(single: pd.DataFrame, prices: dict[str, tuple[float, float]]) -> dict:
    """Per-model rows, oracle, best per benchmark and best single, as summary dicts."""
    single = single.assign(model=single["method"].str.removeprefix("single:"))
    per_model = [_summary(g, m) for m, g in single.groupby("model", sort=False)]
    stats = single.groupby(["benchmark", "model"]).agg(em=("em", "mean"), cost=("cost", "mean"))
    best_for = {
        bench: grp.reset_index()
        .sort_values(["em", "cost"], ascending=[False, True])["model"]
        .iloc[0]
        for bench, grp in stats.groupby(level="benchmark")
    }
    per_bench = pd.concat(
        [single[(single["benchmark"] == b) & (single["model"] == m)] for b, m in best_for.items()]
    )
    overall = single.groupby("model").agg(em=("em", "mean"), cost=("cost", "mean"))
    best_single = overall.sort_values(["em", "cost"], ascending=[False, True]).index[0]
    oracle = oracle_rows(single.drop(columns="model"), prices)
    gain = paired_gain_ci(per_bench, single[single["model"] == best_single])
    return {
        "models": per_model,
        "routes": [
            _summary(single[single["model"] == best_single], f"best single ({best_single})"),
            _summary(per_bench, "best per benchmark"),
            _summary(oracle, "oracle"),
        ],
        "best_for": best_for,
        "gain": gain,
        "oracle_share": oracle["trajectory"]
        .map(routed_model)
        .value_counts(normalize=True)
        .round(3)
        .to_dict(),
    }


def _markdown(rows: list[dict], digits: int = 1) -> str:
    return pd.DataFrame(rows).round(digits).to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--data-mirror", default=None)
    ap.add_argument("--n-eval", type=int, default=48, help="questions per eval benchmark")
    ap.add_argument("--models", nargs="*", default=None, help="pool names (default: all)")
    ap.add_argument("--models-root", default="resources/models", help="fetched model folders")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--out", default="results/testbed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    overrides: dict = {"data": {"n_eval": args.n_eval}}
    if args.data_mirror:
        overrides["data_mirror"] = args.data_mirror
    cfg = load_configs(args.configfile, overrides)
    out = Path(args.out)
    data = {k: str(out / "data" / f"{k}.parquet") for k in ("train", "eval", "profile")}
    run = RunConfig.from_dict(cfg)
    models = fetched_models(args.models_root, cfg)
    download_data(run, data["train"], data["eval"], data["profile"])

    names = args.models or [e.name for e in pool_entries(cfg)]
    timing = {}
    for name in names:
        t0 = time.perf_counter()
        evaluate_single(
            run, data["eval"], name, str(out / "single" / f"{slug(name)}.parquet"), models
        )
        timing[name] = time.perf_counter() - t0
        logging.info("%s: %.0f s", name, timing[name])

    single = pd.concat(
        [pd.read_parquet(out / "single" / f"{slug(n)}.parquet") for n in names], ignore_index=True
    )
    prices = {e.name: (e.price_in, e.price_out) for e in pool_entries(cfg)}
    tables = headroom_tables(single, prices)
    tokens = (
        single.assign(model=single["method"].str.removeprefix("single:"))
        .groupby(["model", "benchmark"])["out_tokens"]
        .mean()
        .unstack()
        .round(0)
    )
    text = "\n\n".join(
        [
            f"EM (%) and mean cost (µ$ per question), {len(single) // len(names)} questions "
            f"({single.groupby('benchmark').size().iloc[0] // len(names)} per benchmark):",
            _markdown(tables["models"]),
            _markdown(tables["routes"]),
            f"Best model per benchmark: {tables['best_for']}",
            "Best per benchmark minus best single, EM points (95% paired bootstrap over "
            f"questions, within benchmarks): {json.dumps(tables['gain'])}",
            f"Oracle's model shares: {tables['oracle_share']}",
            "Mean output tokens per answer:\n\n" + tokens.to_markdown(),
            "Wall seconds per model (this run, cache hits included): "
            + json.dumps({k: round(v) for k, v in timing.items()}),
        ]
    )
    (out / "headroom.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
