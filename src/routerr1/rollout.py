"""Batched multi-turn router rollout: generate -> parse -> batched pool calls -> inject -> continue.

Each sample alternates policy turns and injected ``<information>`` blocks. Policy tokens are 1 in
``env_mask``; injected tokens are 0, so GRPO never trains on text the policy did not write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from routerr1.config import RolloutConfig
from routerr1.parse import (
    ModelNameResolver,
    extract_answer,
    find_action,
    last_search_content,
    parse_search,
    strip_tags,
)
from routerr1.pool.base import Pool, PoolCall

log = logging.getLogger(__name__)

STOP_STRINGS = ["</search>", "</answer>"]


@dataclass
class Trajectory:
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    calls: list[PoolCall] = field(default_factory=list)
    invalid_actions: int = 0
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

    @property
    def pool_latency_s(self) -> float:
        return sum(c.latency_s for c in self.calls)


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
    ) -> None:
        self.tok = tokenizer
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.pool = pool
        self.cfg = cfg
        self.batch_size = batch_size
        self.resolver = resolver or ModelNameResolver(pool.names, pool.aliases)
        self.show_progress = show_progress
        self.autocast_bf16 = autocast_bf16
        self.timings: dict[str, float] = {"policy_generate_s": 0.0, "pool_s": 0.0}
        self.run_log: list[dict[str, float]] = []  # per run(): time split and sizes
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(
        self, model, contexts: list[list[int]], max_new: int, greedy: bool
    ) -> list[list[int]]:
        t0 = time.perf_counter()
        outs: list[list[int] | None] = [None] * len(contexts)
        pad = self.tok.pad_token_id
        device = next(model.parameters()).device
        # batch similar lengths together: left padding is compute the CPU spends for nothing
        order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(contexts[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, width - len(contexts[i]) :] = torch.tensor(contexts[i])
                mask[r, width - len(contexts[i]) :] = 1
            kwargs = dict(
                max_new_tokens=max_new,
                pad_token_id=pad,
                stop_strings=STOP_STRINGS,
                tokenizer=self.tok,
            )
            if greedy:
                kwargs.update(do_sample=False)
            else:
                kwargs.update(
                    do_sample=True, temperature=self.cfg.temperature, top_p=self.cfg.top_p, top_k=0
                )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                gen = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs
                )
            for i, row in zip(rows, gen[:, width:].tolist(), strict=True):
                outs[i] = _strip_generated(row, self.eos_ids, pad)[0]
        self.timings["policy_generate_s"] += time.perf_counter() - t0
        return outs  # type: ignore[return-value]

    def _observation_ids(self, text: str, capped: bool) -> list[int]:
        # a reply that echoes our tags would break the policy's format through no fault of its own
        body = self.tok(strip_tags(text), add_special_tokens=False).input_ids
        if capped:
            body = body[: self.cfg.info_max_tokens]
        body_text = self.tok.decode(body, skip_special_tokens=True)
        wrapped = f"\n<information>{body_text.strip()}</information>\n"
        return self.tok(wrapped, add_special_tokens=False).input_ids

    # -- the loop -----------------------------------------------------------------------------
    def run(self, model, prompts: Sequence[str], greedy: bool = False) -> list[Trajectory]:
        start = dict(self.timings)
        t0 = time.perf_counter()
        trajs = [
            Trajectory(prompt_ids=self.tok(p, add_special_tokens=False).input_ids) for p in prompts
        ]
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
                traj.completion_ids += piece
                traj.env_mask += [1] * len(piece)
                if action != "search" or final:
                    traj.done = True  # answered, stopped, ran out of tokens, or routing is off
                    continue
                turn_text = self.tok.decode(piece, skip_special_tokens=True)
                call = parse_search(last_search_content(turn_text) or "", self.resolver)
                if call.error is not None:
                    traj.invalid_actions += 1
                    self._inject(
                        traj,
                        f"Invalid search: {call.error}. Write "
                        f"<search>Model-Name: question</search> with a name from: "
                        f"{', '.join(self.pool.names)}.",
                        capped=False,  # our own guidance is short and must arrive whole
                    )
                else:
                    requests.append((traj, call.model, call.query))
            if requests:
                t0 = time.perf_counter()
                results = self.pool.call([(m, q) for _, m, q in requests])
                self.timings["pool_s"] += time.perf_counter() - t0
                for (traj, _, _), res in zip(requests, results, strict=True):
                    traj.calls.append(res)
                    obs = (
                        res.text if res.error is None else f"Model {res.model} failed: {res.error}"
                    )
                    self._inject(traj, obs, capped=True)
            for traj in active:
                if len(traj.completion_ids) >= self.cfg.max_total_tokens:
                    traj.done = True
        for traj in trajs:
            traj.text = self.tok.decode(traj.completion_ids, skip_special_tokens=True)
            traj.answer = extract_answer(traj.text)
        self.run_log.append(
            {
                **{k: self.timings[k] - start[k] for k in self.timings},
                "rollout_s": time.perf_counter() - t0,
                "sequences": len(trajs),
                "policy_tokens": sum(sum(t.env_mask) for t in trajs),
                "pool_calls": sum(len(t.calls) for t in trajs),
            }
        )
        return trajs

    def _inject(self, traj: Trajectory, observation: str, capped: bool) -> None:
        ids = self._observation_ids(observation, capped)
        traj.completion_ids += ids
        traj.env_mask += [0] * len(ids)
        traj.injected += 1
