from pathlib import Path

import pandas as pd

from routerr1.report import plot_pareto
from routerr1.workflow import snakemake_job

with snakemake_job(snakemake):
    plot_pareto(pd.read_csv(snakemake.input.csv), Path(snakemake.output[0]))
