"""QA benchmarks in the FlashRAG layout: loading, validation and seeded, disjoint sampling.

A benchmark is a folder named after a FlashRAG config (``nq``, ``hotpotqa``, ...) holding one
file per split (``train.jsonl``, ``dev.jsonl``, ``test.jsonl``; ``.parquet`` is accepted too).
The folder comes either from a local mirror or from a snapshot of the Hugging Face dataset
``RUC-NLPIR/FlashRAG_datasets``; both are read by the same reader.

Sampling draws the evaluation sets first, then the training set, then the profiling set, and
keeps the three disjoint by normalized question, so no question the router is scored on was seen
in training or used to profile the pool.

The paper evaluates on seven FlashRAG configs (``PAPER_EVAL_SPLITS``: NQ, TriviaQA and PopQA on
test, HotpotQA, 2WikiMultiHopQA and MuSiQue on dev, Bamboogle on test). ``sample_splits`` skips
an evaluation benchmark the source does not have, with a warning and a reason in its manifest,
so a partial mirror still gives a complete (smaller) evaluation; a missing training or profiling
benchmark is still an error.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from huggingface_hub import snapshot_download

from routerr1.config import SamplingConfig, check_benchmark_name
from routerr1.io import write_parquet_atomic  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

DEFAULT_HUB_REPO = "RUC-NLPIR/FlashRAG_datasets"
SPLIT_SUFFIXES = (".jsonl", ".parquet")
# Canonical split order; the evaluation set prefers the first of these that exists.
_KNOWN_SPLITS = ("train", "dev", "test")
EVAL_SPLIT_PREFERENCE = ("test", "dev", "train")
FRAME_COLUMNS = ("id", "question", "golden_answers", "benchmark", "split")
# The paper's evaluation benchmarks and the FlashRAG split each is scored on. A benchmark not
# listed here falls back on EVAL_SPLIT_PREFERENCE.
PAPER_EVAL_SPLITS: dict[str, str] = {
    "nq": "test",
    "triviaqa": "test",
    "popqa": "test",
    "hotpotqa": "dev",
    "2wikimultihopqa": "dev",
    "musique": "dev",
    "bamboogle": "test",
}


class MissingBenchmarkError(ValueError):
    """The data source exists but has no folder for this benchmark (callers may skip it)."""

    def __init__(self, benchmark: str, where: str) -> None:
        super().__init__(f"benchmark {benchmark!r} not found in {where}")
        self.benchmark = benchmark


@dataclass(frozen=True)
class QARecord:
    """One question with its accepted answers, tagged with where it came from."""

    id: str
    question: str
    golden_answers: tuple[str, ...]
    benchmark: str
    split: str

    @property
    def key(self) -> str:
        """Globally unique key: FlashRAG ids (``test_0``) repeat across benchmarks."""
        return f"{self.benchmark}/{self.split}/{self.id}"


# --------------------------------------------------------------------------- locating data


def resolve_benchmark_dir(
    benchmark: str,
    mirror: Path | None,
    hub_repo: str = DEFAULT_HUB_REPO,
    revision: str = "main",
    cache_dir: Path | None = None,
) -> Path:
    """Return the folder holding ``benchmark``'s split files.

    With ``mirror`` the folder is ``mirror/benchmark``; otherwise only that config is fetched
    from the hub dataset ``hub_repo`` at ``revision`` (honouring ``HF_HUB_OFFLINE`` and the
    cache). Raises FileNotFoundError if the mirror is missing, MissingBenchmarkError if the
    benchmark is not in the source.
    """
    check_benchmark_name(benchmark)
    if mirror is not None:
        mirror = Path(mirror)
        if not mirror.is_dir():
            raise FileNotFoundError(
                f"data_mirror {str(mirror)!r} does not exist or is not a folder"
            )
        bench_dir = mirror / benchmark
        if not bench_dir.is_dir():
            raise MissingBenchmarkError(benchmark, f"data_mirror {str(mirror)!r}")
        return bench_dir
    snapshot = snapshot_download(
        repo_id=hub_repo,
        repo_type="dataset",
        revision=revision,
        allow_patterns=[f"{benchmark}/*"],
        cache_dir=cache_dir,
    )
    bench_dir = Path(snapshot) / benchmark
    if not bench_dir.is_dir():
        raise MissingBenchmarkError(benchmark, f"hub dataset {hub_repo!r}@{revision}")
    return bench_dir


def _split_file(bench_dir: Path, split: str) -> Path | None:
    for suffix in SPLIT_SUFFIXES:  # jsonl first: it is the FlashRAG format
        path = bench_dir / f"{split}{suffix}"
        if path.is_file():
            return path
    return None


def available_splits(bench_dir: Path) -> list[str]:
    """Splits present in ``bench_dir``: train, dev, test first (if present), then others."""
    bench_dir = Path(bench_dir)
    found = {
        p.name[: -len(s)]
        for p in bench_dir.iterdir()
        for s in SPLIT_SUFFIXES
        if p.is_file() and p.name.endswith(s) and len(p.name) > len(s)
    }
    known = [s for s in _KNOWN_SPLITS if s in found]
    return known + sorted(found - set(known))


# --------------------------------------------------------------------------- reading rows


def _as_id(value: Any, where: str) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{where}: field 'id' must be a string or integer, got {value!r}")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: field 'id' is empty")
    return text


def _as_answers(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, np.ndarray):  # parquet list columns come back as arrays
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"{where}: field 'golden_answers' must be a list of strings, "
            f"got {type(value).__name__} {value!r}"
        )
    if not value:
        raise ValueError(f"{where}: field 'golden_answers' is an empty list")
    answers = []
    for i, answer in enumerate(value):
        # JSON may carry numeric answers (years, counts): they are answers, keep them as text.
        if isinstance(answer, int | float) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(
                f"{where}: field 'golden_answers[{i}]' must be a non-empty string, got {answer!r}"
            )
        answers.append(answer)
    return tuple(answers)


def _row_to_record(row: Any, where: str, benchmark: str, split: str) -> QARecord:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: row must be a JSON object, got {type(row).__name__}")
    for field in ("id", "question", "golden_answers"):
        if field not in row or row[field] is None:
            raise ValueError(f"{where}: missing field {field!r}")
    question = row["question"]
    if not isinstance(question, str) or not normalize_question(question):
        raise ValueError(f"{where}: field 'question' must be a non-empty string, got {question!r}")
    return QARecord(
        id=_as_id(row["id"], where),
        question=question,
        golden_answers=_as_answers(row["golden_answers"], where),
        benchmark=benchmark,
        split=split,
    )


def _iter_jsonl(path: Path) -> Iterable[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from e


def _iter_parquet(path: Path, frame: pd.DataFrame | None = None) -> Iterable[tuple[str, Any]]:
    if frame is None:
        frame = pd.read_parquet(path)
    for i, row in enumerate(frame.to_dict(orient="records"), start=1):
        # Null cells read back as NaN/None; drop them so they report as missing fields.
        clean = {k: v for k, v in row.items() if not _is_null(v)}
        yield f"{path}, row {i}", clean


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def load_split(bench_dir: Path, split: str) -> list[QARecord]:
    """Read and validate ``{split}.jsonl`` (or ``{split}.parquet``) from ``bench_dir``."""
    bench_dir = Path(bench_dir)
    path = _split_file(bench_dir, split)
    if path is None:
        raise FileNotFoundError(
            f"no split {split!r} in {str(bench_dir)!r} (available: {available_splits(bench_dir)})"
        )
    rows = _iter_jsonl(path) if path.suffix == ".jsonl" else _iter_parquet(path)
    return [_row_to_record(row, where, bench_dir.name, split) for where, row in rows]


# --------------------------------------------------------------------------- sampling


def normalize_question(q: str) -> str:
    """Key for disjointness: casefolded, whitespace collapsed, punctuation trimmed at both ends."""
    text = " ".join(unicodedata.normalize("NFKC", q).casefold().split())
    start, end = 0, len(text)
    while start < end and _is_trimmable(text[start]):
        start += 1
    while end > start and _is_trimmable(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_trimmable(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


class _Loader:
    """Resolves each benchmark once and reads each split once per build_splits call."""

    def __init__(self, source: Callable[[str], Path]) -> None:
        self._source = source
        self._dirs: dict[str, Path] = {}
        self._splits: dict[tuple[str, str], list[QARecord]] = {}

    def bench_dir(self, benchmark: str) -> Path:
        if benchmark not in self._dirs:
            self._dirs[benchmark] = Path(self._source(benchmark))
        return self._dirs[benchmark]

    def eval_split(self, benchmark: str) -> str:
        splits = available_splits(self.bench_dir(benchmark))
        paper = PAPER_EVAL_SPLITS.get(benchmark.lower())
        if paper in splits:
            return paper
        for split in EVAL_SPLIT_PREFERENCE:
            if split in splits:
                return split
        raise ValueError(
            f"benchmark {benchmark!r} has no train/dev/test split in "
            f"{str(self.bench_dir(benchmark))!r} (found: {splits})"
        )

    def train_split(self, benchmark: str) -> str:
        # Without a train split, train on the eval split; the eval sample is held out upstream.
        if "train" in available_splits(self.bench_dir(benchmark)):
            return "train"
        return self.eval_split(benchmark)

    def records(self, benchmark: str, split: str) -> list[QARecord]:
        if (benchmark, split) not in self._splits:
            records = load_split(self.bench_dir(benchmark), split)
            # The folder name of a hub snapshot or mirror may differ in case; trust the config.
            self._splits[benchmark, split] = [_retag(r, benchmark) for r in records]
        return self._splits[benchmark, split]


def _retag(record: QARecord, benchmark: str) -> QARecord:
    if record.benchmark == benchmark:
        return record
    return QARecord(record.id, record.question, record.golden_answers, benchmark, record.split)


def _rng(seed: int, role: str, benchmark: str) -> np.random.Generator:
    # One stream per (role, benchmark): adding a benchmark to one list never reshuffles another.
    return np.random.default_rng([seed, zlib.crc32(role.encode()), zlib.crc32(benchmark.encode())])


def _candidates(
    records: list[QARecord], used: set[str], rng: np.random.Generator
) -> list[QARecord]:
    """Shuffled records whose normalized question is unused, first occurrence of each kept."""
    seen: set[str] = set()
    out = []
    for i in rng.permutation(len(records)):
        record = records[int(i)]
        key = normalize_question(record.question)
        if key in used or key in seen:
            continue
        seen.add(key)
        out.append(record)
    return out


def allocate(total: int, capacities: Sequence[int]) -> list[int]:
    """Split ``total`` as evenly as possible under per-slot ``capacities``; earlier slots get
    the remainder. A slot that runs out passes its share on to the others."""
    quotas = [0] * len(capacities)
    remaining = total
    active = [i for i, cap in enumerate(capacities) if cap > 0]
    while remaining > 0 and active:
        share, extra = divmod(remaining, len(active))
        for rank, i in enumerate(active):
            give = min(share + (1 if rank < extra else 0), capacities[i] - quotas[i])
            quotas[i] += give
            remaining -= give
        active = [i for i in active if quotas[i] < capacities[i]]
    return quotas


def _draw_eval(
    cfg: SamplingConfig,
    loader: _Loader,
    used: set[str],
    manifest: list[dict[str, Any]] | None = None,
) -> list[QARecord]:
    """Up to ``n_eval`` questions per eval benchmark. With ``manifest`` (a list to fill), a
    benchmark missing from the source is skipped and recorded there; without it, it raises."""
    out: list[QARecord] = []
    for bench in cfg.eval_benchmarks:
        try:
            split = loader.eval_split(bench)
        except MissingBenchmarkError as e:
            if manifest is None:
                raise
            log.warning("eval: skipping benchmark %r: %s", bench, e)
            manifest.append(
                {"benchmark": bench, "status": "skipped", "reason": str(e), "requested": cfg.n_eval}
            )
            continue
        records = loader.records(bench, split)
        pool = _candidates(records, used, _rng(cfg.seed, "eval", bench))
        picked = pool[: cfg.n_eval]
        if len(picked) < cfg.n_eval:
            log.warning(
                "eval: benchmark %r has only %d usable questions in %s (asked %d)",
                bench,
                len(picked),
                split,
                cfg.n_eval,
            )
        used.update(normalize_question(r.question) for r in picked)
        out.extend(picked)
        if manifest is not None:
            manifest.append(
                {
                    "benchmark": bench,
                    "status": "ok",
                    "split": split,
                    "n": len(picked),
                    "requested": cfg.n_eval,
                    "available": len(records),
                }
            )
    return out


def _draw_total(
    role: str,
    benchmarks: tuple[str, ...],
    total: int,
    cfg: SamplingConfig,
    loader: _Loader,
    used: set[str],
    strict: bool,
) -> list[QARecord]:
    """Draw ``total`` questions spread over ``benchmarks`` from what ``used`` leaves.

    An exhausted benchmark raises when ``strict``, else passes its share to the others.
    """
    if total == 0:
        return []
    pools = []
    for bench in benchmarks:
        split = loader.train_split(bench)
        pool = _candidates(loader.records(bench, split), used, _rng(cfg.seed, role, bench))
        if not pool:
            message = (
                f"{role}: benchmark {bench!r} has nothing left to draw from split {split!r} "
                "after holding out the questions already sampled"
            )
            if strict:
                raise ValueError(message)
            log.warning("%s; its share goes to the other benchmarks", message)
        pools.append(pool)
    quotas = allocate(total, [len(p) for p in pools])
    out: list[QARecord] = []
    for bench, pool, quota in zip(benchmarks, pools, quotas, strict=True):
        picked: list[QARecord] = []
        for record in pool:  # skip questions an earlier benchmark of this role already took
            if len(picked) == quota:
                break
            key = normalize_question(record.question)
            if key not in used:
                used.add(key)
                picked.append(record)
        if len(picked) < quota:
            log.warning("%s: benchmark %r gave %d of %d questions", role, bench, len(picked), quota)
        out.extend(picked)
    if not out:
        raise ValueError(f"{role}: nothing left to draw from any of {list(benchmarks)}")
    if len(out) < total:
        log.warning("%s: sampled %d questions, fewer than the %d asked", role, len(out), total)
    return out


@dataclass(frozen=True)
class SampledSplits:
    """The three disjoint samples, plus one manifest entry per configured eval benchmark:
    ``{"benchmark", "status": "ok", "split", "n", "requested", "available"}`` or
    ``{"benchmark", "status": "skipped", "reason", "requested"}``."""

    train: list[QARecord]
    eval: list[QARecord]
    profile: list[QARecord]
    eval_manifest: list[dict[str, Any]]

    @property
    def skipped(self) -> dict[str, str]:
        """Skipped eval benchmark -> why."""
        return {m["benchmark"]: m["reason"] for m in self.eval_manifest if m["status"] != "ok"}


def _sample(
    cfg: SamplingConfig, source: Callable[[str], Path], manifest: list[dict[str, Any]] | None
) -> dict[str, list[QARecord]]:
    loader = _Loader(source)
    used: set[str] = set()
    eval_set = _draw_eval(cfg, loader, used, manifest)
    # A train benchmark with nothing left is a config error; profiling only needs some questions.
    train_set = _draw_total(
        "train", cfg.train_benchmarks, cfg.n_train, cfg, loader, used, strict=True
    )
    profile_set = _draw_total(
        "profile", cfg.resolved_profile_benchmarks, cfg.n_profile, cfg, loader, used, strict=False
    )
    return {"train": train_set, "eval": eval_set, "profile": profile_set}


def build_splits(cfg: SamplingConfig, source: Callable[[str], Path]) -> dict[str, list[QARecord]]:
    """Sample the eval, train and profile sets, disjoint by normalized question.

    ``source`` maps a benchmark name to its folder (e.g. a lambda over resolve_benchmark_dir).
    Eval takes up to ``n_eval`` per benchmark from its paper split (``PAPER_EVAL_SPLITS``) if
    present, else test, else dev, else train; a benchmark with fewer rows gives all of them.
    Train then draws ``n_train`` in total from each train benchmark's train split (or its eval
    split, with the eval sample held out); profile draws ``n_profile`` from what is left. A
    train benchmark with nothing left raises ValueError; an exhausted profile benchmark only
    warns, unless every profile benchmark is exhausted. Any missing benchmark raises
    MissingBenchmarkError (``sample_splits`` skips missing eval benchmarks instead).
    """
    return _sample(cfg, source, None)


def sample_splits(cfg: SamplingConfig, source: Callable[[str], Path]) -> SampledSplits:
    """``build_splits``, but an eval benchmark missing from the source is skipped with a
    warning and recorded in ``eval_manifest``. Raises ValueError if every one is missing."""
    manifest: list[dict[str, Any]] = []
    splits = _sample(cfg, source, manifest)
    out = SampledSplits(splits["train"], splits["eval"], splits["profile"], manifest)
    if not out.eval:
        reasons = "; ".join(f"{b}: {r}" for b, r in out.skipped.items()) or "no questions"
        raise ValueError(f"eval_benchmarks: nothing to evaluate ({reasons})")
    return out


def with_question_mark(records: Iterable[QARecord]) -> list[QARecord]:
    """Each question stripped and ending in '?' (one is appended when missing), as Router-R1's
    data scripts write them. Disjointness is unaffected: normalize_question trims punctuation."""
    out = []
    for r in records:
        question = r.question.strip()
        if not question.endswith("?"):
            question += "?"
        out.append(QARecord(r.id, question, r.golden_answers, r.benchmark, r.split))
    return out


# --------------------------------------------------------------------------- parquet I/O


def records_to_frame(records: Iterable[QARecord]) -> pd.DataFrame:
    """One row per record; ``golden_answers`` is a list column."""
    rows = [
        {
            "id": r.id,
            "question": r.question,
            "golden_answers": list(r.golden_answers),
            "benchmark": r.benchmark,
            "split": r.split,
        }
        for r in records
    ]
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))


def read_records(path: Path) -> list[QARecord]:
    """Read a parquet written from records_to_frame back into validated records."""
    path = Path(path)
    frame = pd.read_parquet(path)
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    out = []
    for where, row in _iter_parquet(path, frame):
        for field in ("benchmark", "split"):
            if not isinstance(row.get(field), str) or not row[field]:
                raise ValueError(f"{where}: field {field!r} must be a non-empty string")
        out.append(_row_to_record(row, where, row["benchmark"], row["split"]))
    return out
