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


def test_unsplittable_cache_finishes_the_turn_without_growing_stopped_rows():
    """A model whose cache cannot be split (here: none at all) still decodes in one turn, and a
    row that stopped in an early segment keeps exactly what it wrote before stopping."""
    from types import SimpleNamespace

    from test_eval_scale import _byte_tokenizer

    from routerr1.config import PoolEntry, RolloutConfig
    from routerr1.pool.base import Pool
    from routerr1.rollout import RolloutEngine

    tok = _byte_tokenizer()
    scripts = {  # per prompt: what the fake policy writes, a segment at a time
        "a": "<answer>Paris</answer>and more",
        "b": "<think>long thought</think><answer>Rome</answer>",
    }

    class Scripted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.calls = 0

        def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
            self.calls += 1
            rows = []
            for row in input_ids.tolist():
                text = tok.decode([t for t in row if t != tok.pad_token_id])
                key = "a" if text.startswith("a") else "b"
                done = len(text) - 1  # characters of the script already written
                piece = scripts[key][done : done + max_new_tokens]
                ids = tok(piece, add_special_tokens=False).input_ids
                rows.append(ids + [tok.pad_token_id] * (max_new_tokens - len(ids)))
            new = torch.tensor(rows)
            return SimpleNamespace(sequences=torch.cat([input_ids, new], 1), past_key_values=None)

    pool = Pool([PoolEntry("A", "a", 0.1, 0.2)], lambda e: None)
    cfg = RolloutConfig(max_turns=0, max_final_tokens=60, decode_segment=24)
    model = Scripted()
    trajs = RolloutEngine(tok, pool, cfg).run(model, ["a", "b"], greedy=True)
    assert [t.answer for t in trajs] == ["Paris", "Rome"]
    assert trajs[0].text == "<answer>Paris</answer>"  # nothing after its stop crept in
    assert model.calls == 2  # one segment, then the rest of the turn in one piece
