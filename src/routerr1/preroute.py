"""Pre-routing from the question text: tf-idf words, ridge regression, route by score.

Per pool model, a ridge regression of its correctness on tf-idf word features of the question
(closed form, the penalty chosen by exact leave-one-out error), then route each question to
argmax(predicted EM - lambda * relative cost). The headroom's "pre-route (text)" strategy and
the warm start's predicted routing (``warmstart.routing: predicted``) both use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "PREROUTE_MAX_FEATURES",
    "PREROUTE_RIDGES",
    "ridge_predictions",
    "route_by_score",
    "tfidf",
]

PREROUTE_RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0)
PREROUTE_MAX_FEATURES = 1000
_WORD = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def tfidf(
    train: Sequence[str], test: Sequence[str], max_features: int = PREROUTE_MAX_FEATURES
) -> tuple[np.ndarray, np.ndarray]:
    """tf-idf word features fitted on ``train`` (words in 2+ training questions, at most
    ``max_features`` by document frequency), rows L2-normalized, plus a constant column."""
    docs = [_tokens(q) for q in train]
    df: dict[str, int] = {}
    for d in docs:
        for w in set(d):
            df[w] = df.get(w, 0) + 1
    words = sorted((w for w, c in df.items() if c >= 2), key=lambda w: (-df[w], w))
    vocab = {w: i for i, w in enumerate(words[:max_features])}
    idf = np.log((1 + len(docs)) / (1 + np.array([df[w] for w in vocab], dtype=float))) + 1.0

    def matrix(texts: Sequence[str]) -> np.ndarray:
        x = np.zeros((len(texts), len(vocab) + 1))
        for i, text in enumerate(texts):
            for w in _tokens(text):
                if w in vocab:
                    x[i, vocab[w]] += 1.0
        x[:, :-1] *= idf
        norms = np.linalg.norm(x[:, :-1], axis=1, keepdims=True)
        x[:, :-1] = np.divide(x[:, :-1], norms, out=np.zeros_like(x[:, :-1]), where=norms > 0)
        x[:, -1] = 1.0  # intercept (penalized like the rest: shrinks towards 0, mildly)
        return x

    return matrix(train), matrix(test)


def _thin_svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD through the eigendecomposition of the smaller Gram matrix: many times faster
    than LAPACK's gesdd here, and exact enough for ridge (directions with a negligible singular
    value are dropped; ridge shrinks them to nothing anyway)."""
    n, d = x.shape
    gram = x.T @ x if n >= d else x @ x.T
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > max(float(vals.max()), 0.0) * 1e-12
    vals, vecs = vals[keep], vecs[:, keep]
    s = np.sqrt(vals)
    if n >= d:  # vecs are the right singular vectors
        return (x @ vecs) / s, s, vecs.T
    return vecs, s, ((x.T @ vecs) / s).T


def ridge_predictions(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge regression of every column of ``y_train`` on ``x_train``, closed form by SVD.

    The penalty is chosen from `PREROUTE_RIDGES` by leave-one-out error (exact for ridge:
    residual / (1 - leverage)). Returns (leave-one-out predictions on train, predictions on
    test, the penalty).
    """
    u, s, vt = _thin_svd(x_train)
    uty = u.T @ y_train
    best = None
    for r in PREROUTE_RIDGES:
        shrink = s**2 / (s**2 + r)
        fitted = u @ (shrink[:, None] * uty)
        leverage = (u**2) @ shrink
        loo = y_train - (y_train - fitted) / (1.0 - leverage)[:, None]
        err = float(np.mean((loo - y_train) ** 2))
        if best is None or err < best[0] - 1e-12:
            best = (err, r, loo)
    _, r, loo = best
    coef = vt.T @ ((s / (s**2 + r))[:, None] * uty)
    return loo, x_test @ coef, r


def route_by_score(predicted_em: np.ndarray, rel_cost: np.ndarray, lam: float) -> np.ndarray:
    """Per question the model maximizing predicted EM - lam * relative cost (ties: cheaper).

    Columns must be ordered cheapest first: argmax's first-hit rule breaks ties to the cheaper.
    """
    score = predicted_em - lam * rel_cost[None, :]
    return np.argmax(score, axis=1)
