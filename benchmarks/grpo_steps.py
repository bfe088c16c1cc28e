"""What each GRPO step sampled: first calls per benchmark, reward, EM and zero-spread groups.

    python benchmarks/grpo_steps.py results/train/alpha~0.0/seed~0/model [more routers ...]
    python benchmarks/grpo_steps.py logs/train_router/alpha~0.0/seed~0.log   # while it runs

Reads the ``routerr1_train.json`` that training writes beside each router (its ``history`` is
TRL's per-step log plus our ``router/*`` metrics), or the job's log, where TRL prints the same
dicts step by step, and prints one markdown table per router:

* the share of first calls to each pool model over the step's rollouts;
* per benchmark, the share of first calls to each model (``–`` where the step drew none);
* the mean reward, the training EM, and ``frac_reward_zero_std``: the share of groups whose
  samples all earned the same reward, so carried no advantage;
* the step's wall time, so a reader can tell a contended step.

Then the mean reward of the first and last 10 steps. Nothing is recomputed from the models.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

from routerr1.routing import NO_CALL

FIRST = "router/first/"


def step_rows(history: list[dict]) -> list[dict]:
    """The logged training steps (TRL also logs a final summary without ``reward``)."""
    return [h for h in history if "reward" in h]


def first_call_shares(row: dict) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(share per model over all rollouts, {benchmark: share per model}) of one step."""
    overall: dict[str, float] = {}
    per_benchmark: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        if not key.startswith(FIRST):
            continue
        parts = key.removeprefix(FIRST).split("/")
        if len(parts) == 1:
            overall[parts[0]] = float(value)
        else:
            per_benchmark.setdefault(parts[0], {})[parts[1]] = float(value)
    return overall, per_benchmark


def table(history: list[dict]) -> str:
    steps = step_rows(history)
    if not steps:
        return "no logged step yet"
    models = sorted({m for s in steps for m in first_call_shares(s)[0]} - {NO_CALL})
    benchmarks = sorted({b for s in steps for b in first_call_shares(s)[1]})
    labels = [f"m{i}" for i in range(1, len(models) + 1)]  # the names are long
    legend = "models: " + ", ".join(f"{k} = {m}" for k, m in zip(labels, models, strict=True))
    header = (
        ["step", "first calls " + " / ".join(labels)]
        + [f"{b} {' / '.join(labels)}" for b in benchmarks]
        + ["reward", "training EM", "zero-spread groups", "step s"]
    )
    lines = [legend, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(steps, 1):
        overall, per_benchmark = first_call_shares(row)
        cells = [str(i), " / ".join(f"{overall.get(m, 0.0):.2f}" for m in models)]
        for b in benchmarks:
            shares = per_benchmark.get(b, {})
            drawn = sum(shares.values()) > 0
            cells.append(" / ".join(f"{shares.get(m, 0.0):.2f}" for m in models) if drawn else "–")
        cells += [
            f"{float(row['reward']):+.3f}",
            f"{float(row.get('router/em', float('nan'))):.2f}",
            f"{float(row.get('frac_reward_zero_std', float('nan'))):.2f}",
            f"{float(row.get('step_time', float('nan'))):.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    rewards = [float(s["reward"]) for s in steps]
    window = min(10, len(rewards))
    first, last = sum(rewards[:window]) / window, sum(rewards[-window:]) / window
    lines.append("")
    lines.append(f"mean reward, first {window} steps {first:+.3f}, last {window} {last:+.3f}")
    return "\n".join(lines)


def logged_history(log_text: str) -> list[dict]:
    """The step dicts TRL printed into a training log (between progress-bar redraws)."""
    history = []
    for match in re.finditer(r"\{'loss': [^{}]*\}", log_text):
        row = ast.literal_eval(match.group(0))
        history.append({k: float(v) if isinstance(v, str) else v for k, v in row.items()})
    return history


def read_history(path: Path) -> list[dict]:
    """``history`` of a router folder's training summary, or of a training log file."""
    if path.is_file():
        return logged_history(path.read_text(errors="replace"))
    summary = path / "routerr1_train.json"
    if not summary.is_file():
        raise FileNotFoundError(f"{path}: no routerr1_train.json (is the training finished?)")
    return json.loads(summary.read_text())["history"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "routers", nargs="+", type=Path, help="trained router folders or training logs"
    )
    args = parser.parse_args(argv)
    for path in args.routers:
        try:
            history = read_history(path)
        except FileNotFoundError as err:
            print(err, file=sys.stderr)
            return 2
        print(f"## {path}\n")
        print(table(history))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
