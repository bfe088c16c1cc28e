"""Time GRPO steps on the default router prompt: naive settings vs the configured levers.

    python benchmarks/train_step.py --policy resources/models/smollm2-135m \\
        --settings naive fast --steps 2

Each setting runs in its own subprocess (so peak RSS is its own) with TRL's GRPOTrainer and our
multi-turn rollout over the real pool of config/config.yaml. The setup is the issue's: 8 prompts
x 4 generations, the full router prompt with one descriptor per pool model. Prints, per setting,
seconds per step split into policy generation, pool calls and the rest (forward/backward,
reference and old log-probs, optimizer), peak RSS (and its anonymous part, sampled: loading a
model maps its fp32 weight files, clean pages that count in RSS but are reclaimable), and the
speed-up over the first setting. The header names the CPU and the precision `auto` chose; the
floor column is the forward/backward lower bound of DESIGN.md §3, 6 x parameters x the tokens
the setting computes (every row's prompt and completion; each group's prompt once with
train.share_prompt_prefix) at this machine's matmul ceiling in that precision
(benchmarks/matmul_ceiling.py).
Needs a finished pipeline run for results/data/train.parquet and results/pool/descriptors.json.

    python benchmarks/train_step.py --random-init qwen2.5-3b --settings fast --steps 2

times a randomly initialised policy of a real architecture instead (weights do not change the
cost of a step; a GPU machine may have no room or network for them): SHAPE is a shape file of
benchmarks/shapes/ (by name) or a Hugging Face config.json (or its folder). --policy then only
gives the tokenizer. The folder (config, seeded random weights, tokenizer) is built once in a
temporary directory, shared by the settings and deleted afterwards. A random policy rarely
writes a well-formed action or stops early, so its turns run to the token caps: format ok is
near 0 and generation is the capped worst case.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import nullcontext
from pathlib import Path

SHAPES = Path(__file__).resolve().parent / "shapes"
# the dtype train_router loads the policy in here, and a random-init policy is saved in
POLICY_DTYPE = "float32"

# Each setting overrides TrainConfig / RolloutConfig fields.
SETTINGS: dict[str, dict[str, dict]] = {
    # the naive run: micro-batch 1 x 32 accumulation, fp32, full descriptors, 3 turns,
    # TRL's default gradient checkpointing, every prompt re-read on every turn and in every row
    "naive": {
        "train": {
            "micro_batch_size": 1,
            "precision": "fp32",
            "beta": 0.001,
            "gradient_checkpointing": True,
            "share_prompt_prefix": False,
        },
        "rollout": {
            "max_turns": 3,
            "max_turn_tokens": 128,
            "compressed_descriptors": False,
            "batch_size": 32,
            "reuse_kv_cache": False,
        },
    },
    # same workload, faster execution: micro-batches, precision auto (bf16 autocast where the
    # CPU has it natively, fp32 elsewhere; fp32 master weights either way), no
    # reference model (beta 0), no recomputation, the group's prompt computed once (rollout
    # prefill and forward/backward), each turn continued from the last turn's KV cache
    "fast": {
        "train": {"micro_batch_size": 8, "precision": "auto", "beta": 0.0},
        "rollout": {
            "max_turns": 3,
            "max_turn_tokens": 128,
            "compressed_descriptors": False,
            "batch_size": 32,
        },
    },
    # plus a lighter workload: compressed descriptors and tighter turn caps
    "fast+caps": {
        "train": {"micro_batch_size": 8, "precision": "auto", "beta": 0.0},
        "rollout": {
            "max_turns": 2,
            "max_turn_tokens": 64,
            "max_final_tokens": 32,
            "compressed_descriptors": True,
            "batch_size": 32,
        },
    },
    "fast+caps+lora": {
        "train": {"micro_batch_size": 8, "precision": "auto", "beta": 0.0, "lora_r": 16},
        "rollout": {
            "max_turns": 2,
            "max_turn_tokens": 64,
            "max_final_tokens": 32,
            "compressed_descriptors": True,
            "batch_size": 32,
        },
    },
}


class MemorySampler(threading.Thread):
    """Peak resident memory split the way the kernel counts it: anonymous pages (what must fit
    in RAM) and file-backed pages (weights read through mmap while a model loads; clean, so
    reclaimable). ``ru_maxrss`` only gives their peak sum."""

    def __init__(self, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.period_s = period_s
        self.peak_anon_kib = 0
        self.peak_file_kib = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            fields = {}
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    fields[key] = int(value.split()[0])
            self.peak_anon_kib = max(self.peak_anon_kib, fields.get("RssAnon", 0))
            self.peak_file_kib = max(self.peak_file_kib, fields.get("RssFile", 0))
            self._done.wait(self.period_s)

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_one(args: argparse.Namespace, name: str) -> dict:
    """In a child process: train `steps` GRPO steps and report the split of the last ones."""
    import torch

    sampler = MemorySampler()
    sampler.start()

    from routerr1.config import RolloutConfig, TrainConfig, load_config, pool_entries
    from routerr1.data import read_records
    from routerr1.pool.base import local_pool
    from routerr1.precision import resolve_precision
    from routerr1.stages.common import load_descriptors
    from routerr1.train import shares_prompt_prefix, train_router

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    over = SETTINGS[name]
    n_steps = args.naive_steps if name == "naive" and args.naive_steps else args.steps
    if args.micro_batch and name != "naive":
        over = {**over, "train": {**over["train"], "micro_batch_size": args.micro_batch}}
    tcfg = TrainConfig(
        alphas=(0.5,),
        max_steps=n_steps,
        prompts_per_step=8,
        num_generations=4,
        learning_rate=1e-6,
        save_steps=10_000,
        **over["train"],
    )
    rcfg = RolloutConfig(
        **{
            **cfg["rollout"],
            "info_max_tokens": 64,
            "max_total_tokens": 1024,
            "max_final_tokens": 64,
            "temperature": 1.0,
            **over["rollout"],
        }
    )
    models = {k: Path(args.models_root) / k for k in cfg["models"]}
    pool = local_pool(pool_entries(cfg), models)
    for member in pool.names:  # load every model now: step 1 should not time weight loading
        pool.backend(member)
    policy = args.built_policy or args.policy
    with tempfile.TemporaryDirectory() as tmp:
        summary = train_router(
            policy_dir=policy,
            policy_dtype=POLICY_DTYPE,
            records=read_records(args.train)[: 8 * n_steps],
            descriptors=load_descriptors(args.descriptors),
            pool=pool,
            alpha=0.5,
            train_cfg=tcfg,
            rollout_cfg=rcfg,
            checkpoint_dir=Path(tmp) / "ckpt",
            model_out=Path(tmp) / "model",
            seed=0,
            mlflow_active=False,
        )
    steps = [h for h in summary["history"] if "step_time" in h]
    # the pool is loaded before training; the first step still pays one-off warm-up, so it is
    # skipped when there are more (--steps 1 suits the naive setting, minutes per step)
    skip = 1 if len(steps) > 1 else 0
    step_s = sum(h["step_time"] for h in steps[skip:]) / len(steps[skip:])
    rolls = summary["rollouts"][skip:]
    gen = sum(r["policy_generate_s"] for r in rolls) / len(rolls)
    pool_s = sum(r["pool_s"] for r in rolls) / len(rolls)
    sampler.stop()
    computed = "shared_prefix_tokens" if shares_prompt_prefix(tcfg) else "sequence_tokens"
    return {
        "setting": name,
        "step_s": step_s,
        "generate_s": gen,
        "pool_s": pool_s,
        "other_s": step_s - gen - pool_s,
        "policy_tokens": sum(r["policy_tokens"] for r in rolls) / len(rolls),
        "sequence_tokens": sum(r["sequence_tokens"] for r in rolls) / len(rolls),
        "computed_tokens": sum(r[computed] for r in rolls) / len(rolls),
        "params": _count_params(policy),
        "precision": resolve_precision(tcfg.precision).value,
        "pool_calls": sum(r["pool_calls"] for r in rolls) / len(rolls),
        "format_ok": steps[-1].get("router/format_ok"),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_anon_gib": sampler.peak_anon_kib / 2**20,
    }


def _count_params(policy: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(policy))
    return sum(p.numel() for p in model.parameters())


def shape_file(shape: str) -> Path:
    """``--random-init``'s SHAPE: a config.json (or a folder holding one), else a shape name."""
    path = Path(shape)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return path
    named = SHAPES / (shape if shape.endswith(".json") else f"{shape}.json")
    if named.is_file():
        return named
    known = ", ".join(shape_names())
    raise SystemExit(
        f"--random-init {shape}: no such config.json, nor a shape of {SHAPES} ({known})"
    )


