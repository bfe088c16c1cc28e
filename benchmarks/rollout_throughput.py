"""Policy tokens per second of the multi-turn rollout: the whole GRPO batch at once vs one by one.

    python benchmarks/rollout_throughput.py                       # 0.5B policy, 8 prompts x 4
    python benchmarks/rollout_throughput.py --quick --policy resources/models/smollm2-135m

Both modes run the same ``routerr1.rollout.RolloutEngine`` on the same prompts (the default router
prompt of ``--config`` with one descriptor per pool model, each prompt repeated ``--generations``
times as GRPO does), sampling at the config's temperature:

- batched: one ``engine.run`` over all prompts x generations, ``batch_size`` = the whole batch;
- per-sample: ``engine.run`` on one trajectory at a time (``batch_size`` 1), in a loop.

Tokens are the policy's own kept tokens (``env_mask`` = 1; injected ``<information>`` is not
counted); seconds are the wall time of the ``run`` calls. By default the pool is a stand-in that
answers every call instantly with a fixed text (``--pool fixed``), so only the policy is timed;
``--pool real`` calls the configured pool (its models' time then counts too). The two modes sample
different completions, so they generate different token counts: compare tokens/s, not seconds.
Runs on CUDA when torch sees a GPU (``--device auto``), else on CPU. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from routerr1.config import PoolEntry, load_config, pool_entries, rollout_config, train_config
from routerr1.pool.base import Generation, Pool, build_pool
from routerr1.precision import hardware_header, resolve_precision
from routerr1.prompt import Descriptor, router_prompts
from routerr1.rollout import RolloutEngine, Trajectory

# NQ-style questions (a finished pipeline is not needed); cycled when more prompts are asked for
QUESTIONS = [
    "who wrote the novel pride and prejudice",
    "what is the capital city of australia",
    "when did the first man land on the moon",
    "which planet is known as the red planet",
    "who painted the ceiling of the sistine chapel",
    "what is the longest river in south america",
    "in which year did the berlin wall fall",
    "who developed the theory of general relativity",
    "what is the smallest prime number",
    "which country hosted the 2016 summer olympics",
    "what element has the atomic number 1",
    "who was the first president of the united states",
]
FIXED_ANSWER = "I believe the answer is Paris, the capital of France."


class FixedAnswer:
    """Stand-in pool backend: an instant, fixed reply, so the benchmark times only the policy."""

    def answer(self, questions: Sequence[str], max_new_tokens: int = 32) -> list[Generation]:
        n_out = len(FIXED_ANSWER.split())
        return [
            Generation(FIXED_ANSWER, len(q.split()), n_out, 0.0, None, "stop") for q in questions
        ]


def load_descriptors(path: Path, entries: Sequence[PoolEntry]) -> list[Descriptor]:
    """The pipeline's descriptors when a run left them, else ones built from the config's entries
    (measured fields zero: the prompt has the same shape and nearly the same length)."""
    if path.is_file():
        from routerr1.prompt import descriptor_from_mapping

        return [descriptor_from_mapping(d) for d in json.loads(path.read_text())]
    return [
        Descriptor(e.name, e.description, e.price_in, e.price_out, 0.0, 0.0, 0.0) for e in entries
    ]


def policy_tokens(trajs: Sequence[Trajectory]) -> int:
    return sum(sum(t.env_mask) for t in trajs)


def timed(fn) -> tuple[list[Trajectory], float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="resources/models/qwen2.5-coder-0.5b")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--descriptors", default="results/pool/descriptors.json")
    p.add_argument("--models-root", default="resources/models", help="for --pool real")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="policy weights; auto: bfloat16 on CUDA, float32 on CPU",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--autocast-bf16",
        choices=["config", "on", "off"],
        default="config",
        help="bf16 autocast around generate, as in training (default: train.precision, resolved)",
    )
    p.add_argument("--pool", choices=["fixed", "real"], default="fixed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a check that it runs: 2 prompts x 2, one routing turn of 16 tokens",
    )
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    cfg = load_config(args.config)
    rcfg = rollout_config(cfg)
    configured = resolve_precision(train_config(cfg).precision).value == "bf16"
    autocast = {"on": True, "off": False}.get(args.autocast_bf16, configured)
    n_prompts, n_gen = args.prompts, args.generations
    if args.quick:
        n_prompts, n_gen = 2, 2
        rcfg = replace(
            rcfg, max_turns=1, max_turn_tokens=16, max_final_tokens=8, info_max_tokens=16
        )

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.policy)
    model = AutoModelForCausalLM.from_pretrained(args.policy, dtype=getattr(torch, dtype))
    model = model.to(device).eval()

    entries = pool_entries(cfg)
    if args.pool == "real":
        pool = build_pool(entries, {k: Path(args.models_root) / k for k in cfg["models"]})
    else:
        pool = Pool(entries, lambda entry: FixedAnswer())
    descriptors = load_descriptors(Path(args.descriptors), entries)
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(n_prompts)]
    base = router_prompts(tok, questions, descriptors, rcfg.compressed_descriptors)
    prompts = [q for q in base for _ in range(n_gen)]  # GRPO: each prompt num_generations times
    batch = len(prompts)

    batched = RolloutEngine(tok, pool, rcfg, batch_size=batch, autocast_bf16=autocast)
    single = RolloutEngine(tok, pool, rcfg, batch_size=1, autocast_bf16=autocast)
    # warm-up (first-call allocations, kernel selection), not timed
    warm = replace(rcfg, max_turns=0, max_final_tokens=2)
    RolloutEngine(tok, pool, warm, batch_size=2, autocast_bf16=autocast).run(model, prompts[:2])

    torch.manual_seed(args.seed)
    trajs_b, secs_b = timed(lambda: batched.run(model, prompts))
    torch.manual_seed(args.seed)
    trajs_s, secs_s = timed(lambda: [t for pr in prompts for t in single.run(model, [pr])])
    pool.close()

    rows = [("per-sample loop", trajs_s, secs_s), ("batched (whole GRPO batch)", trajs_b, secs_b)]
    base_tps = policy_tokens(trajs_s) / secs_s if secs_s > 0 else float("nan")
    prompt_tokens = sum(len(t.prompt_ids) for t in trajs_b) / batch
    print(hardware_header({"policy": dtype, "autocast": "bf16" if autocast else "off"}))
    print(
        f"policy {args.policy} ({dtype}{', bf16 autocast' if autocast else ''}, {device}"
        f"{'' if device == 'cuda' else f', {torch.get_num_threads()} threads'}), "
        f"{n_prompts} prompts x {n_gen} generations = {batch} trajectories, "
        f"~{prompt_tokens:.0f} prompt tokens, max_turns {rcfg.max_turns}, "
        f"max_turn_tokens {rcfg.max_turn_tokens}, max_final_tokens {rcfg.max_final_tokens}, "
        f"pool {args.pool}, {platform.node()}"
    )
    print("| mode | generated tokens | pool calls | seconds | tokens/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, trajs, secs in rows:
        toks = policy_tokens(trajs)
        tps = toks / secs if secs > 0 else float("nan")
        calls = sum(len(t.calls) for t in trajs)
        print(f"| {name} | {toks} | {calls} | {secs:.1f} | {tps:.1f} | {tps / base_tps:.2f}x |")


if __name__ == "__main__":
    main()
