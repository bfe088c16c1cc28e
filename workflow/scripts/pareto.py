from pathlib import Path

import pandas as pd

from routerr1.report.plot import plot_pareto
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    headroom = [pd.read_csv(p) for p in snakemake.input.headroom]  # none without single models
    plot_pareto(
        pd.read_csv(snakemake.input.csv),
        Path(snakemake.output[0]),
        headroom=headroom[0] if headroom else None,
    )