def shape_names() -> list[str]:
    return sorted(f.stem for f in SHAPES.glob("*.json"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--policy",
        default="resources/models/smollm2-135m",
        help="the policy; with --random-init, only its tokenizer is used",
    )
    p.add_argument(
        "--random-init",
        metavar="SHAPE",
        help="time a seeded random policy of this architecture: a config.json path or the name "
        f"of a shape in benchmarks/shapes/ ({', '.join(shape_names())})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --random-init weights")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--models-root", default="resources/models")
    p.add_argument("--train", default="results/data/train.parquet")
    p.add_argument("--descriptors", default="results/pool/descriptors.json")
    p.add_argument("--settings", nargs="+", default=["naive", "fast"], choices=list(SETTINGS))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--naive-steps", type=int, help="steps for the naive setting (default --steps)")
    p.add_argument(
        "--micro-batch", type=int, help="override micro_batch_size (all settings but naive)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--built-policy", help=argparse.SUPPRESS)  # the random-init folder, for --child
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_one(args, args.child)), flush=True)
        return
    shape = shape_file(args.random_init) if args.random_init else None
    with tempfile.TemporaryDirectory(prefix="random-policy-") if shape else nullcontext() as tmp:
        if shape:
            from routerr1.train import random_policy

            print(f"building a random {shape.stem} policy in {tmp}", file=sys.stderr)
            random_policy(shape, args.policy, tmp, seed=args.seed, dtype=POLICY_DTYPE)
            policy = f"random-init {shape.stem} ({shape}, seed {args.seed}, {POLICY_DTYPE})"
            policy += f", tokenizer of {args.policy}"
            extra = ["--built-policy", tmp]
        else:
            policy, extra = args.policy, []
        results = run_settings(args, extra)
    report(args, results, policy)


