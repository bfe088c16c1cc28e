"""`routerr1 <command>`: small entry points beside the Snakemake pipeline."""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module with a main(argv) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("routerr1.cli", "validate a config; print its values and resolved precisions"),
    "runs": ("routerr1.runs", "compare runs from the MLflow tracking store"),
    "curves": ("routerr1.curves", "plot GRPO learning curves from the MLflow tracking store"),
    "serve-pool": ("routerr1.pool.server", "serve the pool over the OpenAI chat API"),
    "serve": ("routerr1.serve", "serve trained routers over the OpenAI chat API"),
    "ask": ("routerr1.ask", "answer one question with a trained router, showing its trajectory"),
}


def check_config(argv: list[str]) -> int:
    import yaml

    from routerr1.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="routerr1 check-config")
    parser.add_argument("config", nargs="?", default="config/config.yaml")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    print(yaml.safe_dump(cfg, sort_keys=False))
    print(precision_report(cfg))
    return 0


def precision_report(cfg) -> str:
    """What every ``auto`` precision of ``cfg`` resolves to on this machine, and why."""
    from routerr1.precision import probe, resolve_config

    lines = [f"# precision on this machine: {probe().describe()}"]
    for name, resolved in resolve_config(cfg).items():
        lines.append(f"{name}: {resolved.value} ({resolved.reason})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: routerr1 <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<14}{help_text}")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "check-config":
        return check_config(rest)
    module = importlib.import_module(COMMANDS[cmd][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
