"""fp32 linear layers: torch's default kernel (MKL) against oneDNN with the weight prepacked.

    python benchmarks/linear_kernels.py [--model resources/models/qwen2.5-coder-1.5b] [--n 32]

Two measurements, both in fp32 on torch's threads:

a. **layers**: one product of ``rows`` activations by a weight of each shape the default pool and
   policy decode with (SmolLM2-135M, Qwen2.5-Coder-0.5B and -1.5B: attention, MLP, output
   layer), at 1, 8, 16 and 64 rows (a decode step of that many sequences). Milliseconds per
   product and the ratio.
b. **answers**: ``LocalModel.answer`` on ``--n`` real eval questions (``--questions``, a parquet
   with a ``question`` column; the default run writes ``results/data/eval.parquet``) with each
   kernel, the same loaded model packed in place between the two: the prefill alone (one new
   token), the whole answers, the ratio, and how many answers are identical.

``linear_kernel: auto`` packs where (b) pays (``routerr1.precision.resolve_linear_kernel``).
Timings are only meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from routerr1.kvcache import common_prefix_length
from routerr1.packed_linear import PackedLinear, pack_linears
from routerr1.precision import hardware_header, probe, resolve_linear_kernel

# (in, out) of the decode products of the default pool and policy
SHAPES = {
    "SmolLM2-135M MLP up": (576, 1536),
    "SmolLM2-135M MLP down": (1536, 576),
    "SmolLM2-135M output (49k vocab)": (576, 49152),
    "Qwen2.5-Coder-0.5B MLP up": (896, 4864),
    "Qwen2.5-Coder-1.5B attention q": (1536, 1536),
    "Qwen2.5-Coder-1.5B MLP up": (1536, 8960),
    "Qwen2.5-Coder-1.5B MLP down": (8960, 1536),
    "Qwen2.5-Coder-1.5B output (152k vocab)": (1536, 151936),
}


def ms_per_call(fn, seconds: float = 0.5) -> float:
    for _ in range(3):
        fn()
    n, start = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n * 1e3


def bench_layers(rows: list[int]) -> list[str]:
    out = [
        "| layer (in → out) | rows | default ms | oneDNN packed ms | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    torch.manual_seed(0)
    for name, (fan_in, fan_out) in SHAPES.items():
        linear = torch.nn.Linear(fan_in, fan_out, bias=False)
        packed = PackedLinear(linear)
        with torch.inference_mode():
            for m in rows:
                x = torch.randn(m, fan_in)
                base = ms_per_call(lambda: linear(x))  # noqa: B023 (timed here, in the loop)
                fast = ms_per_call(lambda: packed(x))  # noqa: B023
                out.append(
                    f"| {name} ({fan_in} → {fan_out}) | {m} | {base:.2f} | {fast:.2f} | "
                    f"{base / fast:.2f}x |"
                )
    return out


def bench_answers(folder: Path, questions: list[str], max_new: int) -> list[str]:
    from routerr1.pool.local import LocalModel, load_weights

    weights = load_weights(folder, "float32", "default")
    chat = "smollm2" in folder.name  # the default config's chat_examples for SmolLM2
    style = "fewshot" if "gemma" in folder.name else "chat"
    model = LocalModel(
        folder, prompt_style=style, dtype="float32", weights=weights, chat_examples=chat
    )

    def timed() -> tuple[float, float, list]:
        """(prefill-only s, whole answers s, answers): max_new_tokens 1 is the prefill alone."""
        model.answer(questions[:2], max_new_tokens=4)  # warm-up
        start = time.perf_counter()
        model.answer(questions, max_new_tokens=1)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        answers = model.answer(questions, max_new_tokens=max_new)
        return prefill, time.perf_counter() - start, answers

    base_prefill, base_s, base = timed()
    n = pack_linears(weights.model)
    fast_prefill, fast_s, fast = timed()
    same = sum(a.text == b.text for a, b in zip(base, fast, strict=True))
    tokens = sum(g.out_tokens for g in base)
    common = common_prefix_length([model.encode(q) for q in questions])
    mean_len = sum(len(model.encode(q)) for q in questions) / len(questions)
    return [
        f"\n{folder.name}, {len(questions)} questions (prompts {mean_len:.1f} tokens on average, "
        f"{common} of them common), {tokens} answer tokens, {n} layers packed",
        "| kernel | prefill s | whole answers s | decode s | speed-up | identical answers |",
        "|---|---:|---:|---:|---:|---:|",
        f"| default | {base_prefill:.1f} | {base_s:.1f} | {base_s - base_prefill:.1f} | 1.00x | |",
        f"| oneDNN packed | {fast_prefill:.1f} | {fast_s:.1f} | {fast_s - fast_prefill:.1f} | "
        f"{base_s / fast_s:.2f}x | {same} of {len(base)} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("resources/models/qwen2.5-coder-1.5b"))
    parser.add_argument("--questions", type=Path, default=Path("results/data/eval.parquet"))
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 16, 64])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-answers", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = resolve_linear_kernel("auto", "float32", "cpu")
    print(hardware_header({"linear_kernel auto (fp32)": auto.value}))
    print(f"vendor {probe().cpu_vendor or 'unknown'}: {auto.reason}\n")
    print("\n".join(bench_layers(args.rows)))
    if not args.skip_answers:
        if not args.questions.exists():
            raise SystemExit(f"--questions: {args.questions} not found (run the pipeline first)")
        qs = pd.read_parquet(args.questions)["question"].tolist()[: args.n]
        print("\n".join(bench_answers(args.model, qs, args.max_new_tokens)))


if __name__ == "__main__":
    main()