def run_settings(args: argparse.Namespace, extra: list[str]) -> list[dict]:
    """Each setting in its own child process; a failed one is reported, not raised."""
    results = []
    for name in args.settings:
        cmd = [sys.executable, __file__, "--child", name, *sys.argv[1:], *extra]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            # one setting running out of memory must not hide the others' results
            why = (
                "killed by SIGKILL (out of memory?)"
                if out.returncode == -signal.SIGKILL
                else f"exit code {out.returncode}"
            )
            print(f"setting {name} failed, {why}:\n{out.stderr[-3000:]}", file=sys.stderr)
            results.append({"setting": name, "failed": why})
            continue
        results.append(json.loads(line[0][7:]))
        print(f"done: {name}", file=sys.stderr)
    return results


def report(args: argparse.Namespace, results: list[dict], policy: str) -> None:
    import torch

    from routerr1.precision import hardware_header, matmul_gflops

    ok = [r for r in results if "failed" not in r]
    if not ok:
        sys.exit("every setting failed")
    base = ok[0]["step_s"]
    torch.set_num_threads(args.threads)
    ceilings = {
        p: matmul_gflops({"bf16": "bfloat16", "fp32": "float32"}[p]) for p in ("fp32", "bf16")
    }
    print(hardware_header({r["setting"]: r["precision"] for r in ok}))
    print("matmul ceiling here: " + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in ceilings.items()))
    print(
        f"policy {policy}, {ok[0]['params'] / 1e9:.2f}B parameters, 8 prompts x 4 generations, "
        f"{args.threads} threads, "
        f"mean of steps 2..{args.steps} (a setting run for one step: that step)"
    )
    print(
        "| setting | precision | s/step | generate | pool | fwd/bwd+rest | floor | x floor "
        "| policy tok | pool calls | format ok | peak RSS GiB | peak anon GiB | speed-up |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "failed" in r:
            print(f"| {r['setting']} | failed: {r['failed']} |" + " |" * 12)
            continue
        floor = 6 * r["params"] * r["computed_tokens"] / (ceilings[r["precision"]] * 1e9)
        print(
            f"| {r['setting']} | {r['precision']} | {r['step_s']:.1f} | {r['generate_s']:.1f} "
            f"| {r['pool_s']:.1f} | {r['other_s']:.1f} | {floor:.1f} | {r['other_s'] / floor:.1f}x "
            f"| {r['policy_tokens']:.0f} | {r['pool_calls']:.0f} "
            f"| {r['format_ok']} | {r['peak_rss_gib']:.2f} | {r['peak_anon_gib']:.2f} "
            f"| {base / r['step_s']:.2f}x |"
        )


if __name__ == "__main__":
    main()
