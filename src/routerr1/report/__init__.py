"""Aggregate evaluation results into summary tables, a Pareto plot and AIQ scores.

Input: one parquet file per (method, benchmark), one row per question, as written by
`routerr1.evaluate` (columns `method`, `family`, `alpha`, `benchmark`, `qid`, `em`, `f1`,
`cost`, `pool_calls`, `invalid_actions`, `pool_errors`, plus the question, answers, prediction,
token counts and latency, which are kept in `eval_rows` but not summarized).

Outputs:
- a DuckDB file with `eval_rows` (every row, plus `source_file`), `summary` (one row per
  method and benchmark, plus an "average" pseudo-benchmark: the unweighted mean over the
  method's benchmarks, the paper's macro average) and `intervals` (paired-bootstrap intervals
  of every method against the single models, `bootstrap_intervals`);
- `summary.csv` (the summary with the interval columns) and `summary.md` (Table-1 style EM / F1
  grid, the Router-R1 alpha/cost sweep, the intervals with the claims they support, the routers
  placed against the pool's headroom, family AIQ, mean pool calls per method);
- a multipage PDF of EM against mean dollar cost per question, one page per benchmark.

A router trained with several seeds (``train.seeds``) has one row per question and seed; its
summary averages over the seeds (``n_seeds``), and ``n`` counts questions.

Units: `em` and `f1` in the summary are percentages; `cost` is mean dollars per question.
`unseen_calls` (calls to `pool_unseen` models per question) is set for unseen-model
evaluations only.

Modules, one concern each:

- `routerr1.report.aggregate`: the DuckDB load, validation and summary (`aggregate`, the entry
  point of ``workflow/scripts/aggregate.py``), writing the DuckDB file, csv and markdown;
- `routerr1.report.stats`: numbers over the summary: paired-bootstrap intervals against the single
  models (`bootstrap_intervals`), AIQ per family (`family_aiq`), the display order;
- `routerr1.report.markdown`: summary.md (`render_markdown`);
- `routerr1.report.plot`: pareto.pdf (`plot_pareto`).

The eval-row schema and the family and baseline names live in `routerr1.methods`; the frontier
and AIQ maths in `routerr1.frontier`, the resampling in `routerr1.bootstrap`.
"""
