"""Evaluation at paper scale: seven benchmarks with missing ones skipped (never silently), small
benchmarks evaluated whole, greedy-by-default decoding with sampling as an option, and a KNN
baseline that learns from the training questions' pool answers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from conftest import run_config

from routerr1.config import ConfigError, EvalConfig, PoolEntry, RolloutConfig, eval_config
from routerr1.config import load_config as load_cfg
from routerr1.data import (
    PAPER_EVAL_SPLITS,
    MissingBenchmarkError,
    QARecord,
    SamplingConfig,
    resolve_benchmark_dir,
    sample_splits,
)
from routerr1.evaluate import (
    _row,
    batch_seed,
    eval_rollout_config,
    evaluate_router,
    run_in_batches,
)
from routerr1.methods import ROUTER_COLUMNS, ROW_COLUMNS
from routerr1.pool.base import Generation, Pool
from routerr1.prompt import Descriptor
from routerr1.report.aggregate import aggregate
from routerr1.report.markdown import render_markdown
from routerr1.stages import baselines as baseline_stages
from routerr1.stages import data as data_stages

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _jsonl(path: Path, prefix: str, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": f"{path.stem}_{i}", "question": f"{prefix} question {i}?", "golden_answers": ["a"]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """nq (train+test), hotpotqa (train+dev+test: the paper scores dev), 3-row bamboogle; no
    popqa."""
    root = tmp_path / "flashrag"
    _jsonl(root / "nq" / "train.jsonl", "nq train", 12)
    _jsonl(root / "nq" / "test.jsonl", "nq test", 10)
    for split in ("train", "dev", "test"):
        _jsonl(root / "hotpotqa" / f"{split}.jsonl", f"hotpot {split}", 10)
    _jsonl(root / "bamboogle" / "test.jsonl", "bamboogle test", 3)
    return root


def _sampling(**kw) -> SamplingConfig:
    base = dict(
        train_benchmarks=("nq",),
        eval_benchmarks=("nq", "popqa", "hotpotqa", "bamboogle"),
        n_train=4,
        n_eval=5,
        n_profile=2,
        seed=0,
    )
    return SamplingConfig(**{**base, **kw})


# --------------------------------------------------------------------------- benchmarks


def test_paper_benchmarks_use_flashrag_splits(mirror: Path) -> None:
    assert PAPER_EVAL_SPLITS == {
        "nq": "test",
        "triviaqa": "test",
        "popqa": "test",
        "hotpotqa": "dev",
        "2wikimultihopqa": "dev",
        "musique": "dev",
        "bamboogle": "test",
    }
    out = sample_splits(_sampling(), lambda b: resolve_benchmark_dir(b, mirror))
    splits = {r.benchmark: r.split for r in out.eval}
    assert splits == {"nq": "test", "hotpotqa": "dev", "bamboogle": "test"}


def test_missing_eval_benchmark_is_skipped_with_warning_and_reason(mirror, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="routerr1.data"):
        out = sample_splits(_sampling(), lambda b: resolve_benchmark_dir(b, mirror))
    assert "popqa" in caplog.text and "skipping" in caplog.text
    assert set(out.skipped) == {"popqa"} and "not found in data_mirror" in out.skipped["popqa"]
    by = {m["benchmark"]: m for m in out.eval_manifest}
    assert list(by) == ["nq", "popqa", "hotpotqa", "bamboogle"]  # config order
    assert by["popqa"]["status"] == "skipped"
    # bamboogle has fewer rows than n_eval: every one of them is used
    assert by["bamboogle"] == {
        "benchmark": "bamboogle",
        "status": "ok",
        "split": "test",
        "n": 3,
        "requested": 5,
        "available": 3,
    }
    assert [r.benchmark for r in out.eval].count("bamboogle") == 3
    assert len(out.train) == 4 and len(out.profile) == 2


def test_missing_train_benchmark_or_every_eval_benchmark_is_an_error(mirror) -> None:
    src = lambda b: resolve_benchmark_dir(b, mirror)  # noqa: E731
    with pytest.raises(MissingBenchmarkError, match="'popqa'"):
        sample_splits(_sampling(train_benchmarks=("popqa",)), src)
    with pytest.raises(ValueError, match="nothing to evaluate.*musique"):
        sample_splits(_sampling(eval_benchmarks=("popqa", "musique")), src)


def test_download_stage_writes_manifest(mirror, tmp_path) -> None:
    cfg = {
        "seed": 0,
        "data_mirror": str(mirror),
        "data": {
            "train_benchmarks": ["nq"],
            "eval_benchmarks": ["nq", "popqa", "bamboogle"],
            "n_train": 4,
            "n_eval": 5,
            "n_profile": 2,
            "hub_repo": "unused",
            "hub_revision": "main",
        },
    }
    outs = [str(tmp_path / f"{n}.parquet") for n in ("train", "eval", "profile")]
    first = data_stages.download_data(run_config(**cfg), *outs)
    assert set(pd.read_parquet(outs[1])["benchmark"]) == {"nq", "bamboogle"}
    # the manifest stage redoes the seeded sampling and agrees with the eval set on disk
    manifest = data_stages.eval_manifest(run_config(**cfg), outs[1], str(tmp_path / "m.json"))
    assert manifest == first == json.loads((tmp_path / "m.json").read_text())
    assert manifest["source"] == str(mirror)
    assert [m["status"] for m in manifest["benchmarks"]] == ["ok", "skipped", "ok"]
    cfg["data"]["n_eval"] = 2  # a stale eval set is refused, not described wrongly
    with pytest.raises(ValueError, match="rerun download_data"):
        data_stages.eval_manifest(run_config(**cfg), outs[1], str(tmp_path / "m2.json"))


def _rec(i: int, bench: str = "bamboogle") -> QARecord:
    return QARecord(f"q{i}", f"question {i}", ("a",), bench, "test")


def _answer(chunk, sizes):
    sizes.append(len(chunk))
    return [
        _row("m", "single", None, r, "a", pool_calls=1, invalid_actions=0, pool_errors=0,
             in_tokens=1, out_tokens=1, cost=0.0, latency_s=0.0, trajectory="")
        for r in chunk
    ]  # fmt: skip


@pytest.mark.parametrize(("n", "batch", "expected"), [(3, 8, [3]), (10, 8, [8, 2]), (8, 8, [8])])
def test_last_incomplete_batch_is_evaluated(n: int, batch: int, expected: list[int]) -> None:
    sizes: list[int] = []
    rows = run_in_batches([_rec(i) for i in range(n)], batch, lambda c: _answer(c, sizes), "m")
    assert sizes == expected
    assert list(rows["qid"]) == [f"q{i}" for i in range(n)]


# --------------------------------------------------------------------------- Snakemake


def _smk_config(tmp_path: Path, mirror: Path) -> Path:
    cfg = yaml.safe_load((REPO / "tests" / "data" / "smoke.yaml").read_text())
    cfg["data"]["eval_benchmarks"] = ["nq", "popqa", "bamboogle"]
    cfg["data"]["n_eval"] = 5
    cfg["data_mirror"] = str(mirror)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(configfile), "--cores", "1", *args]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_snakemake_skips_a_benchmark_missing_from_the_mirror(mirror, tmp_path) -> None:
    configfile = _smk_config(tmp_path, mirror)
    wd = tmp_path / "wd"
    # the skip is announced before any job runs; the data stage samples the rest and logs the
    # skip, and eval_manifest writes what the report reads (aggregate takes it as an input)
    run = _snakemake(wd, configfile, "results/data/eval_manifest.json")
    assert "'popqa' is not in data_mirror" in run.stdout + run.stderr
    assert "skipping benchmark 'popqa'" in (wd / "logs" / "download_data.log").read_text()
    manifest = json.loads((wd / "results" / "data" / "eval_manifest.json").read_text())
    assert {m["benchmark"]: m["status"] for m in manifest["benchmarks"]} == {
        "nq": "ok",
        "popqa": "skipped",
        "bamboogle": "ok",
    }
    assert "SKIPPED eval benchmark 'popqa'" in (wd / "logs" / "eval_manifest.log").read_text()
    smk_logs = "".join(p.read_text() for p in (wd / ".snakemake" / "log").glob("*.log"))
    assert "'popqa' is not in data_mirror" in smk_logs
    evals = pd.read_parquet(wd / "results" / "data" / "eval.parquet")
    assert evals["benchmark"].value_counts().to_dict() == {"nq": 5, "bamboogle": 3}


# --------------------------------------------------------------------------- report


def _eval_file(tmp_path: Path) -> Path:
    rows = [
        {"method": m, "family": f, "alpha": a, "benchmark": b, "qid": str(i), "em": 1.0,
         "f1": 1.0, "cost": c, "pool_calls": 1, "invalid_actions": 0, "pool_errors": 0}
        for m, f, a, c in [("router-r1@a0.9", "router-r1", 0.9, 1e-6),
                           ("router-r1@a0.0", "router-r1", 0.0, 1e-4),
                           ("single:A", "single", None, 1e-5)]
        for b in ("nq", "bamboogle")
        for i in range(3)
    ]  # fmt: skip
    path = tmp_path / "rows.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


MANIFEST = {
    "source": "mirror",
    "benchmarks": [
        {"benchmark": "nq", "status": "ok", "split": "test", "n": 3, "requested": 3,
         "available": 10},
        {"benchmark": "popqa", "status": "skipped", "requested": 3,
         "reason": "benchmark 'popqa' not found in data_mirror 'x'"},
        {"benchmark": "bamboogle", "status": "ok", "split": "test", "n": 3, "requested": 500,
         "available": 3},
    ],
}  # fmt: skip


def test_summary_lists_skipped_benchmarks_and_decoding(tmp_path) -> None:
    out = tmp_path / "out"
    decoding = {"decoding": "sampled", "temperature": 1.0, "top_p": 0.9, "sample_seed": 7}
    summary = aggregate(
        [_eval_file(tmp_path)],
        out / "s.duckdb",
        out / "s.csv",
        out / "s.md",
        manifest=MANIFEST,
        decoding=decoding,
    )
    md = (out / "s.md").read_text()
    assert "Router decoding at evaluation: sampled (temperature 1, top_p 0.9, seed 7)" in md
    skipped = md.split("## Skipped benchmarks")[1].split("##")[0]
    assert "- **popqa**: benchmark 'popqa' not found in data_mirror 'x'" in skipped
    assert "| bamboogle | test | 3 | 500 | 3 |" in md
    assert "Evaluated on every question it has: bamboogle." in md
    greedy = render_markdown(summary, {"benchmarks": MANIFEST["benchmarks"][:1]}, {})
    assert "Router decoding at evaluation: greedy." in greedy
    assert "None: every configured evaluation benchmark was found." in greedy


def test_pareto_page_is_log_x_with_routers_in_alpha_order(tmp_path) -> None:
    from routerr1.report.plot import _page_figure

    out = tmp_path / "out"
    summary = aggregate([_eval_file(tmp_path)], out / "s.duckdb", out / "s.csv", out / "s.md")
    ax = _page_figure(summary, "average").axes[0]
    assert ax.get_xscale() == "log"
    router = next(line for line in ax.get_lines() if line.get_label() == "Router-R1")
    assert list(router.get_xdata()) == pytest.approx([1e-4, 1e-6])  # alpha 0.0, then 0.9
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "single:A" in labels and any(lbl.startswith("Pareto frontier") for lbl in labels)


# --------------------------------------------------------------------------- decoding


def test_eval_decoding_is_greedy_by_default_and_checked() -> None:
    assert EvalConfig().decoding(3) == {"decoding": "greedy"}
    cfg = load_cfg(REPO / "config" / "config.yaml")
    assert eval_config(cfg).decoding(0) == {"decoding": "greedy"}
    sampled = EvalConfig(temperature=1.0, top_p=0.9)
    assert sampled.decoding(3) == {
        "decoding": "sampled",
        "temperature": 1.0,
        "top_p": 0.9,
        "sample_seed": 3,
    }
    assert EvalConfig(temperature=0.5, sample_seed=11).decoding(3)["sample_seed"] == 11
    with pytest.raises(ConfigError, match="eval.greedy"):
        EvalConfig(greedy=True, temperature=1.0)
    with pytest.raises(ConfigError, match="eval.greedy"):
        EvalConfig(greedy=False)
    base = RolloutConfig(temperature=1.0, top_p=1.0)
    assert eval_rollout_config(base, 0.0, 0.5) == (base, True)
    cfg2, greedy = eval_rollout_config(base, 0.7, 0.9)
    assert not greedy and (cfg2.temperature, cfg2.top_p) == (0.7, 0.9)
    assert cfg2.max_turns == base.max_turns
    recs = [_rec(i) for i in range(3)]
    assert batch_seed(0, recs) == batch_seed(0, list(recs)) != batch_seed(1, recs)


def _byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


class _AnsweringModel(torch.nn.Module):
    """Stands in for the policy: records generate()'s kwargs and answers at once."""

    def __init__(self, tok) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.reply = tok("<answer>Paris</answer>", add_special_tokens=False).input_ids
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append({**kwargs, "seed_draw": torch.rand(1).item()})
        tail = torch.tensor([self.reply] * input_ids.shape[0])
        return SimpleNamespace(sequences=torch.cat([input_ids, tail], dim=1), past_key_values=None)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_router_evaluation_passes_decoding_to_generate(temperature: float) -> None:
    tok = _byte_tokenizer()
    model = _AnsweringModel(tok)
    pool = Pool([PoolEntry("A", "a", 0.1, 0.2)], lambda e: pytest.fail("no pool call expected"))
    desc = [Descriptor("A", "a model", 0.1, 0.2, 0.1, 50.0, 60.0)]

    def run(seed: int) -> pd.DataFrame:
        return evaluate_router(
            model=model, tokenizer=tok, pool=pool, descriptors=desc,
            records=[_rec(i) for i in range(3)],
            # the stand-in has no forward(): no shared prefill, generate() only
            rollout_cfg=RolloutConfig(temperature=1.0, reuse_kv_cache=False),
            method="router-r1@a0.0", family="router-r1", alpha=0.0, batch_size=2,
            temperature=temperature, top_p=0.9, sample_seed=seed,
        )  # fmt: skip

    rows = run(5)
    assert list(rows.columns) == ROUTER_COLUMNS and list(rows["prediction"]) == ["Paris"] * 3
    assert rows["call_models"].map(list).tolist() == [[]] * 3  # answered without a call
    assert [len(c) for c in model.calls] and len(model.calls) == 2  # batches of 2 and 1
    call = model.calls[0]
    # the engine samples through its own processors (Gumbel argmax), so do_sample stays False
    assert call["do_sample"] is False
    if temperature == 0:
        assert "logits_processor" not in call
    else:
        procs = {type(p).__name__: p for p in call["logits_processor"]}
        assert list(procs) == ["TemperatureLogitsWarper", "TopPLogitsWarper", "GumbelSample"]
        assert procs["TemperatureLogitsWarper"].temperature == 0.7
        assert procs["TopPLogitsWarper"].top_p == 0.9
        # seeded per batch: the same seed draws the same samples
        first = [c["seed_draw"] for c in model.calls]
        model.calls.clear()
        run(5)
        assert [c["seed_draw"] for c in model.calls] == first


