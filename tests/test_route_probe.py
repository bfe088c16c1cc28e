"""benchmarks/route_probe.py: the route probabilities a policy gives each pool model."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import benchmark_module

from routerr1.train import load_policy, random_policy

route_probe = benchmark_module("route_probe")
train_step = benchmark_module("train_step")


def test_continuation_logprob_equals_an_unbatched_forward(smollm2_dir, tmp_path):
    folder = random_policy(train_step.shape_file("tiny-qwen2"), smollm2_dir, tmp_path / "p")
    model, tok = load_policy(folder, "float32")
    model.eval()
    prefix = "<think>This is a single-fact question. Let me ask"
    endings = [" Gemma-3-270M for", " Qwen2.5-Coder-1.5B-Reason for"]  # different lengths
    got = route_probe.continuation_logprob(model, tok, prefix, endings)
    head = tok(prefix, add_special_tokens=False).input_ids
    for ending, value in zip(endings, got, strict=True):
        tail = tok(ending, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([head + tail])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        want = sum(float(logp[len(head) + i - 1, t]) for i, t in enumerate(tail))
        assert value == pytest.approx(want, abs=1e-4)  # the shorter ending was padded
    assert got[0] != pytest.approx(got[1])


def test_kind_distance_is_total_variation_between_benchmarks():
    same = pd.DataFrame({"A": [0.5, 0.5], "B": [0.5, 0.5]}, index=["gsm8k", "nq"])
    assert route_probe.kind_distance(same) == pytest.approx(0.0)
    apart = pd.DataFrame(
        {"A": [1.0, 0.0, 0.5], "B": [0.0, 1.0, 0.5]}, index=["gsm8k", "nq", "hotpotqa"]
    )
    assert route_probe.kind_distance(apart) == pytest.approx(1.0)  # gsm8k against nq
    assert route_probe.kind_distance(same.iloc[:1]) == 0  # one benchmark: nothing to compare


def test_a_missing_policy_folder_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        route_probe.main([str(tmp_path / "checkpoint-5")])
    err = capsys.readouterr().err
    assert "no policy folder" in err and "checkpoint-5" in err


def test_each_thought_is_split_where_the_warm_start_writes_the_name():
    from routerr1.warmstart import FIRST_THOUGHTS

    opening = "This is an arithmetic word problem. "
    for template in FIRST_THOUGHTS:
        prefix, gap, following = route_probe.split_thought(template, opening)
        written = opening + template.format(model="Gemma-3-270M")
        # the prefix, the name with its space, and the next word rebuild the warm start's text
        assert written.startswith(prefix + gap + "Gemma-3-270M" + following)
        assert not prefix.endswith(" ") and following.strip()
    prefix, gap, following = route_probe.split_thought("{model} should know.", "")
    assert (prefix, gap, following) == ("", "", " should")
