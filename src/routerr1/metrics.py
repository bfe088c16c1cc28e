"""Answer normalization and scores for open-domain QA (SQuAD conventions).

`normalize_answer` is the SQuAD v1.1 normalization (lowercase, drop ASCII punctuation, drop
the articles a/an/the, collapse whitespace), which is what Router-R1 and Search-R1 report, so
our numbers stay comparable with the paper's. Every score takes the max over the gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = ["normalize_answer", "exact_match", "cover_exact_match", "f1_score"]

_PUNCT = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
# SQuAD/HotpotQA special case: these answers earn F1 credit only when they match exactly.
_EXACT_ONLY = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Lowercase, strip punctuation, drop articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _normalized_golds(golds: Sequence[str]) -> list[str]:
    # A bare str is a Sequence[str] too; iterating it would score against single characters.
    if isinstance(golds, str):
        raise ValueError(f"golds must be a sequence of strings, not a single str: {golds!r}")
    gold_list = list(golds)
    if not gold_list:
        raise ValueError("golds is empty: need at least one gold answer")
    for i, g in enumerate(gold_list):
        if not isinstance(g, str):
            raise ValueError(f"golds[{i}] must be a str, got {type(g).__name__}")
    return [normalize_answer(g) for g in gold_list]


def _normalized_prediction(prediction: str | None) -> str | None:
    if prediction is None:
        return None
    if not isinstance(prediction, str):
        raise ValueError(f"prediction must be a str or None, got {type(prediction).__name__}")
    return normalize_answer(prediction)


def exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold, else 0.0."""
    gold_norms = _normalized_golds(golds)
    pred = _normalized_prediction(prediction)
    if pred is None:
        return 0.0
    return 1.0 if any(pred == g for g in gold_norms) else 0.0


def cover_exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    """1.0 if any normalized gold occurs in the normalized prediction on token boundaries.

    "paris" covers "it is paris france" but not "parisian". A gold that normalizes to the
    empty string only covers an empty prediction (otherwise it would cover everything).
    """
    gold_norms = _normalized_golds(golds)
    pred = _normalized_prediction(prediction)
    if pred is None:
        return 0.0
    # Normalized text is single-space separated, so padding with spaces gives token bounds.
    padded = f" {pred} "
    for g in gold_norms:
        if (not g and not pred) or (g and f" {g} " in padded):
            return 1.0
    return 0.0


def _f1_single(pred: str, gold: str) -> float:
    if pred != gold and (pred in _EXACT_ONLY or gold in _EXACT_ONLY):
        return 0.0
    pred_tokens = pred.split()
    gold_tokens = gold.split()
    if not pred_tokens or not gold_tokens:
        # Both empty is a match (consistent with EM); one empty shares no tokens.
        return 1.0 if pred_tokens == gold_tokens else 0.0
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golds: Sequence[str]) -> float:
    """Token-level F1 between normalized prediction and gold, max over golds."""
    gold_norms = _normalized_golds(golds)
    pred = _normalized_prediction(prediction)
    if pred is None:
        return 0.0
    return max(_f1_single(pred, g) for g in gold_norms)
