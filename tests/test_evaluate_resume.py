"""A killed evaluation keeps its finished batches; the rerun does only the rest."""

from __future__ import annotations

import pytest

from routerr1.data import QARecord
from routerr1.evaluate import ChunkStore, _row, run_in_batches
from routerr1.methods import ROW_COLUMNS

RECORDS = [
    QARecord(f"q{i}", f"question {i}", (f"answer {i}",), "nq" if i % 2 else "hotpotqa", "test")
    for i in range(10)
]


def answer(chunk, calls, fail_at=None):
    calls.append([r.id for r in chunk])
    if fail_at is not None and len(calls) == fail_at:
        raise KeyboardInterrupt("killed mid-run")
    return [
        _row(
            "m",
            "single",
            None,
            r,
            r.golden_answers[0],
            pool_calls=1,
            invalid_actions=0,
            pool_errors=0,
            in_tokens=3,
            out_tokens=2,
            cost=1e-6,
            latency_s=0.1,
            trajectory="",
        )
        for r in chunk
    ]


def test_resume_skips_finished_batches_and_keeps_order(tmp_path):
    out = tmp_path / "eval" / "m.parquet"
    store = ChunkStore(out)
    first: list = []
    with pytest.raises(KeyboardInterrupt):
        run_in_batches(RECORDS, 3, lambda c: answer(c, first, fail_at=3), "m", store)
    assert len(first) == 3  # two batches finished, the third was killed
    assert len(store.load()) == 6

    second: list = []
    rows = run_in_batches(RECORDS, 3, lambda c: answer(c, second), "m", ChunkStore(out))
    assert [q for batch in second for q in batch] == [f"q{i}" for i in range(6, 10)]
    assert list(rows["qid"]) == [r.id for r in RECORDS]  # record order, no duplicates
    assert list(rows.columns) == ROW_COLUMNS
    assert rows["em"].tolist() == [1.0] * 10

    ChunkStore(out).clear()
    assert not ChunkStore(out).dir.exists()


def test_without_store_nothing_is_written(tmp_path):
    calls: list = []
    rows = run_in_batches(RECORDS[:4], 3, lambda c: answer(c, calls), "m", None)
    assert len(rows) == 4 and len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_batches_made_with_other_settings_are_redone(tmp_path):
    out = tmp_path / "eval" / "m.parquet"
    greedy = {"decoding": "greedy"}
    first: list = []
    with pytest.raises(KeyboardInterrupt):
        run_in_batches(
            RECORDS, 3, lambda c: answer(c, first, fail_at=2), "m", ChunkStore(out, greedy)
        )
    assert len(ChunkStore(out, greedy).load()) == 3  # same settings: the finished batch is kept

    sampled = {"decoding": "sampled", "temperature": 1.0, "top_p": 1.0, "sample_seed": 0}
    second: list = []
    rows = run_in_batches(RECORDS, 3, lambda c: answer(c, second), "m", ChunkStore(out, sampled))
    assert [q for batch in second for q in batch] == [r.id for r in RECORDS]  # all redone
    assert len(rows) == 10
    assert len(ChunkStore(out, sampled).load()) == 10
    assert ChunkStore(out, greedy).load().empty  # and back again: nothing reusable