class _SearchingModel(_AnsweringModel):
    """Asks pool model A on its first turn, answers on its second."""

    def __init__(self, tok) -> None:
        super().__init__(tok)
        self.search = tok("<search>A: capital?</search>", add_special_tokens=False).input_ids

    def generate(self, input_ids, attention_mask, **kwargs):
        reply = self.search if not self.calls else self.reply
        self.calls.append(kwargs)
        tail = torch.tensor([reply] * input_ids.shape[0])
        return SimpleNamespace(sequences=torch.cat([input_ids, tail], dim=1), past_key_values=None)


class _Replies:
    def answer(self, questions, max_new_tokens=32):
        return [Generation("Lyon", 3, 2, 0.0) for _ in questions]


def test_router_rows_list_their_pool_calls() -> None:
    tok = _byte_tokenizer()
    pool = Pool([PoolEntry("A", "a", 0.1, 0.2)], lambda e: _Replies())
    rows = evaluate_router(
        model=_SearchingModel(tok), tokenizer=tok, pool=pool,
        descriptors=[Descriptor("A", "a model", 0.1, 0.2, 0.1, 50.0, 60.0)],
        records=[_rec(i) for i in range(2)],
        rollout_cfg=RolloutConfig(max_turns=2, reuse_kv_cache=False),
        method="router-r1@a0.0", family="router-r1", alpha=0.0, batch_size=2,
    )  # fmt: skip
    assert rows["pool_calls"].tolist() == [1, 1]
    assert rows["call_models"].map(list).tolist() == [["A"], ["A"]]
    assert rows["call_replies"].map(list).tolist() == [["Lyon"], ["Lyon"]]
    assert rows["prediction"].tolist() == ["Paris", "Paris"]


