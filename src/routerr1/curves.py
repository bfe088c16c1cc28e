"""Learning curves of the GRPO runs, read back from the MLflow tracking store.

Each training run (tag ``stage=train``, one per α and training seed) logs per-step metrics
through TRL's MLflow callback and the router reward (``reward``, ``router/em``,
``router/pool_calls``, ...). This module fetches their histories with
``MlflowClient.get_metric_history``, keeps the latest run of each ``routerr1.key`` (a rerun
replaces the old curve), and writes:

* a tidy CSV: ``alpha, seed, step, metric, value`` (``seed``: the run's training seed, empty for
  runs logged before seeds were tagged);
* a PDF with one panel per metric and one colour per α (one line per seed): the raw per-step
  values faint, a trailing moving average over ``window`` steps on top (a step sees only 4-32
  trajectories, so one step is noise);
* a markdown table (`learning_gain`): per α, the mean reward of the first and the last
  ``window`` steps, their gain, and the seed-to-seed spread the gain has to beat; and the same
  for each step's share of first calls per benchmark and pool model (``router/first/...``, logged
  by the router reward): whether training moved the routing; and whether a run collapsed onto
  one route (``route_collapse``).

    routerr1 curves                         # results/mlflow.db -> results/learning_curves.pdf
    routerr1 curves --window 10 --out curves.pdf --csv curves.csv
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from routerr1.io import atomic_path
from routerr1.tracking import RUN_KEY_TAG, add_store_arguments, missing_store

# (metric key, panel title): what the evaluation issue asks to see per step
CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("reward", "reward (format + outcome - alpha * cost)"),
    ("router/em", "exact match of the final answer"),
    ("router/format_ok", "well-formed trajectories"),
    ("router/pool_calls", "pool calls per trajectory"),
    ("router/cost", "pool cost per trajectory ($)"),
    # why a curve stays flat: groups whose rewards are all equal give zero advantages, and a
    # policy whose entropy collapsed samples one route (TRL's own metrics)
    ("frac_reward_zero_std", "share of groups with zero reward spread (no advantage)"),
    ("entropy", "policy entropy per token"),
)
COLUMNS = ["alpha", "seed", "step", "metric", "value"]
# per-step shares of first calls: router/first/<model> and router/first/<benchmark>/<model>
ROUTE_SHARE_PREFIX = "router/first/"


def train_runs(tracking_uri: str, experiment: str = "routerr1") -> pd.DataFrame:
    """The latest finished training run per ``routerr1.key``: run_id, alpha, seed, key."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        raise ValueError(f"experiment: no experiment named {experiment!r} at {tracking_uri}")
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string="tags.stage = 'train' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="pandas",
    )
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "alpha", "seed", "key"])
    runs = runs.rename(columns={f"tags.{RUN_KEY_TAG}": "key", "tags.alpha": "alpha"})
    # runs of one alpha differ by training seed (train.seeds); older runs have no seed tag
    seed_tag = runs["tags.seed"] if "tags.seed" in runs.columns else pd.Series(None, runs.index)
    runs["seed"] = pd.to_numeric(seed_tag, errors="coerce").astype("Int64")
    runs = runs.drop_duplicates("key", keep="first")  # newest first: a rerun wins
    bad = runs[pd.to_numeric(runs["alpha"], errors="coerce").isna()]
    if not bad.empty:
        raise ValueError(f"run {bad['run_id'].iloc[0]}: tag 'alpha' is not a number")
    runs["alpha"] = runs["alpha"].astype(float)
    runs = runs[["run_id", "alpha", "seed", "key"]]
    return runs.sort_values(["alpha", "seed"]).reset_index(drop=True)


