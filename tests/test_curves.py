"""Tests for `routerr1 curves`: per-step training metrics from a real MLflow SQLite store."""

from __future__ import annotations

import time

import mlflow
import pandas as pd
import pytest

from routerr1.curves import (
    COLUMNS,
    collapse_markdown,
    curves_from_mlflow,
    gain_markdown,
    learning_gain,
    main,
    plot_curves,
    route_collapse,
    route_shift,
    shift_markdown,
    smooth,
    write_curves,
)
from routerr1.tracking import RUN_KEY_TAG, ensure_experiment


def log_train(alpha, rewards, status="FINISHED", key=None, stage="train", seed=None):
    tags = {RUN_KEY_TAG: key or f"train/alpha~{alpha}", "stage": stage, "alpha": str(alpha)}
    if seed is not None:
        tags["seed"] = str(seed)
    with mlflow.start_run(run_name=f"train alpha={alpha}", tags=tags):
        for step, r in enumerate(rewards, start=1):
            mlflow.log_metrics(
                {"reward": r, "router/em": r / 2, "router/pool_calls": 1.0 + alpha, "loss": 0.1},
                step=step,
            )
        if status != "FINISHED":
            mlflow.end_run(status=status)
    time.sleep(0.01)  # distinct start times: the latest run of a key wins


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{db}"
    mlflow.set_experiment(experiment_id=ensure_experiment(uri, "routerr1"))
    log_train(0.0, [9.0, 9.0])  # superseded by the rerun below
    log_train(0.0, [0.1, 0.3, 0.5])
    log_train(0.9, [-0.2, 0.0])
    log_train(0.9, [0.4, 0.6], key="train/alpha~0.9/seed~1", seed=1)  # a second seed
    log_train(0.5, [5.0], status="FAILED")  # an unfinished run draws no curve
    log_train(0.0, [7.0], stage="evaluate", key="eval/router")  # not a training run
    return uri


def test_curves_take_the_latest_finished_training_run_per_alpha(store):
    curves = curves_from_mlflow(store)
    assert list(curves.columns) == COLUMNS
    reward = curves[curves["metric"] == "reward"]
    assert sorted(reward["alpha"].unique()) == [0.0, 0.9]
    a0 = reward[reward["alpha"] == 0.0]
    assert list(a0["step"]) == [1, 2, 3] and list(a0["value"]) == pytest.approx([0.1, 0.3, 0.5])
    em = curves[(curves["metric"] == "router/em") & (curves["alpha"] == 0.9)]
    # each training seed keeps its own line; the run without a seed tag has seed NA
    assert list(em.loc[em["seed"].isna(), "value"]) == pytest.approx([-0.1, 0.0])
    assert list(em.loc[em["seed"] == 1, "value"]) == pytest.approx([0.2, 0.3])
    assert "loss" not in set(curves["metric"])  # only the curve metrics are fetched


def test_smooth_is_a_trailing_mean():
    assert list(smooth(pd.Series([1.0, 3.0, 5.0, 7.0]), 2)) == [1.0, 2.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="window"):
        smooth(pd.Series([1.0]), 0)


def test_cli_writes_csv_and_pdf(store, tmp_path, capsys):
    pdf, csv = tmp_path / "curves.pdf", tmp_path / "curves.csv"
    assert main(["--tracking-uri", store, "--out", str(pdf), "--csv", str(csv)]) == 0
    assert pdf.read_bytes().startswith(b"%PDF")
    back = pd.read_csv(csv)
    assert set(back["metric"]) == {"reward", "router/em", "router/pool_calls"}
    assert "3 training run(s)" in capsys.readouterr().out  # α 0, α 0.9 and its seed 1


