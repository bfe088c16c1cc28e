"""benchmarks/grpo_steps.py: the per-step table read from a router's training summary."""

from __future__ import annotations

import json

from conftest import benchmark_module

grpo_steps = benchmark_module("grpo_steps")


def _step(reward: float, reason_share: float, nq_drawn: bool) -> dict:
    return {
        "reward": reward,
        "router/em": reward,
        "frac_reward_zero_std": 0.5,
        "step_time": 90.0,
        "router/first/Cheap": 1 - reason_share,
        "router/first/Reason": reason_share,
        "router/first/gsm8k/Cheap": 0.0,
        "router/first/gsm8k/Reason": 1.0,
        "router/first/nq/Cheap": 1.0 if nq_drawn else 0.0,
        "router/first/nq/Reason": 0.0,
    }


def test_the_table_has_a_row_per_step_with_shares_and_reward_windows(tmp_path, capsys):
    history = [_step(0.25, 0.5, True), _step(0.75, 1.0, False), {"train_runtime": 3.0}]
    folder = tmp_path / "router"
    folder.mkdir()
    (folder / "routerr1_train.json").write_text(json.dumps({"history": history}))
    assert grpo_steps.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "m1 = Cheap, m2 = Reason" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 2  # the summary entry without a reward is not a step
    assert rows[0].startswith("| 1 | 0.50 / 0.50 | 0.00 / 1.00 | 1.00 / 0.00 | +0.250 |")
    assert rows[1].startswith("| 2 | 0.00 / 1.00 | 0.00 / 1.00 | – | +0.750 |")  # no nq drawn
    assert "first 2 steps +0.500, last 2 +0.500" in out


def test_an_unfinished_router_is_refused_by_name(tmp_path, capsys):
    assert grpo_steps.main([str(tmp_path)]) == 2
    assert "no routerr1_train.json" in capsys.readouterr().err


def test_a_running_jobs_log_gives_the_same_rows(tmp_path, capsys):
    """TRL prints each step's dict, values as strings, between progress-bar redraws."""
    steps = [_step(0.25, 0.5, True), _step(0.75, 1.0, False)]
    printed = [repr({"loss": "0.01", **{k: str(v) for k, v in s.items()}}) for s in steps]
    log = tmp_path / "seed~0.log"
    log.write_text(
        "  7%|7 | 1/15 [01:42<23:54, 102.45s/it]"
        + printed[0]
        + "\r 13%|# | 2/15 [03:20<21:40]"
        + printed[1]
        + "\r 13%|# | 2/15 [03:21<21:41]\n"
    )
    assert grpo_steps.main([str(log)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 |")]
    assert rows == ["| 2 | 0.00 / 1.00 | 0.00 / 1.00 | – | +0.750 | 0.75 | 0.50 | 90 |"]
