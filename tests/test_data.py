"""Tests for routerr1.data: FlashRAG-layout loading, validation and disjoint seeded sampling."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import huggingface_hub.constants
import pandas as pd
import pytest

from routerr1.config import SamplingConfig
from routerr1.data import (
    MissingBenchmarkError,
    QARecord,
    allocate,
    available_splits,
    build_splits,
    load_split,
    normalize_question,
    read_records,
    records_to_frame,
    resolve_benchmark_dir,
    write_parquet_atomic,
)

# Same question as one in alpha/train.jsonl, differing only by case, whitespace and end punctuation.
NEAR_DUP_TRAIN = "What is the capital of France?"
NEAR_DUP_TEST = "  WHAT is the   Capital of france "


def _write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(prefix: str, n: int) -> list[dict]:
    return [
        {"id": f"{prefix}_{i}", "question": f"{prefix} question {i}?", "golden_answers": [f"a{i}"]}
        for i in range(n)
    ]


def _make_mirror(root: Path) -> Path:
    """alpha: train+test; beta: dev only; gamma: 3-row test only."""
    mirror = root / "mirror"
    alpha_train = _rows("alpha train", 30)
    alpha_train[7]["question"] = NEAR_DUP_TRAIN
    # A within-split duplicate: at most one of the two may be sampled.
    alpha_train[8]["question"] = "Who wrote Hamlet?"
    alpha_train[9]["question"] = "who  wrote hamlet"
    alpha_test = _rows("alpha test", 10)
    alpha_test[4]["question"] = NEAR_DUP_TEST
    _write_jsonl(mirror / "alpha" / "train.jsonl", alpha_train)
    _write_jsonl(mirror / "alpha" / "test.jsonl", alpha_test)
    _write_jsonl(mirror / "beta" / "dev.jsonl", _rows("beta dev", 40))
    _write_jsonl(mirror / "gamma" / "test.jsonl", _rows("gamma test", 3))
    return mirror


def _source(mirror: Path):
    return lambda bench: resolve_benchmark_dir(bench, mirror)


def _cfg(**overrides) -> SamplingConfig:
    base = dict(
        train_benchmarks=("alpha", "beta"),
        eval_benchmarks=("alpha", "beta", "gamma"),
        n_train=20,
        n_eval=10,
        n_profile=6,
        seed=13,
    )
    base.update(overrides)
    return SamplingConfig(**base)


def _keys(records: list[QARecord]) -> list[str]:
    return [normalize_question(r.question) for r in records]


# --------------------------------------------------------------------------- loading


def test_available_splits_and_load_split(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    _write_jsonl(mirror / "alpha" / "dev.jsonl", _rows("alpha dev", 2))
    (mirror / "alpha" / "README.md").write_text("not a split")
    assert available_splits(mirror / "alpha") == ["train", "dev", "test"]
    assert available_splits(mirror / "beta") == ["dev"]

    records = load_split(mirror / "alpha", "test")
    assert len(records) == 10
    assert records[0] == QARecord(
        "alpha test_0", "alpha test question 0?", ("a0",), "alpha", "test"
    )
    assert records[0].key == "alpha/test/alpha test_0"
    with pytest.raises(FileNotFoundError, match="'train'"):
        load_split(mirror / "gamma", "train")


def test_numeric_ids_and_answers_are_text_and_metadata_ignored(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "b" / "test.jsonl",
        [
            {
                "id": 7,
                "question": "q?",
                "golden_answers": ["x", 1999],
                "metadata": {"type": "bridge"},
            }
        ],
    )
    path.write_text(path.read_text() + "\n\n")  # blank lines are tolerated
    (record,) = load_split(tmp_path / "b", "test")
    assert record.id == "7"
    assert record.golden_answers == ("x", "1999")


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        ({"id": "x", "golden_answers": ["a"]}, "question"),
        ({"id": "x", "question": "q"}, "golden_answers"),
        ({"id": "x", "question": "q", "golden_answers": "a"}, "golden_answers"),
        ({"id": "x", "question": "q", "golden_answers": []}, "golden_answers"),
        ({"id": "x", "question": "q", "golden_answers": {"a": 1}}, "golden_answers"),
        ({"id": "x", "question": "q", "golden_answers": ["a", None]}, "golden_answers[1]"),
        ({"id": "x", "question": "  ", "golden_answers": ["a"]}, "question"),
        ({"question": "q", "golden_answers": ["a"]}, "id"),
        ({"id": True, "question": "q", "golden_answers": ["a"]}, "id"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path: Path, bad_row: dict, field: str) -> None:
    path = _write_jsonl(tmp_path / "b" / "dev.jsonl", [*_rows("ok", 2), bad_row])
    with pytest.raises(ValueError, match=r"line 3") as info:
        load_split(tmp_path / "b", "dev")
    message = str(info.value)
    assert str(path) in message
    assert f"'{field}'" in message


def test_invalid_json_and_non_object_rows_name_the_line(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "b" / "dev.jsonl", [*_rows("ok", 1), "{not json"])
    with pytest.raises(ValueError, match=r"dev\.jsonl, line 2: invalid JSON"):
        load_split(tmp_path / "b", "dev")
    _write_jsonl(tmp_path / "c" / "dev.jsonl", ["[1, 2]"])
    with pytest.raises(ValueError, match=r"line 1: row must be a JSON object"):
        load_split(tmp_path / "c", "dev")


def test_parquet_split_file_is_read_like_jsonl(tmp_path: Path) -> None:
    rows = _rows("pq", 4)
    bench = tmp_path / "pqbench"
    bench.mkdir()
    pd.DataFrame(rows).to_parquet(bench / "test.parquet", index=False)
    assert available_splits(bench) == ["test"]
    records = load_split(bench, "test")
    assert [r.golden_answers for r in records] == [(f"a{i}",) for i in range(4)]
    assert {r.split for r in records} == {"test"}

    pd.DataFrame([{"id": "x", "question": "q", "golden_answers": None}]).to_parquet(
        bench / "dev.parquet", index=False
    )
    with pytest.raises(ValueError, match=r"row 1: missing field 'golden_answers'"):
        load_split(bench, "dev")


def test_missing_mirror_and_missing_benchmark(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_mirror") as info:
        resolve_benchmark_dir("nq", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)

    mirror = _make_mirror(tmp_path)
    with pytest.raises(MissingBenchmarkError, match="'popqa'") as info:
        resolve_benchmark_dir("popqa", mirror)
    assert isinstance(info.value, ValueError)
    assert info.value.benchmark == "popqa"
    assert resolve_benchmark_dir("beta", mirror) == mirror / "beta"
    with pytest.raises(ValueError, match="plain folder name"):
        resolve_benchmark_dir("../beta", mirror)


def test_hub_path_reads_offline_snapshot_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real hub cache layout, so snapshot_download resolves refs/main offline.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hf_cache"
    repo = cache / "datasets--RUC-NLPIR--FlashRAG_datasets"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)  # the hub writes it without a newline
    snapshot = repo / "snapshots" / commit
    _write_jsonl(snapshot / "nq" / "test.jsonl", _rows("nq test", 5))

    bench_dir = resolve_benchmark_dir("nq", None, cache_dir=cache)
    assert bench_dir == snapshot / "nq"
    assert [r.id for r in load_split(bench_dir, "test")] == [f"nq test_{i}" for i in range(5)]

    with pytest.raises(MissingBenchmarkError, match="'musique'"):
        resolve_benchmark_dir("musique", None, cache_dir=cache)


# --------------------------------------------------------------------------- sampling


def test_normalize_question() -> None:
    assert normalize_question("  Who  WROTE\tHamlet?? ") == "who wrote hamlet"
    assert normalize_question("«Quoted» question…") == "quoted» question"
    assert normalize_question('"U.S." capital?') == 'u.s." capital'
    assert normalize_question(NEAR_DUP_TRAIN) == normalize_question(NEAR_DUP_TEST)
    # Inner punctuation is kept: these are different questions.
    assert normalize_question("Is it 1,000?") != normalize_question("Is it 1000?")


def test_eval_split_preference_and_small_benchmarks(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    _write_jsonl(mirror / "delta" / "train.jsonl", _rows("delta train", 8))
    _write_jsonl(mirror / "delta" / "dev.jsonl", _rows("delta dev", 8))
    _write_jsonl(mirror / "eps" / "train.jsonl", _rows("eps train", 8))
    cfg = _cfg(eval_benchmarks=("alpha", "beta", "gamma", "delta", "eps"), n_eval=5)
    out = build_splits(cfg, _source(mirror))

    by_bench: dict[str, set[str]] = {}
    for r in out["eval"]:
        by_bench.setdefault(r.benchmark, set()).add(r.split)
    assert by_bench == {
        "alpha": {"test"},  # test beats train
        "beta": {"dev"},
        "gamma": {"test"},
        "delta": {"dev"},  # dev beats train
        "eps": {"train"},  # train as the last resort
    }
    counts = {b: sum(r.benchmark == b for r in out["eval"]) for b in by_bench}
    assert counts == {"alpha": 5, "beta": 5, "gamma": 3, "delta": 5, "eps": 5}  # gamma has only 3


def test_same_seed_same_samples_other_seed_differs(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    first = build_splits(_cfg(), _source(mirror))
    assert first == build_splits(_cfg(), _source(mirror))
    other = build_splits(_cfg(seed=14), _source(mirror))
    assert [r.id for r in other["train"]] != [r.id for r in first["train"]]


def test_eval_sample_does_not_depend_on_train_benchmarks(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    a = build_splits(_cfg(), _source(mirror))
    b = build_splits(_cfg(train_benchmarks=("alpha",), n_profile=0), _source(mirror))
    assert a["eval"] == b["eval"]


def test_sets_are_disjoint_by_normalized_question(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    # Large totals exhaust alpha's train split, so the near-duplicate would be drawn if allowed.
    out = build_splits(_cfg(n_train=55, n_profile=30), _source(mirror))
    keys = {name: _keys(records) for name, records in out.items()}
    for name, ks in keys.items():
        assert len(ks) == len(set(ks)), f"duplicate question within {name}"
    assert not set(keys["train"]) & set(keys["eval"])
    assert not set(keys["train"]) & set(keys["profile"])
    assert not set(keys["eval"]) & set(keys["profile"])

    near_dup = normalize_question(NEAR_DUP_TEST)
    assert near_dup in keys["eval"]  # all 10 alpha test rows are in eval
    assert near_dup not in keys["train"] + keys["profile"]
    hamlet = [k for k in keys["train"] + keys["profile"] if k == "who wrote hamlet"]
    assert len(hamlet) == 1
    # alpha: 30 rows - near-duplicate - Hamlet twin = 28 usable; beta: 40 - 10 eval = 30.
    train = [r.benchmark for r in out["train"]]
    assert (train.count("alpha"), train.count("beta")) == (28, 27)
    # An exhausted profile benchmark passes its share on: only beta's last 3 remain.
    assert [r.benchmark for r in out["profile"]] == ["beta"] * 3
    with pytest.raises(ValueError, match="profile: nothing left"):
        build_splits(_cfg(n_train=58, n_profile=1), _source(mirror))


def test_hold_out_when_benchmark_has_no_train_split(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    out = build_splits(_cfg(train_benchmarks=("beta",), n_train=25, n_profile=5), _source(mirror))
    eval_ids = {r.id for r in out["eval"] if r.benchmark == "beta"}
    train_ids = {r.id for r in out["train"]}
    profile_ids = {r.id for r in out["profile"]}
    assert len(eval_ids) == 10
    assert len(train_ids) == 25 and len(profile_ids) == 5
    assert {r.split for r in out["train"] + out["profile"]} == {"dev"}
    assert not eval_ids & train_ids and not eval_ids & profile_ids and not train_ids & profile_ids
    # 40 rows - 10 eval - 25 train leaves 5: asking for more profile gives only what remains.
    out = build_splits(_cfg(train_benchmarks=("beta",), n_train=25, n_profile=9), _source(mirror))
    assert len(out["profile"]) == 5


def test_totals_are_split_evenly_and_profile_defaults_to_train(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    out = build_splits(_cfg(n_train=11, n_profile=6), _source(mirror))
    train = [r.benchmark for r in out["train"]]
    assert (train.count("alpha"), train.count("beta")) == (6, 5)
    assert {r.split for r in out["train"] if r.benchmark == "alpha"} == {"train"}
    profile = [r.benchmark for r in out["profile"]]
    assert (profile.count("alpha"), profile.count("beta")) == (3, 3)

    out = build_splits(_cfg(profile_benchmarks=["beta"], n_profile=4), _source(mirror))
    assert [r.benchmark for r in out["profile"]] == ["beta"] * 4


def test_allocate_passes_shortfall_on() -> None:
    assert allocate(10, [100, 100, 100]) == [4, 3, 3]
    assert allocate(10, [2, 100, 100]) == [2, 4, 4]
    assert allocate(10, [2, 3, 0]) == [2, 3, 0]
    assert allocate(0, [5, 5]) == [0, 0]


def test_train_benchmark_with_nothing_left_raises(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    # gamma's 3 test rows all go to eval, leaving nothing to train on.
    cfg = _cfg(train_benchmarks=("alpha", "gamma"))
    with pytest.raises(ValueError, match="'gamma'"):
        build_splits(cfg, _source(mirror))


def test_missing_benchmark_propagates_from_source(tmp_path: Path) -> None:
    mirror = _make_mirror(tmp_path)
    with pytest.raises(MissingBenchmarkError, match="'popqa'"):
        build_splits(_cfg(eval_benchmarks=("alpha", "popqa")), _source(mirror))


def test_sampling_config_validation() -> None:
    cfg = _cfg(train_benchmarks=["alpha"], eval_benchmarks=["beta"])
    assert cfg.train_benchmarks == ("alpha",)
    assert cfg.resolved_profile_benchmarks == ("alpha",)
    hash(cfg)
    with pytest.raises(ValueError, match="n_train"):
        _cfg(n_train=-1)
    with pytest.raises(ValueError, match="duplicate"):
        _cfg(eval_benchmarks=("alpha", "alpha"))
    with pytest.raises(ValueError, match="train_benchmarks"):
        _cfg(train_benchmarks="alpha")
    with pytest.raises(ValueError, match="train_benchmarks"):
        _cfg(train_benchmarks=())


# --------------------------------------------------------------------------- parquet I/O


def test_parquet_roundtrip_is_atomic(tmp_path: Path) -> None:
    records = build_splits(_cfg(), _source(_make_mirror(tmp_path)))["eval"]
    frame = records_to_frame(records)
    assert list(frame.columns) == ["id", "question", "golden_answers", "benchmark", "split"]
    assert isinstance(frame["golden_answers"].iloc[0], list)

    path = tmp_path / "out" / "eval.parquet"
    write_parquet_atomic(frame, path)
    assert read_records(path) == records
    assert [p.name for p in path.parent.iterdir()] == ["eval.parquet"]  # no temp file left

    write_parquet_atomic(records_to_frame([]), path)  # overwrite in place
    assert read_records(path) == []


# --------------------------------------------------------------------------- GSM8K


def _gsm8k_rows(n: int) -> list[dict]:
    """GSM8K as the mirror has it: test split only, the number after '####' as the answer."""
    rows = [
        {
            "id": f"gsm8k-test-{i}",
            "question": f"Tom has {i} apples and buys {i + 3} more. How many apples does he have?",
            "golden_answers": [str(2 * i + 3)],
        }
        for i in range(n)
    ]
    rows[5]["golden_answers"] = [1080]  # a JSON number is still an answer, as text
    # the same problem twice, differing only by spacing and final punctuation
    rows[7]["question"] = "A robe takes 2 bolts of blue fiber and half that much white fiber."
    rows[8]["question"] = "A robe takes  2 bolts of blue fiber and half that much white fiber"
    return rows


def test_gsm8k_trains_on_its_test_split_with_the_eval_sample_held_out(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    _write_jsonl(mirror / "gsm8k" / "test.jsonl", _gsm8k_rows(40))
    _write_jsonl(mirror / "nq" / "train.jsonl", _rows("nq train", 30))
    _write_jsonl(mirror / "nq" / "test.jsonl", _rows("nq test", 30))
    _write_jsonl(mirror / "hotpotqa" / "dev.jsonl", _rows("hotpot dev", 30))
    benches = ("gsm8k", "nq", "hotpotqa")
    cfg = _cfg(train_benchmarks=benches, eval_benchmarks=benches, n_eval=12, n_train=45)
    out = build_splits(replace(cfg, n_profile=6), _source(mirror))

    gsm = {name: [r for r in records if r.benchmark == "gsm8k"] for name, records in out.items()}
    assert len(gsm["eval"]) == 12 and len(gsm["train"]) == 15 and len(gsm["profile"]) == 2
    # no train split: train and profile draw from test, what evaluation left over
    assert {r.split for records in gsm.values() for r in records} == {"test"}
    keys = {
        name: {normalize_question(r.question) for r in records} for name, records in gsm.items()
    }
    assert not keys["eval"] & keys["train"]
    assert not keys["eval"] & keys["profile"]
    assert not keys["train"] & keys["profile"]
    twins = [
        r for records in gsm.values() for r in records if r.id in ("gsm8k-test-7", "gsm8k-test-8")
    ]
    assert len(twins) <= 1  # a near-duplicate never lands in two sets (nor twice in one)
    # the other benchmarks keep their own splits
    assert {r.split for r in out["train"] if r.benchmark == "nq"} == {"train"}
    assert {r.split for r in out["eval"] if r.benchmark == "hotpotqa"} == {"dev"}

    # answers stay text through the parquet files the pipeline writes
    path = tmp_path / "train.parquet"
    write_parquet_atomic(records_to_frame(out["train"] + out["eval"]), path)
    answers = {r.id: r.golden_answers for r in read_records(path) if r.benchmark == "gsm8k"}
    assert all(isinstance(a, str) and a.isdigit() for golds in answers.values() for a in golds)
    if "gsm8k-test-5" in answers:
        assert answers["gsm8k-test-5"] == ("1080",)
    assert load_split(mirror / "gsm8k", "test")[5].golden_answers == ("1080",)