def test_cli_errors_name_the_problem(store, tmp_path, capsys):
    missing = tmp_path / "none.db"
    assert main(["--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert "no MLflow database" in capsys.readouterr().err
    assert main(["--tracking-uri", store, "--experiment", "nope"]) == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err


def test_plot_refuses_empty_or_malformed_curves(tmp_path):
    with pytest.raises(ValueError, match="no training metrics"):
        plot_curves(pd.DataFrame(columns=COLUMNS), tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="alpha"):
        plot_curves(pd.DataFrame({"step": [1], "metric": ["reward"], "value": [0.0]}), "x.pdf")
    assert not (tmp_path / "x.pdf").exists()


def _curve(alpha, seed, values, metric="reward"):
    return pd.DataFrame(
        {
            "alpha": alpha,
            "seed": seed,
            "step": range(1, len(values) + 1),
            "metric": metric,
            "value": values,
        }
    )


def test_learning_gain_compares_first_and_last_window_against_the_seed_spread():
    rising = [
        _curve(0.0, 0, [0.0] * 10 + [1.0] * 10),  # first 0, last 1
        _curve(0.0, 1, [0.2] * 10 + [0.8] * 10),  # first 0.2, last 0.8
    ]
    noisy = [
        _curve(0.9, 0, [0.0] * 10 + [0.3] * 10),  # gain 0.3
        _curve(0.9, 1, [0.5] * 10 + [0.9] * 10),  # gain 0.4, last 0.9: spread 0.6
    ]
    other = _curve(0.0, 0, [9.0] * 20, metric="router/em")  # another metric is ignored
    gain = learning_gain(pd.concat([*rising, *noisy, other]).astype({"seed": "Int64"}))
    a0, a9 = (gain[gain["alpha"] == a].iloc[0] for a in (0.0, 0.9))
    assert (a0["seeds"], a0["steps"]) == (2, 20)
    assert a0["first"] == pytest.approx(0.1) and a0["last"] == pytest.approx(0.9)
    assert a0["gain"] == pytest.approx(0.8) and a0["seed_spread"] == pytest.approx(0.2)
    assert bool(a0["learns"])
    assert a9["gain"] == pytest.approx(0.35) and a9["seed_spread"] == pytest.approx(0.6)
    assert not bool(a9["learns"])
    text = gain_markdown(gain)
    assert "| 0 | 2 | 20 | +0.100 | +0.900 | +0.800 | 0.200 | yes |" in text
    assert "| 0.9 | 2 | 20 | +0.250 | +0.600 | +0.350 | 0.600 | no |" in text


def test_learning_gain_uses_halves_of_a_short_run_and_skips_single_steps():
    short = _curve(0.5, 0, [0.0, 0.0, 1.0, 1.0, 1.0])  # k = 2: first 0, last 1
    single = _curve(0.9, 0, [0.5])
    gain = learning_gain(pd.concat([short, single]).astype({"seed": "Int64"}))
    assert list(gain["alpha"]) == [0.5]
    row = gain.iloc[0]
    assert (row["first"], row["last"], row["seed_spread"]) == (0.0, 1.0, 0.0)
    assert "one seed" in gain_markdown(gain)
    with pytest.raises(ValueError, match="window"):
        learning_gain(short, window=0)


def test_cli_writes_the_gain_table(store, tmp_path):
    gain = tmp_path / "gain.md"
    pdf, csv = tmp_path / "c.pdf", tmp_path / "c.csv"
    args = ["--tracking-uri", store, "--out", str(pdf), "--csv", str(csv), "--gain", str(gain)]
    assert main(args) == 0
    assert gain.read_text().startswith("# Did training raise the reward?")
    assert "| 0 | 1 | 3 | +0.100 | +0.500 | +0.400 | 0.000 | yes (one seed" in gain.read_text()


def test_route_shift_tables_each_route_share_against_the_seed_spread(tmp_path):
    learned = [  # both seeds move maths to the reasoner: 0.3 -> 0.9 and 0.4 -> 0.8
        _curve(0.0, 0, [0.3] * 10 + [0.9] * 10, metric="router/first/gsm8k/Reason"),
        _curve(0.0, 1, [0.4] * 10 + [0.8] * 10, metric="router/first/gsm8k/Reason"),
    ]
    noise = [  # a factoid route that wanders: +0.1 on average, seeds end 0.6 apart
        _curve(0.0, 0, [0.5] * 10 + [0.9] * 10, metric="router/first/nq/Cheap"),
        _curve(0.0, 1, [0.5] * 10 + [0.3] * 10, metric="router/first/nq/Cheap"),
    ]
    rare = _curve(0.0, 0, [0.0] * 20, metric="router/first/nq/no_call")  # never taken
    overall = _curve(0.0, 0, [0.2] * 20, metric="router/first/Reason")
    reward = _curve(0.0, 0, [0.0] * 20)  # not a route share
    curves = pd.concat([*learned, *noise, rare, overall, reward]).astype({"seed": "Int64"})
    shift = route_shift(curves).set_index(["benchmark", "model"])
    maths = shift.loc[("gsm8k", "Reason")]
    assert maths["first"] == pytest.approx(0.35) and maths["last"] == pytest.approx(0.85)
    assert maths["gain"] == pytest.approx(0.5) and maths["seed_spread"] == pytest.approx(0.1)
    assert shift.loc[("nq", "Cheap"), "seed_spread"] == pytest.approx(0.6)
    assert shift.loc[("all", "Reason"), "gain"] == pytest.approx(0.0)
    text = shift_markdown(route_shift(curves))
    assert "| 0 | gsm8k | Reason | 2 | 0.35 | 0.85 | +0.50 | 0.10 | yes |" in text
    assert "| 0 | nq | Cheap | 2 | 0.50 | 0.60 | +0.10 | 0.60 | no |" in text
    assert "no_call" not in text  # under 5% before and after

    # read back from MLflow: every logged router/first/... metric joins the curves and the table
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_experiment(experiment_id=ensure_experiment(uri, "routerr1"))
    with mlflow.start_run(tags={RUN_KEY_TAG: "train/alpha~0.0", "stage": "train", "alpha": "0.0"}):
        for step, share in enumerate([0.25, 0.25, 0.75, 1.0], start=1):
            mlflow.log_metrics({"reward": share, "router/first/gsm8k/Reason": share}, step=step)
    gain = tmp_path / "gain.md"
    write_curves(uri, tmp_path / "c.pdf", tmp_path / "c.csv", gain_path=gain, gain_window=2)
    assert "| 0 | gsm8k | Reason | 1 | 0.25 | 0.88 | +0.62 | 0.00 | yes (one seed) |" in (
        gain.read_text()
    )
    # one benchmark's route at 100% is not a collapse of the whole batch
    assert "# Did a run collapse onto one route?" in gain.read_text()
    assert "| (none) |" in gain.read_text()


def test_route_collapse_finds_the_longest_stretch_on_one_route():
    shares = [0.25, 0.7, 0.9, 1.0, 1.0, 1.0, 0.95, 0.8, 1.0, 1.0]  # >= 0.95 at steps 4-7
    collapsed = [
        _curve(0.0, 0, shares, metric="router/first/Qwen"),
        _curve(0.0, 0, [1 - v for v in shares], metric="router/first/Gemma"),
        # a per-benchmark share at 1.0 throughout is not the whole batch's route
        _curve(0.0, 0, [1.0] * 10, metric="router/first/nq/Gemma"),
        _curve(0.0, 0, [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5], "frac_reward_zero_std"),
    ]
    wandering = [  # seed 1: two steps on one route is not a collapse
        _curve(0.0, 1, [0.5, 1.0, 1.0, 0.5, 0.2, 0.5], metric="router/first/Qwen"),
        _curve(0.0, 1, [0.5, 0.0, 0.0, 0.5, 0.8, 0.5], metric="router/first/Gemma"),
    ]
    untagged = _curve(0.9, None, [1.0] * 4, metric="router/first/no_call")  # never calls
    curves = pd.concat([*collapsed, *wandering, untagged]).astype({"seed": "Int64"})
    out = route_collapse(curves)
    assert len(out) == 2
    qwen, never = out.iloc[0], out.iloc[1]
    assert (qwen["alpha"], qwen["seed"], qwen["model"]) == (0.0, 0, "Qwen")
    assert (qwen["from_step"], qwen["to_step"], qwen["steps"]) == (4, 7, 4)
    assert qwen["zero_spread"] == pytest.approx(0.875)  # steps 4-7: 1, 1, 1, 0.5
    assert (never["model"], never["steps"]) == ("no_call", 4) and pd.isna(never["seed"])
    assert pd.isna(never["zero_spread"])  # not logged
    text = collapse_markdown(out)
    assert "| 0 | 0 | Qwen | 4 | 4 | 7 | 0.88 |" in text
    assert "| 0.9 |  | no_call | 4 | 1 | 4 |  |" in text
    assert "| (none) |" in collapse_markdown(route_collapse(curves[curves["seed"] == 1]))
    with pytest.raises(ValueError, match="share"):
        route_collapse(curves, share=0.4)
