"""Descriptors: what the router knows of each pool model, from the measured profile."""

from __future__ import annotations

import json

import pandas as pd

from routerr1.prompt import descriptor_from_mapping, render_router_prompt
from routerr1.stages import pool as stages

PROFILE = pd.DataFrame(
    [
        {
            "name": "Qwen-1.5B",
            "description": "Answers directly.",
            "price_in": 0.1,
            "price_out": 0.2,
            "latency_p50_s": 0.5,
            "em": 10.0,
            "f1": 15.0,
            "mean_cost": 9.7e-6,
        },
        {
            "name": "Qwen-1.5B-Reason",
            "description": "Reasons step by step.",
            "price_in": 0.1,
            "price_out": 0.2,
            "latency_p50_s": 4.0,
            "em": 16.0,
            "f1": 20.0,
            "mean_cost": 2.4e-5,
        },
    ]
)


def test_cost_per_call_tells_apart_entries_with_the_same_token_prices(tmp_path):
    profile = tmp_path / "profile.parquet"
    PROFILE.to_parquet(profile)
    plain = stages.describe(str(profile), str(tmp_path / "plain.json"))
    with_cost = stages.describe(str(profile), str(tmp_path / "cost.json"), cost_per_call=True)
    # the default descriptors are unchanged: same prices, no per-call figure
    assert [d["cost_per_call"] for d in plain] == [None, None]
    assert "per call." not in plain[0]["text"].split("latency")[0]
    assert [d["cost_per_call"] for d in with_cost] == [9.7e-6, 2.4e-5]
    assert "Mean cost $9.7e-06 per call." in with_cost[0]["text"]
    assert "$2.4e-05 per call" in with_cost[1]["compressed"]
    # the file round-trips into the descriptors the router prompt is built from
    loaded = [descriptor_from_mapping(d) for d in json.loads((tmp_path / "cost.json").read_text())]
    prompt = render_router_prompt("What is 2+3?", loaded, compressed=True)
    assert "Qwen-1.5B: $0.1/$0.2 per 1M in/out tokens, $9.7e-06 per call" in prompt
    assert "Qwen-1.5B-Reason: $0.1/$0.2 per 1M in/out tokens, $2.4e-05 per call" in prompt
    old = [descriptor_from_mapping(d) for d in json.loads((tmp_path / "plain.json").read_text())]
    assert "per call," not in render_router_prompt("q", old, compressed=True)
