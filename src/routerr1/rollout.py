"""Batched multi-turn router rollout: generate -> parse -> batched pool calls -> inject -> continue.

Each sample alternates policy turns and injected ``<information>`` blocks. Policy tokens are 1 in
``env_mask``; injected tokens are 0, so GRPO never trains on text the policy did not write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from routerr1.config import RolloutConfig
from routerr1.kvcache import MIN_SHARED_PREFIX, common_prefix_length, plain_cache
from routerr1.packed_linear import packed_linears
from routerr1.parse import (
    ModelNameResolver,
    extract_answer,
    find_action,
    last_search_content,
    parse_search,
    strip_tags,
)
from routerr1.pool.base import Pool, PoolCall
from routerr1.precision import resolve_linear_kernel

log = logging.getLogger(__name__)

STOP_STRINGS = ["</search>", "</answer>"]


@dataclass
class Trajectory:
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    calls: list[PoolCall] = field(default_factory=list)
    invalid_actions: int = 0
    refused_calls: int = 0  # valid searches not run: the sample's CallBudget was spent
    injected: int = 0
    done: bool = False
    text: str = ""
    answer: str | None = None

    @property
    def cost(self) -> float:
        return sum(c.cost for c in self.calls)

    @property
    def pool_errors(self) -> int:
        return sum(1 for c in self.calls if c.error)

    @property
    def in_tokens(self) -> int:
        return sum(c.in_tokens for c in self.calls)

    @property
    def out_tokens(self) -> int:
        return sum(c.out_tokens for c in self.calls)


@dataclass(frozen=True)
class CallBudget:
    """Per-sample limits on pool use (a served request's). A search is refused, with an
    observation saying so, once the sample has made ``max_calls`` calls or spent
    ``max_cost`` dollars; cost is known only after a call, so the call that crosses
    ``max_cost`` is the last one made."""

    max_calls: int | None = None
    max_cost: float | None = None

    def spent(self, traj: Trajectory) -> str | None:
        """Which limit ``traj`` has reached, or None."""
        if self.max_calls is not None and len(traj.calls) >= self.max_calls:
            return f"the limit of {self.max_calls} model calls is reached"
        if self.max_cost is not None and traj.cost >= self.max_cost:
            return f"the cost limit of ${self.max_cost:g} is reached"
        return None


@dataclass(frozen=True)
class StepEvent:
    """What one sample just did, reported while the batch runs (``RolloutEngine.run``'s
    ``on_step``). ``kind``: ``generated`` (the policy's text of this turn), ``information``
    (a pool call's observation; ``call`` is set), ``invalid`` (guidance after an invalid
    search) or ``refused`` (a search not run because its CallBudget is spent). ``text`` is
    what was generated, or the observation as injected."""

    kind: str
    text: str
    call: PoolCall | None = None


def cut_at_action(tokenizer, gen_ids: Sequence[int]) -> tuple[int, str | None]:
    """Smallest prefix length whose decoded text holds the first complete action tag.

    Stop strings can fire inside merged tokens (e.g. ``>\\n``), so we cut at the token whose decoded
    prefix first contains the closing tag rather than at a character offset.
    """
    full = find_action(tokenizer.decode(gen_ids, skip_special_tokens=True))
    if full is None:
        return len(gen_ids), None
    lo, hi = 1, len(gen_ids)
    while lo < hi:  # the predicate is monotone in the prefix length
        mid = (lo + hi) // 2
        if find_action(tokenizer.decode(gen_ids[:mid], skip_special_tokens=True)) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo, full[0]


def _strip_generated(
    ids: list[int], eos_ids: set[int], pad_id: int | None
) -> tuple[list[int], bool]:
    """Drop right padding; keep the first EOS (the policy did write it). Returns (ids, hit_eos)."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1], True
    if pad_id is not None:
        while ids and ids[-1] == pad_id:
            ids = ids[:-1]
    return ids, False


@dataclass
class _Batch:
    rows: list[int]  # indices into the contexts of this generate call
    ids: torch.Tensor
    mask: torch.Tensor
    cache: Any  # a transformers Cache covering ids[:, :-1], or None
    pad: int | None


@dataclass
class _KVState:
    """One generate call's batch after it ran: what the next turn may continue from."""

    ids: torch.Tensor  # context + generated columns
    width: int  # context columns
    mask: torch.Tensor
    cache: Any  # covers ids[:, :-1]
    contexts: list[list[int]]
    generated: list[list[int]]


class TagStop:
    """Per-row stop once the text generated in this call contains a closing action tag.

    Same rule as transformers' ``stop_strings``, without its per-call scan of the whole
    vocabulary (seconds per ``generate`` for a 150k-token vocabulary): only the last few
    generated tokens of each row are decoded at each step.
    """

    def __init__(self, tokenizer, start: int, stops: Sequence[str] = STOP_STRINGS, window=16):
        self.tok, self.start, self.stops, self.window = tokenizer, start, tuple(stops), window

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.BoolTensor:
        lo = max(self.start, input_ids.size(1) - self.window)
        tails = self.tok.batch_decode(input_ids[:, lo:].tolist(), skip_special_tokens=True)
        hit = [any(s in t for s in self.stops) for t in tails]
        return torch.tensor(hit, dtype=torch.bool, device=input_ids.device)


class GumbelSample:
    """Draw the next token as argmax(log-probs + Gumbel noise): an exact sample from the
    (already tempered and truncated) distribution, which greedy decoding then picks. On CPU it
    is many times cheaper than ``torch.multinomial`` over a large vocabulary."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        u = torch.rand_like(logp).clamp_(min=1e-20, max=1.0 - 1e-7)
        return logp - torch.log(-torch.log(u))


def _positions(mask: torch.Tensor) -> torch.Tensor:
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def _prefix_lengths(index: dict[tuple[int, ...], Any], ctx: list[int]) -> list[int]:
    """Lengths n, longest first, for which ctx[:n] is a key of index."""
    lengths = sorted({len(k) for k in index}, reverse=True)
    return [n for n in lengths if n < len(ctx) and tuple(ctx[:n]) in index]


def _select_rows(cache, rows: Sequence[int]):
    """A new DynamicCache holding ``rows`` of ``cache`` (which is left as it is)."""
    from transformers.cache_utils import DynamicCache

    out = DynamicCache()
    for layer_idx, layer in enumerate(cache.layers):
        idx = torch.tensor(list(rows), device=layer.keys.device)
        out.update(layer.keys[idx], layer.values[idx], layer_idx)
    return out


def _concat_rows(parts: Sequence[tuple[Any, int]]):
    """Stack caches along the batch, each left-padded by its shift (masked positions)."""
    from transformers.cache_utils import DynamicCache

    out = DynamicCache()
    for layer_idx in range(len(parts[0][0].layers)):
        keys, values = [], []
        for cache, shift in parts:
            layer = cache.layers[layer_idx]
            keys.append(torch.nn.functional.pad(layer.keys, (0, 0, shift, 0)))
            values.append(torch.nn.functional.pad(layer.values, (0, 0, shift, 0)))
        out.update(torch.cat(keys), torch.cat(values), layer_idx)
    return out


def _cache_device(cache) -> torch.device:
    layer = cache.layers[0]
    return layer.keys.device if getattr(layer, "keys", None) is not None else torch.device("cpu")


class RolloutEngine:
    def __init__(
        self,
        tokenizer,
        pool: Pool,
        cfg: RolloutConfig,
        batch_size: int = 16,
        resolver: ModelNameResolver | None = None,
        show_progress: bool = False,
        autocast_bf16: bool = False,
        linear_kernel: str = "auto",
    ) -> None:
        self.tok = tokenizer
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.pool = pool
        self.cfg = cfg
        self.batch_size = batch_size
        self.resolver = resolver or ModelNameResolver(pool.names, pool.aliases, cfg.model_match)
        self.show_progress = show_progress
        self.autocast_bf16 = autocast_bf16
        self.linear_kernel = linear_kernel
        self._kernel_logged = False
        self.timings: dict[str, float] = {"policy_generate_s": 0.0, "pool_s": 0.0}
        self.run_log: list[dict[str, float]] = []  # per run(): time split and sizes
        self._states: list[_KVState] = []  # KV caches of the last turn, within one run()
        # rows whose prompt prefill was shared / whose turn continued from a cache, per run()
        self.kv_counts = {"shared_prefill_rows": 0, "continued_rows": 0}
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(
        self, model, contexts: list[list[int]], max_new: int, greedy: bool
    ) -> list[list[int]]:
        t0 = time.perf_counter()
        outs: list[list[int] | None] = [None] * len(contexts)
        kwargs = dict(
            pad_token_id=self.tok.pad_token_id,
            return_dict_in_generate=True,
            do_sample=False,  # sampling is GumbelSample's argmax
        )
        processors = []
        if not greedy:
            from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

            processors = [TemperatureLogitsWarper(self.cfg.temperature)]
            if self.cfg.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.cfg.top_p))
            processors.append(GumbelSample())
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        batches, fresh = self._continued_batches(contexts) if self.cfg.reuse_kv_cache else ([], [])
        if not self.cfg.reuse_kv_cache:
            fresh = list(range(len(contexts)))
        # batch similar lengths together: left padding is compute the CPU spends for nothing
        fresh.sort(key=lambda i: len(contexts[i]))
        for start in range(0, len(fresh), self.batch_size):
            rows = fresh[start : start + self.batch_size]
            batches.append(self._fresh_batch(model, contexts, rows))
        states: list[_KVState] = []
        for batch in batches:
            states += self._decode(model, batch, contexts, outs, max_new, kwargs)
        self._states = states  # only the last turn's caches can be continued
        self.timings["policy_generate_s"] += time.perf_counter() - t0
        return outs  # type: ignore[return-value]

    def _decode(self, model, batch: _Batch, contexts, outs, max_new: int, kwargs) -> list[_KVState]:
        """Generate one turn for ``batch``, in segments of ``cfg.decode_segment`` tokens.

        After each segment the rows that stopped leave the batch (their cache is kept for the
        next turn), so a few long rows no longer drag every finished row through each step.
        """
        device = next(model.parameters()).device
        # one row stops by itself: segments would only add generate() calls
        segment = self.cfg.decode_segment if self.cfg.reuse_kv_cache and len(batch.rows) > 1 else 0
        width = batch.ids.size(1)  # where this turn's tokens start
        ids, mask, cache, rows = batch.ids, batch.mask, batch.cache, list(batch.rows)
        made: dict[int, list[int]] = {i: [] for i in rows}
        stopped: set[int] = set()
        states: list[_KVState] = []
        left = max_new
        while rows:
            n = min(segment, left) if segment else left
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                gen = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    past_key_values=cache,
                    max_new_tokens=n,
                    stopping_criteria=[TagStop(self.tok, width)],
                    **kwargs,
                )
            seq = gen.sequences.cpu()
            new = seq[:, ids.size(1) :]
            left -= new.size(1)
            mask = torch.cat([mask, torch.ones_like(new)], dim=1)
            finished = []
            for r, i in enumerate(rows):
                if i in stopped:  # only when a cache could not be split (see below)
                    finished.append(True)
                    continue
                toks, hit_eos = _strip_generated(new[r].tolist(), self.eos_ids, batch.pad)
                made[i] += toks
                tail = self.tok.decode(made[i][-(n + 16) :], skip_special_tokens=True)
                finished.append(
                    hit_eos
                    or len(toks) < new.size(1)
                    or left <= 0
                    or any(stop in tail for stop in STOP_STRINGS)
                )
            for i in rows:
                outs[i] = made[i]
            cache = gen.past_key_values
            reuse = self.cfg.reuse_kv_cache and plain_cache(cache)
            if all(finished):
                if reuse:
                    states.append(self._state(seq, width, mask, cache, rows, contexts, made))
                break
            if not reuse:  # a cache we cannot split: finish the turn in one piece
                stopped.update(i for i, f in zip(rows, finished, strict=True) if f)
                ids, segment = seq, 0
                continue
            keep = [r for r, f in enumerate(finished) if not f]
            done = [r for r, f in enumerate(finished) if f]
            if done:
                states.append(
                    self._state(
                        seq[done],
                        width,
                        mask[done],
                        _select_rows(cache, done),
                        [rows[r] for r in done],
                        contexts,
                        made,
                    )
                )
                cache.batch_select_indices(torch.tensor(keep, device=_cache_device(cache)))
                ids, mask, rows = seq[keep], mask[keep], [rows[r] for r in keep]
            else:
                ids = seq
        return states

    @staticmethod
    def _state(ids, width, mask, cache, rows, contexts, made) -> _KVState:
        return _KVState(
            ids=ids,
            width=width,
            mask=mask,
            cache=cache,
            contexts=[contexts[i] for i in rows],
            generated=[made[i] for i in rows],
        )

    def _merged_batch(self, items: list[tuple[int, int, int, int, list[int]]]) -> _Batch:
        """One batch from rows of several cached states: each state's columns (and cache) are
        left-padded to the widest, then the new tokens are appended as a right-aligned block."""
        pad = self.tok.pad_token_id
        by_state: dict[int, list[int]] = {}  # state -> positions in items
        for k, (_, b, _, _, _) in enumerate(items):
            by_state.setdefault(b, []).append(k)
        widest = max(self._states[b].ids.size(1) for b in by_state)
        ids_parts, mask_parts, cache_parts, order = [], [], [], []
        for b, ks in by_state.items():
            state, sel = self._states[b], [items[k][2] for k in ks]
            shift = widest - state.ids.size(1)
            ids_parts.append(torch.nn.functional.pad(state.ids[sel], (shift, 0), value=pad or 0))
            mask_parts.append(torch.nn.functional.pad(state.mask[sel], (shift, 0)))
            cache_parts.append((_select_rows(state.cache, sel), shift))
            order += [(k, state.width + shift) for k in ks]
        ids, mask = torch.cat(ids_parts), torch.cat(mask_parts)
        cache = _concat_rows(cache_parts)
        block_w = max(len(item[4]) for item in items)
        block = torch.full((len(items), block_w), pad or 0, dtype=torch.long)
        block_mask = torch.zeros_like(block)
        rows = []
        for j, (k, turn_start) in enumerate(order):
            i, _, _, kept, new = items[k]
            rows.append(i)
            mask[j, turn_start + kept :] = 0  # generated past the kept turn: not context any more
            block[j, block_w - len(new) :] = torch.tensor(new)
            block_mask[j, block_w - len(new) :] = 1
        return _Batch(
            rows=rows,
            ids=torch.cat([ids, block], dim=1),
            mask=torch.cat([mask, block_mask], dim=1),
            cache=cache,
            pad=pad,
        )

    def _fresh_batch(self, model, contexts: list[list[int]], rows: list[int]) -> _Batch:
        """Left-padded batch; identical contexts (a GRPO group) are prefilled once and shared.

        When the rows share a long common prefix (the router instructions and descriptors come
        before the question), that prefix is prefilled once for the whole batch instead.
        """
        pad = self.tok.pad_token_id
        if self.cfg.reuse_kv_cache and len(rows) > 1:
            shared = self._shared_prefix_batch(model, contexts, rows)
            if shared is not None:
                return shared
        width = max(len(contexts[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(contexts[i]) :] = torch.tensor(contexts[i])
            mask[r, width - len(contexts[i]) :] = 1
        cache = None
        unique: dict[tuple[int, ...], int] = {}
        inverse = [unique.setdefault(tuple(contexts[i]), len(unique)) for i in rows]
        if self.cfg.reuse_kv_cache and len(unique) < len(rows) and width > 1:
            first = [inverse.index(k) for k in range(len(unique))]
            device = next(model.parameters()).device
            u_ids, u_mask = ids[first, :-1].to(device), mask[first, :-1].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                out = model(
                    input_ids=u_ids,
                    attention_mask=u_mask,
                    position_ids=_positions(u_mask),  # what generate() derives from the mask
                    use_cache=True,
                    logits_to_keep=1,
                )
            cache = out.past_key_values
            cache.batch_select_indices(torch.tensor(inverse, device=device))
            self.kv_counts["shared_prefill_rows"] += len(rows)
        return _Batch(rows=rows, ids=ids, mask=mask, cache=cache, pad=pad)

    def _shared_prefix_batch(self, model, contexts, rows: list[int]) -> _Batch | None:
        """[common prefix][each row's tail, left-padded]: the prefix runs once, then its cache is
        repeated for every row; positions skip the padding, as generate() derives them."""
        ctxs = [contexts[i] for i in rows]
        common = common_prefix_length(ctxs)
        if common < MIN_SHARED_PREFIX:
            return None
        pad = self.tok.pad_token_id
        tail_w = max(len(c) for c in ctxs) - common
        ids = torch.full((len(rows), common + tail_w), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        ids[:, :common] = torch.tensor(ctxs[0][:common])
        mask[:, :common] = 1
        for r, c in enumerate(ctxs):
            ids[r, ids.size(1) - (len(c) - common) :] = torch.tensor(c[common:])
            mask[r, ids.size(1) - (len(c) - common) :] = 1
        device = next(model.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            out = model(input_ids=ids[:1, :common].to(device), use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        if not plain_cache(cache):
            return None
        cache.batch_select_indices(torch.zeros(len(rows), dtype=torch.long, device=device))
        self.kv_counts["shared_prefill_rows"] += len(rows)
        return _Batch(rows=rows, ids=ids, mask=mask, cache=cache, pad=pad)

    def _continued_batches(self, contexts: list[list[int]]) -> tuple[list[_Batch], list[int]]:
        """Continue rows of last turn's batches from their KV cache instead of re-prefilling.

        A context continues a cached row when it starts with that row's context, then a prefix
        of what the row generated (the kept turn), then at least one new token (the injected
        observation). Generated tokens past the kept part are masked out; the new tokens are
        appended as a right-aligned block. Anything else is prefilled afresh.
        """
        where: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for b, state in enumerate(self._states):
            for r, ctx in enumerate(state.contexts):
                where.setdefault(tuple(ctx), []).append((b, r))
        claimed: dict[int, list[tuple[int, int, int, list[int]]]] = {}
        taken: set[tuple[int, int]] = set()
        fresh: list[int] = []
        for i, ctx in enumerate(contexts):
            hit = None
            for n in _prefix_lengths(where, ctx):
                # rows of a GRPO group share a context: pick the one whose turn this continues
                best = None
                for b, r in where[tuple(ctx[:n])]:
                    gen = self._states[b].generated[r]
                    kept = 0
                    while kept < len(gen) and n + kept < len(ctx) and ctx[n + kept] == gen[kept]:
                        kept += 1
                    rank = (kept, (b, r) not in taken)
                    if n + kept < len(ctx) and (best is None or rank > best[0]):
                        best = (rank, b, r, kept)
                if best is not None:
                    _, b, r, kept = best
                    hit = (b, r, kept, ctx[n + kept :])
                    taken.add((b, r))
                    break
            if hit is None:
                fresh.append(i)
            else:
                claimed.setdefault(hit[0], []).append((i, *hit[1:]))
        items = [(i, b, *rest) for b, group in claimed.items() for i, *rest in group]
        batches = []
        for start in range(0, len(items), self.batch_size):
            batches.append(self._merged_batch(items[start : start + self.batch_size]))
        self.kv_counts["continued_rows"] += len(items)
        return batches, fresh

    def _observation_ids(self, text: str, capped: bool) -> tuple[list[int], str]:
        """Token ids of the injected block, and its body text (what the policy sees)."""
        # a reply that echoes our tags would break the policy's format through no fault of its own
        text = strip_tags(text)
        if self.cfg.observations == "router-r1":
            # Router-R1 caps the wrapped block, so a long reply loses its closing tag
            wrapped = f"\n\n<information>{text.strip()}</information>\n\n"
            ids = self.tok(wrapped, add_special_tokens=False).input_ids
            ids = ids[: self.cfg.info_max_tokens] if capped else ids
            return ids, strip_tags(self.tok.decode(ids, skip_special_tokens=True)).strip()
        body = self.tok(text, add_special_tokens=False).input_ids
        if capped:
            body = body[: self.cfg.info_max_tokens]
        body_text = self.tok.decode(body, skip_special_tokens=True).strip()
        wrapped = f"\n<information>{body_text}</information>\n"
        return self.tok(wrapped, add_special_tokens=False).input_ids, body_text

    # -- the loop -----------------------------------------------------------------------------
    def run(
        self,
        model,
        prompts: Sequence[str],
        greedy: bool = False,
        budgets: Sequence[CallBudget | None] | None = None,
        on_step: Callable[[int, StepEvent], None] | None = None,
    ) -> list[Trajectory]:
        """Roll out every prompt; ``budgets`` limits each sample's pool calls and
        ``on_step(sample index, event)`` hears each step as soon as the batch has made it."""
        if budgets is not None and len(budgets) != len(prompts):
            raise ValueError(f"budgets: {len(budgets)} given for {len(prompts)} prompts")
        with packed_linears(model, enabled=self._packs(model)):
            return self._run(model, prompts, greedy, budgets, on_step)

    def _packs(self, model) -> bool:
        """Whether this run's policy decodes through prepacked linear layers (``linear_kernel``)."""
        if model is None:  # another engine (vLLM) generates
            return False
        param = next(model.parameters())
        dtype = "bfloat16" if self.autocast_bf16 else str(param.dtype).removeprefix("torch.")
        resolved = resolve_linear_kernel(self.linear_kernel, dtype, param.device.type)
        if not self._kernel_logged:
            log.info("policy rollouts linear_kernel: %s (%s)", resolved.value, resolved.reason)
            self._kernel_logged = True
        return resolved.value == "onednn"

    def _run(self, model, prompts, greedy, budgets, on_step) -> list[Trajectory]:
        start = dict(self.timings)
        t_run = time.perf_counter()
        self._states = []  # caches hold the weights of this call only
        self.kv_counts = dict.fromkeys(self.kv_counts, 0)
        trajs = [
            Trajectory(prompt_ids=self.tok(p, add_special_tokens=False).input_ids) for p in prompts
        ]
        row = {id(t): i for i, t in enumerate(trajs)}

        def report(traj: Trajectory, kind: str, text: str, call: PoolCall | None = None) -> None:
            if on_step is not None:
                on_step(row[id(traj)], StepEvent(kind, text, call))

        turns = range(self.cfg.max_turns + 1)
        for turn in tqdm(turns, desc="rollout turns", disable=not self.show_progress, leave=False):
            final = turn == self.cfg.max_turns
            active = [t for t in trajs if not t.done]
            if not active:
                break
            budget = self.cfg.max_final_tokens if final else self.cfg.max_turn_tokens
            gens = self._generate(
                model, [t.prompt_ids + t.completion_ids for t in active], budget, greedy
            )
            requests: list[tuple[Trajectory, str, str]] = []
            for traj, gen in zip(active, gens, strict=True):
                cut, action = cut_at_action(self.tok, gen)
                piece = gen[:cut]
                go_on = action is None and not final and self.cfg.no_action == "continue"
                if go_on:  # the next turn continues this text, as if the policy had not stopped
                    while piece and piece[-1] in self.eos_ids:
                        piece = piece[:-1]
                traj.completion_ids += piece
                traj.env_mask += [1] * len(piece)
                turn_text = self.tok.decode(piece, skip_special_tokens=True)
                report(traj, "generated", turn_text)
                if go_on:
                    continue
                if action != "search" or final:
                    traj.done = True  # answered, stopped, ran out of tokens, or routing is off
                    continue
                call = parse_search(last_search_content(turn_text) or "", self.resolver)
                budget = budgets[row[id(traj)]] if budgets is not None else None
                spent = budget.spent(traj) if budget is not None and call.error is None else None
                if call.error is None and spent is None:
                    requests.append((traj, call.model, call.query))
                elif spent is not None:
                    traj.refused_calls += 1
                    seen = self._inject(
                        traj,
                        f"No model was called: {spent}. Give your final answer now "
                        "inside <answer> and </answer>.",
                        capped=False,
                    )
                    report(traj, "refused", seen)
                elif self.cfg.observations == "router-r1":
                    traj.invalid_actions += 1
                    if call.unknown_model:  # their pool answers "LLM Name Error" -> None
                        report(traj, "invalid", self._inject(traj, "None", capped=True))
                    # a malformed search gets no observation there
                else:
                    traj.invalid_actions += 1
                    seen = self._inject(
                        traj,
                        f"Invalid search: {call.error}. Write "
                        f"<search>Model-Name: question</search> with a name from: "
                        f"{', '.join(self.pool.names)}.",
                        capped=False,  # our own guidance is short and must arrive whole
                    )
                    report(traj, "invalid", seen)
            if requests:
                t_pool = time.perf_counter()
                results = self.pool.call([(m, q) for _, m, q in requests])
                self.timings["pool_s"] += time.perf_counter() - t_pool
                for (traj, _, _), res in zip(requests, results, strict=True):
                    traj.calls.append(res)
                    if res.error is None:
                        obs = res.text
                    elif self.cfg.observations == "router-r1":
                        obs = "None"  # Router-R1 hides a failed call's error
                    else:
                        obs = f"Model {res.model} failed: {res.error}"
                    report(traj, "information", self._inject(traj, obs, capped=True), res)
            for traj in active:
                if len(traj.completion_ids) >= self.cfg.max_total_tokens:
                    traj.done = True
        self._states = []
        for traj in trajs:
            traj.text = self.tok.decode(traj.completion_ids, skip_special_tokens=True)
            traj.answer = extract_answer(traj.text)
        self.run_log.append(
            {
                **{k: self.timings[k] - start[k] for k in self.timings},
                "rollout_s": time.perf_counter() - t_run,
                "sequences": len(trajs),
                "policy_tokens": sum(sum(t.env_mask) for t in trajs),
                # prompt + completion of every row: what a forward/backward pass reads
                "sequence_tokens": sum(len(t.prompt_ids) + len(t.completion_ids) for t in trajs),
                # each distinct prompt once: what train.share_prompt_prefix computes
                "shared_prefix_tokens": sum(len(p) for p in {tuple(t.prompt_ids) for t in trajs})
                + sum(len(t.completion_ids) for t in trajs),
                "pool_calls": sum(len(t.calls) for t in trajs),
                **self.kv_counts,
            }
        )
        return trajs

    def _inject(self, traj: Trajectory, observation: str, capped: bool) -> str:
        """Append the observation; returns its text as the policy sees it."""
        ids, seen = self._observation_ids(observation, capped)
        traj.completion_ids += ids
        traj.env_mask += [0] * len(ids)
        traj.injected += 1
        return seen
