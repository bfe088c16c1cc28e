"""``routerr1 ask "question"``: one question through a trained router, its trajectory printed.

    routerr1 ask "who wrote hamlet" [--router router-r1@a0.5] [--config config/config.yaml]

The router and the pool are loaded in this process the way ``routerr1 serve`` loads them, and
the question is answered by the same code (``RouterService.run_batch``, i.e. evaluation's
``route_questions``, greedy). Each step is printed as the rollout makes it: what the router
thought, which model it asked what, what that model answered with its tokens and dollars, and
finally the answer with the request's totals. ``--router`` picks a router by folder or name;
it may be left out when only one trained router exists.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routerr1.router_service import Answer, Job, load_service, select_routers
from routerr1.serve import add_service_arguments


def _dollars(x: float) -> str:
    return f"${x:.8f}".rstrip("0").rstrip(".") if x else "$0"


class TrajectoryPrinter:
    """Rich renderings of served steps, printed as they come."""

    def __init__(self, console) -> None:
        self.console = console

    def step(self, step: dict[str, Any]) -> None:
        from rich.text import Text

        kind = step["type"]
        line = Text()
        if kind == "think":
            line.append("think   ", style="bold blue")
            line.append(step["text"], style="italic")
        elif kind == "search":
            line.append("ask     ", style="bold magenta")
            line.append(f"{step['model'] or '?'}", style="bold")
            line.append(f": {step['query']}")
            if step.get("error"):
                line.append(f"  (invalid: {step['error']})", style="red")
        elif kind == "information" and step.get("source") == "pool":
            line.append("reply   ", style="bold green")
            line.append(f"{step['model']}", style="bold")
            line.append(f": {step['text']}\n        ")
            costs = (
                f"{step['in_tokens']} in + {step['out_tokens']} out tokens, "
                f"{_dollars(step['cost_usd'])}, {step['latency_s']:.2f} s"
            )
            line.append(costs + (" (cached)" if step["cached"] else ""), style="dim")
            if step.get("error"):
                line.append(f"\n        failed: {step['error']}", style="red")
        elif kind == "information":
            line.append("note    ", style="bold yellow")
            line.append(step["text"], style="yellow")
        elif kind == "answer":
            line.append("answer  ", style="bold cyan")
            line.append(step["text"])
        else:
            line.append("text    ", style="dim")
            line.append(step["text"], style="dim")
        self.console.print(line)

    def header(self, name: str, card: dict[str, Any], question: str) -> None:
        run = card["run_id"] or "unknown"
        pool = ", ".join(m["name"] for m in card["pool"])
        self.console.rule(f"[bold]{name}[/]  α={card['alpha']:g}  run {run}")
        self.console.print(f"[dim]pool: {pool}[/]")
        self.console.print(f"[bold]question[/] {question}")

    def footer(self, answer: Answer) -> None:
        from rich.panel import Panel

        tr = answer.trajectory
        self.console.print(Panel(tr.answer if tr.answer is not None else "(no answer)",
                                 title="final answer", expand=False))  # fmt: skip
        s = answer.summary()
        self.console.print(
            f"{s['pool_calls']} pool call(s), {tr.in_tokens} in + {tr.out_tokens} out tokens, "
            f"{_dollars(s['cost_usd'])}; {s['pool_errors']} failed, "
            f"{s['invalid_searches']} invalid, {s['refused_calls']} refused; "
            f"{s['rollout_s']:.1f} s"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="routerr1 ask", description="answer one question with a trained router"
    )
    parser.add_argument("question")
    add_service_arguments(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)

    import torch
    from rich.console import Console

    from routerr1.config import ConfigError, load_config
    from routerr1.pool.base import BackendStartError
    from routerr1.serving import APIError

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    console = Console(highlight=False)
    try:
        cfg = load_config(args.config)
        torch.set_num_threads(int(cfg.get("threads", 2)))
        routers = select_routers(cfg, args.router, args.results)
        if len(routers) > 1:
            names = ", ".join(r.name for r in routers)
            raise ValueError(f"--router: pick one of {names}")
        descriptors = args.descriptors or Path(args.results) / "pool" / "descriptors.json"
        service = load_service(
            cfg,
            routers,
            descriptors,
            args.models_root,
            max_pool_calls=args.max_pool_calls,
            max_cost_usd=args.max_cost_usd,
        )
    except (ConfigError, ValueError, OSError, BackendStartError) as err:
        console.print(f"ask: {err}", markup=False)
        return 2
    printer = TrajectoryPrinter(console)
    name = routers[0].name
    try:
        service.check_question(name, args.question)
        budget = service.budget(None, None)
        printer.header(name, service.model_card(name), args.question)
        job = Job(name, args.question, budget, on_step=printer.step)
        service.run_batch([job])
        printer.footer(job.future.result())
    except APIError as err:
        console.print(f"ask: {err.message}", markup=False)
        return 2
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