def curves_from_mlflow(
    tracking_uri: str,
    experiment: str = "routerr1",
    metrics: Sequence[str] = tuple(m for m, _ in CURVE_METRICS),
    prefixes: Sequence[str] = (ROUTE_SHARE_PREFIX,),
) -> pd.DataFrame:
    """Per-step values of ``metrics``, and of every logged metric that starts with one of
    ``prefixes``, for every training run, tidy (see ``COLUMNS``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    rows = []
    for run in train_runs(tracking_uri, experiment).itertuples(index=False):
        logged = client.get_run(run.run_id).data.metrics
        found = sorted(k for k in logged if k.startswith(tuple(prefixes)) and k not in metrics)
        for metric in [*metrics, *found]:
            for m in client.get_metric_history(run.run_id, metric):
                rows.append((run.alpha, run.seed, int(m.step), metric, float(m.value)))
    out = pd.DataFrame(rows, columns=COLUMNS).astype({"seed": "Int64"})
    # a resumed run may log a step twice: keep the last value
    out = out.drop_duplicates(["alpha", "seed", "step", "metric"], keep="last")
    return out.sort_values(["metric", "alpha", "seed", "step"]).reset_index(drop=True)


def smooth(values: pd.Series, window: int) -> pd.Series:
    """Trailing moving average (the first steps average what they have)."""
    if window < 1:
        raise ValueError(f"window: {window!r} must be at least 1")
    return values.rolling(window, min_periods=1).mean()


def plot_curves(curves: pd.DataFrame, pdf_path: str | Path, window: int = 5) -> None:
    """One page, one panel per metric in ``CURVE_METRICS`` order, one line per α."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    missing = sorted(set(COLUMNS) - {"seed"} - set(curves.columns))
    if missing:
        raise ValueError(f"curves: missing column(s) {', '.join(missing)}")
    if "seed" not in curves.columns:  # a CSV written before seeds: one run per alpha
        curves = curves.assign(seed=pd.NA)
    curves = curves.assign(seed=curves["seed"].astype("Int64").fillna(-1))
    titles = dict(CURVE_METRICS)
    metrics = [m for m in titles if m in set(curves["metric"])]
    # the route shares (a dozen per run) are tabled by route_shift, not drawn
    others = {m for m in curves["metric"] if not m.startswith(ROUTE_SHARE_PREFIX)}
    metrics += sorted(others - set(metrics))
    if not metrics:  # an empty frame, or route shares only
        raise ValueError("curves: no training metrics to plot (did any training run finish?)")
    fig = Figure(figsize=(5.0 * min(3, len(metrics)), 3.6 * ((len(metrics) + 2) // 3)))
    alphas = sorted(curves["alpha"].unique())
    cmap = colormaps["viridis"]
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot((len(metrics) + 2) // 3, min(3, len(metrics)), k + 1)
        for j, alpha in enumerate(alphas):
            mine = curves[(curves["metric"] == metric) & (curves["alpha"] == alpha)]
            seeds = sorted(mine["seed"].unique())
            color = cmap(0.0 if len(alphas) == 1 else 0.85 * j / (len(alphas) - 1))
            for i, seed in enumerate(seeds):
                part = mine[mine["seed"] == seed].sort_values("step")
                ax.plot(part["step"], part["value"], color=color, alpha=0.25, linewidth=0.8)
                label = f"α = {alpha:g}" + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")
                ax.plot(
                    part["step"],
                    smooth(part["value"], window),
                    color=color,
                    linewidth=1.8,
                    label=label if i == 0 else None,
                )
        ax.set_title(titles.get(metric, metric), fontsize=9)
        ax.set_xlabel("GRPO step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8, frameon=False)
    fig.suptitle(f"Router training curves (faint: per step; bold: mean of the last {window})")
    fig.tight_layout()
    pdf_path = Path(pdf_path)
    with atomic_path(pdf_path) as tmp, PdfPages(tmp, metadata={"CreationDate": None}) as pdf:
        pdf.savefig(fig)


GAIN_COLUMNS = ["alpha", "seeds", "steps", "first", "last", "gain", "seed_spread", "learns"]


def learning_gain(curves: pd.DataFrame, metric: str = "reward", window: int = 10) -> pd.DataFrame:
    """Per α: did the ``metric`` rise by more than the seeds disagree?

    Per seed, ``first`` / ``last`` are the means of its first and last ``window`` steps (fewer
    when a run is shorter than two windows: then the halves). ``gain`` is the mean over seeds of
    last − first; ``seed_spread`` is the range (max − min) of the seeds' ``last`` values, 0 with
    one seed. ``learns`` is gain > seed_spread, the test the routing issue sets; with one seed
    it only says the curve rose.
    """
    if window < 1:
        raise ValueError(f"window: {window!r} must be at least 1")
    rows = []
    mine = curves[curves["metric"] == metric]
    for alpha, runs in mine.groupby("alpha", sort=True):
        firsts, lasts, steps = [], [], []
        for _, run in runs.groupby(runs["seed"].astype("Int64").fillna(-1), sort=True):
            values = run.sort_values("step")["value"].to_numpy(dtype=float)
            if len(values) < 2:
                continue
            k = min(window, len(values) // 2)
            firsts.append(values[:k].mean())
            lasts.append(values[-k:].mean())
            steps.append(len(values))
        if not firsts:
            continue
        gain = float(sum(b - a for a, b in zip(firsts, lasts, strict=True)) / len(firsts))
        spread = float(max(lasts) - min(lasts))
        rows.append(
            {
                "alpha": float(alpha),
                "seeds": len(firsts),
                "steps": min(steps),
                "first": float(sum(firsts) / len(firsts)),
                "last": float(sum(lasts) / len(lasts)),
                "gain": gain,
                "seed_spread": spread,
                "learns": gain > spread,
            }
        )
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)


ROUTE_SHIFT_COLUMNS = ["benchmark", "model", *GAIN_COLUMNS]


def route_shift(curves: pd.DataFrame, window: int = 10) -> pd.DataFrame:
    """``learning_gain`` of every route share (``router/first/[benchmark/]model``): per α,
    benchmark (``all`` for the step's whole batch) and model, the share of first calls in the
    first and the last ``window`` steps. A share that moves by more than the seeds disagree is
    routing that GRPO learned (or unlearned), whatever the reward did."""
    shares = sorted(m for m in curves["metric"].unique() if m.startswith(ROUTE_SHARE_PREFIX))
    parts = []
    for metric in shares:
        benchmark, _, model = metric.removeprefix(ROUTE_SHARE_PREFIX).rpartition("/")
        gain = learning_gain(curves, metric=metric, window=window)
        parts.append(gain.assign(benchmark=benchmark or "all", model=model))
    if not parts:
        return pd.DataFrame(columns=ROUTE_SHIFT_COLUMNS)
    out = pd.concat(parts, ignore_index=True)[ROUTE_SHIFT_COLUMNS]
    return out.sort_values(["alpha", "benchmark", "model"]).reset_index(drop=True)


def _markdown_section(
    title: str, prose: str, columns: Sequence[str], align: str, rows: Sequence[Sequence]
) -> str:
    """A ``# title``, a paragraph, and a table (``align``: one of ``l``/``r`` per column); an
    empty table gets one row saying so."""
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    head = "| " + " | ".join(columns) + " |"
    lines = [f"# {title}", "", *textwrap.wrap(prose, 90), "", head, rule]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if not rows:
        lines.append("| (none) |" + " |" * (len(columns) - 1))
    return "\n".join(lines) + "\n"


def shift_markdown(shift: pd.DataFrame, window: int = 10, min_share: float = 0.05) -> str:
    """``route_shift`` as a markdown section (routes under ``min_share`` before and after left
    out)."""
    kept = shift[(shift["first"] >= min_share) | (shift["last"] >= min_share)]
    rows = []
    for r in kept.itertuples(index=False):
        moved = "yes" if abs(r.gain) > r.seed_spread else "no"
        if r.seeds < 2:
            moved += " (one seed)"
        rows.append(
            (
                f"{r.alpha:g}",
                r.benchmark,
                r.model,
                r.seeds,
                f"{r.first:.2f}",
                f"{r.last:.2f}",
                f"{r.gain:+.2f}",
                f"{r.seed_spread:.2f}",
                moved,
            )
        )
    return _markdown_section(
        "Did training move the routing?",
        (
            "Per α, benchmark and pool model: the share of first calls in the first and the "
            f"last {window} GRPO steps (sampled training rollouts), averaged over seeds, and the "
            "range of the seeds' last shares. A route moved only where the change exceeds that "
            "spread."
        ),
        ["α", "benchmark", "model", "seeds", "first", "last", "change", "seed spread", "moved"],
        "rllrrrrrl",
        rows,
    )


COLLAPSE_COLUMNS = ["alpha", "seed", "model", "from_step", "to_step", "steps", "zero_spread"]


def _longest_stretch(held: Sequence[bool]) -> tuple[int, int]:
    """(start index, length) of the longest run of True in ``held``; (0, 0) if none."""
    best, start = (0, 0), None
    for i, on in enumerate([*held, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if i - start > best[1]:
                best = (start, i - start)
            start = None
    return best


def route_collapse(curves: pd.DataFrame, share: float = 0.95, min_steps: int = 3) -> pd.DataFrame:
    """Runs whose sampled rollouts collapsed onto one route: one model (or ``no_call``) took at
    least ``share`` of a step's first calls for ``min_steps`` or more steps in a row. Then every
    group is one model answering alike, its rewards have no spread, and GRPO has no advantage to
    leave that route with. Per α and seed, the longest such stretch, and the mean share of
    zero-spread groups (``frac_reward_zero_std``) over it (NaN where not logged)."""
    if not 0.5 < share <= 1.0:
        raise ValueError(f"share: {share!r} must be in (0.5, 1]")
    if min_steps < 1:
        raise ValueError(f"min_steps: {min_steps!r} must be at least 1")
    curves = curves.assign(seed=curves["seed"].astype("Int64").fillna(-1))  # -1: no seed tag
    route = curves["metric"].str.removeprefix(ROUTE_SHARE_PREFIX)
    # the whole batch's shares only: router/first/<model>, not router/first/<benchmark>/<model>
    overall = curves[curves["metric"].str.startswith(ROUTE_SHARE_PREFIX) & ~route.str.contains("/")]
    rows = []
    for (alpha, seed), run in overall.groupby(["alpha", "seed"], sort=True):
        stretches = []
        for metric, shares in run.groupby("metric"):
            shares = shares.sort_values("step")
            start, n = _longest_stretch(list(shares["value"] >= share))
            steps = shares["step"].to_numpy()
            if n >= min_steps:
                stretches.append((n, metric, int(steps[start]), int(steps[start + n - 1])))
        if not stretches:
            continue
        n, metric, first, last = max(stretches)
        mine = curves[
            (curves["metric"] == "frac_reward_zero_std")
            & (curves["alpha"] == alpha)
            & (curves["seed"] == seed)
            & curves["step"].between(first, last)
        ]
        rows.append(
            {
                "alpha": float(alpha),
                "seed": None if seed == -1 else int(seed),
                "model": metric.removeprefix(ROUTE_SHARE_PREFIX),
                "from_step": first,
                "to_step": last,
                "steps": n,
                "zero_spread": float(mine["value"].mean()) if len(mine) else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=COLLAPSE_COLUMNS).astype({"seed": "Int64"})


def collapse_markdown(collapse: pd.DataFrame, share: float = 0.95, min_steps: int = 3) -> str:
    """``route_collapse`` as a markdown section."""
    rows = [
        (
            f"{r.alpha:g}",
            "" if pd.isna(r.seed) else r.seed,
            r.model,
            r.steps,
            r.from_step,
            r.to_step,
            "" if pd.isna(r.zero_spread) else f"{r.zero_spread:.2f}",
        )
        for r in collapse.itertuples(index=False)
    ]
    return _markdown_section(
        "Did a run collapse onto one route?",
        (
            f"A run collapsed where one route (a pool model, or no call) took at least {share:.0%} "
            f"of a step's first calls for {min_steps} or more steps in a row (its longest such "
            "stretch below). Its groups "
            "then have no reward spread, so GRPO cannot leave that route: a constant router, "
            "whatever it scores."
        ),
        ["α", "seed", "route", "steps", "from", "to", "zero-spread groups"],
        "rrlrrrr",
        rows,
    )


def gain_markdown(gain: pd.DataFrame, metric: str = "reward", window: int = 10) -> str:
    """`learning_gain` as a markdown section."""
    rows = []
    for r in gain.itertuples(index=False):
        learns = "yes" if r.learns else "no"
        if r.seeds < 2:
            learns += " (one seed: no spread to beat)"
        rows.append(
            (
                f"{r.alpha:g}",
                r.seeds,
                r.steps,
                f"{r.first:+.3f}",
                f"{r.last:+.3f}",
                f"{r.gain:+.3f}",
                f"{r.seed_spread:.3f}",
                learns,
            )
        )
    return _markdown_section(
        f"Did training raise the {metric}?",
        (
            f"Per α: the mean {metric} of the first and the last {window} GRPO steps (the halves "
            "of a shorter run), averaged over seeds, and the range of the seeds' last values. The "
            "curve counts as learning only where the gain exceeds that seed-to-seed spread."
        ),
        ["α", "seeds", "steps", "first", "last", "gain", "seed spread", "learns"],
        "rrrrrrrl",
        rows,
    )


def write_curves(
    tracking_uri: str,
    pdf_path: str | Path,
    csv_path: str | Path,
    experiment: str = "routerr1",
    window: int = 5,
    gain_path: str | Path | None = None,
    gain_window: int = 10,
) -> pd.DataFrame:
    """Fetch the curves from MLflow and write the CSV, the PDF and (``gain_path``) the
    learning-gain table, each atomically."""
    curves = curves_from_mlflow(tracking_uri, experiment)
    with atomic_path(csv_path) as tmp:
        curves.to_csv(tmp, index=False)
    plot_curves(curves, pdf_path, window)
    if gain_path is not None:
        text = gain_markdown(learning_gain(curves, window=gain_window), window=gain_window)
        if curves["metric"].str.startswith(ROUTE_SHARE_PREFIX).any():
            text += "\n" + shift_markdown(route_shift(curves, gain_window), gain_window)
            text += "\n" + collapse_markdown(route_collapse(curves))
        with atomic_path(gain_path) as tmp:
            Path(tmp).write_text(text)
    return curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="routerr1 curves",
        description="Plot the GRPO learning curves (reward, EM, calls per step) from MLflow.",
    )
    add_store_arguments(parser)
    parser.add_argument("--out", default="results/learning_curves.pdf", help="PDF to write")
    parser.add_argument("--csv", default="results/learning_curves.csv", help="CSV to write")
    parser.add_argument("--window", type=int, default=5, help="moving-average steps")
    parser.add_argument(
        "--gain", default=None, help="also write the first-vs-last-steps reward table here (.md)"
    )
    args = parser.parse_args(argv)
    if error := missing_store(args.tracking_uri):
        print(error, file=sys.stderr)
        return 2
    try:
        curves = write_curves(
            args.tracking_uri, args.out, args.csv, args.experiment, args.window, args.gain
        )
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    n_runs = len(curves[["alpha", "seed"]].drop_duplicates())  # one run per α and seed
    print(f"{n_runs} training run(s), {len(curves)} points -> {args.out}, {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
