"""Time and peak memory per rule of a finished run, from Snakemake's `benchmark:` files.

    python benchmarks/pipeline_times.py [results/benchmarks]

Prints one row per job (wall seconds, peak RSS) plus totals, as a markdown table, after the
machines the jobs ran on (their logs' `hardware:` lines: CPU, cpu capability, native bf16).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from routerr1.precision import hardware_header


def collect(root: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted(root.rglob("*.tsv")):
        df = pd.read_csv(tsv, sep="\t")
        rows.append(
            {
                "job": str(tsv.relative_to(root).with_suffix("")),
                "wall_s": float(df["s"].iloc[-1]),
                "max_rss_gib": float(pd.to_numeric(df["max_rss"], errors="coerce").iloc[-1]) / 1024,
            }
        )
    if not rows:
        raise SystemExit(f"no benchmark files under {root}; run the pipeline first")
    return pd.DataFrame(rows)


def job_hardware(logs: Path = Path("logs")) -> list[str]:
    """The machines the jobs ran on, as each job's log names it (routerr1.workflow)."""
    seen: dict[str, None] = {}
    for log in sorted(logs.rglob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if " hardware: " in line:
                seen[line.split(" hardware: ", 1)[1].strip()] = None
    return list(seen)


def main(argv: list[str]) -> None:
    root = Path(argv[1] if len(argv) > 1 else "results/benchmarks")
    df = collect(root)
    print(f"read on: {hardware_header()}")
    for hw in job_hardware():
        print(f"jobs ran on: {hw}")
    print("| job | wall s | peak RSS GiB |\n|---|---:|---:|")
    for r in df.itertuples():
        print(f"| {r.job} | {r.wall_s:.1f} | {r.max_rss_gib:.2f} |")
    print(f"| **sum of jobs** | {df.wall_s.sum():.1f} | max {df.max_rss_gib.max():.2f} |")


if __name__ == "__main__":
    main(sys.argv)
