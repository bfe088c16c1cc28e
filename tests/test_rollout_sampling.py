"""The rollout's own stop rule and sampler: same semantics as transformers' slow paths."""

from __future__ import annotations

import torch

from routerr1.rollout import GumbelSample, TagStop


class CharTokenizer:
    """One token per character: the worst case for a tag split over many tokens."""

    def batch_decode(self, rows, skip_special_tokens=True):
        return ["".join(chr(t) for t in row if t) for row in rows]


def ids(texts: list[str], width: int) -> torch.Tensor:
    return torch.tensor([[0] * (width - len(t)) + [ord(c) for c in t] for t in texts])


def test_tag_stop_fires_per_row_only_on_generated_text():
    prompt = "see <search>X: q</search> "  # a tag in the context must not stop generation
    rows = [prompt + "<think>a</think><search>M: y</search>", prompt + "<think>still going"]
    width = max(map(len, rows))
    stop = TagStop(CharTokenizer(), start=len(prompt) + (width - len(rows[0])))
    assert stop(ids(rows, width)).tolist() == [True, False]
    answered = ids([prompt + "</answer>", prompt + "x"], len(prompt) + 9)
    assert stop(answered).tolist() == [True, False]


def test_tag_stop_needs_the_whole_tag():
    prompt = "q: "
    stop = TagStop(CharTokenizer(), start=len(prompt))
    assert stop(ids([prompt + "<answer>Paris</answ"], 22)).tolist() == [False]
    assert stop(ids([prompt + "<answer>Paris</answer>"], 25)).tolist() == [True]


def test_gumbel_argmax_samples_the_softmax_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf")])
    n = 40_000
    scores = logits.expand(n, -1).clone()
    picks = GumbelSample()(None, scores).argmax(dim=-1)
    freq = torch.bincount(picks, minlength=5).float() / n
    expected = torch.softmax(logits, dim=-1)
    assert freq[4] == 0  # a token filtered out (e.g. by top-p) is never drawn
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0.0)
