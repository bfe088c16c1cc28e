"""Measure each pool model on the profiling sample: latency, throughput, accuracy, cost.

The measured numbers become the descriptors the router sees, so they are measured, not typed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from routerr1.metrics import exact_match, f1_score
from routerr1.pool.base import Pool
from routerr1.prompt import Descriptor


def profile_pool(
    pool: Pool, questions: Sequence[str], golds: Sequence[Sequence[str]], batch_size: int = 16
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (per-model summary, per-call rows). Remote endpoints are checked first: an
    unreachable one or a rejected key stops profiling with an error naming model and URL."""
    pool.check()
    rows = []
    # one tick per answer: a 1.5B model reasoning on 200 questions takes many minutes on a CPU
    progress = tqdm(total=len(pool.names) * len(questions), desc="pool calls", unit="call")
    for name in pool.names:
        progress.set_postfix_str(name)
        for start in range(0, len(questions), batch_size):
            qs = list(questions[start : start + batch_size])
            for q, g, call in zip(
                qs,
                golds[start : start + batch_size],
                pool.call([(name, q) for q in qs]),
                strict=True,
            ):
                rows.append(
                    {
                        "model": name,
                        "question": q,
                        "golden_answers": list(g),
                        "prediction": call.text,
                        "em": exact_match(call.text, g),
                        "f1": f1_score(call.text, g),
                        "in_tokens": call.in_tokens,
                        "out_tokens": call.out_tokens,
                        "cost": call.cost,
                        "latency_s": call.latency_s,
                        "error": call.error,
                    }
                )
            progress.update(len(qs))
    progress.close()
    calls = pd.DataFrame(rows)
    summary = []
    for name, grp in calls.groupby("model", sort=False):
        entry = pool.entries[name]
        # calls in one batch share its wall time, so throughput sums unique batch times
        batch_time = grp["latency_s"].groupby(np.arange(len(grp)) // batch_size).max().sum()
        summary.append(
            {
                "name": name,
                "model": entry.model,
                "description": entry.description,
                "price_in": entry.price_in,
                "price_out": entry.price_out,
                "latency_p50_s": float(grp["latency_s"].quantile(0.5)),
                "latency_p95_s": float(grp["latency_s"].quantile(0.95)),
                "tokens_per_s": float(grp["out_tokens"].sum() / batch_time) if batch_time else 0.0,
                "em": 100.0 * float(grp["em"].mean()),
                "f1": 100.0 * float(grp["f1"].mean()),
                "mean_cost": float(grp["cost"].mean()),
                "mean_in_tokens": float(grp["in_tokens"].mean()),
                "mean_out_tokens": float(grp["out_tokens"].mean()),
                "errors": int(grp["error"].notna().sum()),
                "n": len(grp),
            }
        )
    return pd.DataFrame(summary), calls


def descriptors_from_profile(
    profile: pd.DataFrame, cost_per_call: bool = False
) -> list[Descriptor]:
    """One descriptor per profiled model; ``cost_per_call`` adds its measured mean $ per call."""
    return [
        Descriptor(
            name=r["name"],
            description=r.get("description", "") or "",
            price_in=float(r["price_in"]),
            price_out=float(r["price_out"]),
            latency_p50_s=float(r["latency_p50_s"]),
            em=float(r["em"]),
            f1=float(r["f1"]),
            cost_per_call=float(r["mean_cost"]) if cost_per_call else None,
        )
        for r in profile.to_dict("records")
    ]
