"""Time warm-start SFT steps: the batch's shared router prompt run once vs in every row.

    python benchmarks/warmstart_step.py --policy resources/models/smollm2-135m --steps 3

Runs `routerr1.warmstart.warm_start` (TRL's SFTTrainer, as the warm_start rule does) on
synthetic rows of the warm start's shape: every row opens with the same ``--prefix-tokens``
prompt tokens (the router prompt up to the question), then ``--suffix-tokens`` tokens of its own,
laid out like a trajectory (question, policy's think and search, injected information, policy's
answer; loss only on the policy's tokens). Token values do not change the timing. Settings:

- ``per-row+ckpt``: every row forwards its whole sequence, with TRL's default gradient
  checkpointing (the warm start before ``warm_start.share_prompt_prefix``);
- ``per-row``: the same without checkpointing (``share_prompt_prefix: false``);
- ``shared``: the common prefix once, each row's suffix over its KV cache (the default).

Each setting trains ``--steps`` + 1 steps of one batch of ``--rows`` rows; the first step pays
one-off warm-up and is skipped when there are more. Prints the hardware header, s/step, the
forward/backward floor (6 x parameters x tokens at this machine's matmul ceiling in the precision
used, DESIGN.md §3; for ``shared``, over the tokens it computes) and the speed-up over the first
setting.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "per-row+ckpt": {"share_prompt_prefix": False, "gradient_checkpointing": True},
    "per-row": {"share_prompt_prefix": False, "gradient_checkpointing": False},
    "shared": {"share_prompt_prefix": True, "gradient_checkpointing": False},
}
# a trajectory after the prompt, as shares of the suffix: (question, policy's think and search,
# injected information, policy's think and answer); 1 marks trained tokens
LAYOUT = ((0.15, 0), (0.35, 1), (0.3, 0), (0.2, 1))


def synthetic_rows(
    n_rows: int, prefix: int, suffix: int, vocab: int, seed: int = 0
) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    shared = [rng.randrange(100, vocab) for _ in range(prefix)]
    rows = []
    for _ in range(n_rows):
        ids, mask = list(shared), [0] * prefix
        left = suffix
        for i, (share, trained) in enumerate(LAYOUT):
            n = left if i == len(LAYOUT) - 1 else max(1, round(share * suffix))
            n = min(n, left)
            left -= n
            ids += [rng.randrange(100, vocab) for _ in range(n)]
            mask += [trained] * n
        rows.append({"input_ids": ids, "completion_mask": mask})
    return rows


def time_setting(args: argparse.Namespace, name: str, rows, bf16: bool) -> dict:
    from transformers import TrainerCallback

    from routerr1.config import WarmStartConfig
    from routerr1.warmstart import warm_start

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *_, **__):
            self._start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self._start)

    setting = SETTINGS[name]
    n_steps = args.steps + 1 if args.steps > 1 else args.steps
    cfg = WarmStartConfig(
        epochs=n_steps,
        batch_size=len(rows),
        learning_rate=1e-6,
        max_length=args.prefix_tokens + args.suffix_tokens,
        share_prompt_prefix=setting["share_prompt_prefix"],
    )
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        info = warm_start(
            args.policy,
            rows,
            Path(tmp) / "model",
            cfg,
            bf16=bf16,
            gradient_checkpointing=setting["gradient_checkpointing"],
            callbacks=[timer],
        )
    times = timer.times[1:] if len(timer.times) > 1 else timer.times
    return {
        "setting": name,
        "step_s": sum(times) / len(times),
        "steps_timed": len(times),
        "shared_batches": info["shared_prefix_batches"],
        "first_loss": info["first_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="resources/models/smollm2-135m")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--rows", type=int, default=8, help="rows per SFT step (warm_start.batch_size)")
    p.add_argument("--prefix-tokens", type=int, default=400, help="shared prompt tokens per row")
    p.add_argument("--suffix-tokens", type=int, default=120, help="each row's own tokens")
    p.add_argument("--steps", type=int, default=3, help="timed steps (one more warms up)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from routerr1.precision import hardware_header, matmul_gflops, resolve_precision

    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision).value
    config = AutoConfig.from_pretrained(args.policy)
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    rows = synthetic_rows(args.rows, args.prefix_tokens, args.suffix_tokens, config.vocab_size)
    results = [time_setting(args, name, rows, precision == "bf16") for name in args.settings]
    ceiling = matmul_gflops({"bf16": "bfloat16", "fp32": "float32"}[precision])
    print(hardware_header({"warm start": precision}))
    print(f"matmul ceiling here: {precision} {ceiling:.0f} GFLOP/s")
    print(
        f"policy {args.policy} ({params / 1e6:.0f}M parameters), {args.rows} rows x "
        f"({args.prefix_tokens} shared + {args.suffix_tokens} own tokens) per step, "
        f"{args.threads} threads, mean of {results[0]['steps_timed']} timed step(s)"
    )
    print("| setting | s/step | tokens computed | floor s | x floor | first loss | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = results[0]["step_s"]
    for r in results:
        shared = r["shared_batches"] > 0
        tokens = (
            args.prefix_tokens + args.rows * args.suffix_tokens
            if shared
            else args.rows * (args.prefix_tokens + args.suffix_tokens)
        )
        floor = 6 * params * tokens / (ceiling * 1e9)
        print(
            f"| {r['setting']} | {r['step_s']:.2f} | {tokens} | {floor:.2f} "
            f"| {r['step_s'] / floor:.2f}x | {r['first_loss']:.4f} | {base / r['step_s']:.2f}x |"
        )
    if {"per-row", "shared"} <= {r["setting"] for r in results}:
        by = {r["setting"]: r["step_s"] for r in results}
        print(f"share_prompt_prefix on vs off: {by['per-row'] / by['shared']:.2f}x faster")


if __name__ == "__main__":
    main()