# --------------------------------------------------------------------------- KNN


def test_knn_stage_learns_from_training_pool_answers(tmp_path, monkeypatch) -> None:
    """The eval question is near a training question that only Big answered; the profiling
    questions alone (where Small wins) would route it to Small."""
    import routerr1.baselines as bl

    def embed(texts):
        # 2-D toy embedding: "capital" questions point one way, everything else the other
        return torch.tensor([[1.0, 0.0] if "capital" in t else [0.0, 1.0] for t in texts]).numpy()

    monkeypatch.setattr(bl, "MiniLMEmbedder", lambda _dir: embed)

    def calls(questions, f1):
        return pd.DataFrame(
            [
                {"model": m, "question": q, "f1": f1[m], "em": f1[m], "cost": c}
                for q in questions
                for m, c in (("Small", 1e-7), ("Big", 1e-5))
            ]
        )

    train = calls(["capital of peru", "capital of chad"], {"Small": 0.0, "Big": 1.0})
    profile = calls(["who wrote x", "who sang y"], {"Small": 1.0, "Big": 0.0})
    train.to_parquet(tmp_path / "pool_answers.parquet")
    profile.to_parquet(tmp_path / "profile_calls.parquet")
    single = []
    for m in ("Small", "Big"):
        rec = QARecord("e0", "capital of fiji", ("Suva",), "nq", "test")
        single.append(
            _row(f"single:{m}", "single", None, rec, "Suva" if m == "Big" else "x", pool_calls=1,
                 invalid_actions=0, pool_errors=0, in_tokens=1, out_tokens=1, cost=1e-6,
                 latency_s=0.0, trajectory="")
        )  # fmt: skip
        pd.DataFrame([single[-1]], columns=ROW_COLUMNS).to_parquet(tmp_path / f"{m}.parquet")
    cfg = {
        "seed": 0,
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"},
        "eval": {"knn": {"k": 2, "embedder": {"package": "x==1"}}},
        "pool": [
            {"name": "Small", "model": "s", "price_in": 0.1, "price_out": 0.2},
            {"name": "Big", "model": "b", "price_in": 1.0, "price_out": 2.0},
        ],
        "models": {
            "s": {"source": {"kind": "hub", "repo_id": "org/s"}},
            "b": {"source": {"kind": "hub", "repo_id": "org/b"}},
        },
        "policy": {"model": "s"},
    }
    singles = [str(tmp_path / f"{m}.parquet") for m in ("Small", "Big")]
    out = tmp_path / "knn.parquet"
    rows = baseline_stages.knn_baseline(
        run_config(**cfg),
        singles,
        [str(tmp_path / "pool_answers.parquet"), str(tmp_path / "profile_calls.parquet")],
        "unused",
        str(out),
    )
    assert list(rows["trajectory"]) == ["route: Big"] and rows["em"].tolist() == [1.0]
    only_profile = bl.knn_rows(pd.concat([pd.read_parquet(p) for p in singles]), profile, embed, 2)
    assert list(only_profile["trajectory"]) == ["route: Small"]
    assert pd.read_parquet(out)["method"].tolist() == ["knn"]
