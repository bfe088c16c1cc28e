"""KV-cache helpers shared by the rollout engine and the in-process pool models."""

from __future__ import annotations

from collections.abc import Sequence

MIN_SHARED_PREFIX = 16  # tokens; below this a shared prefill saves less than it costs


def plain_cache(cache) -> bool:
    """Row selection and padding assume full-attention DynamicCache layers (no sliding windows,
    no offloading); anything else is generated in one piece and re-prefilled."""
    return type(cache).__name__ == "DynamicCache" and all(
        type(layer).__name__ == "DynamicLayer" for layer in cache.layers
    )


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the prefix every sequence shares, leaving each at least one token after it
    (a row needs one token of its own to run before it can generate)."""
    common = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        n = 0
        while n < common and s[n] == first[n]:
            n += 1
        common = n
    return max(common, 0)
