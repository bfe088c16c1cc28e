"""This machine's ceilings: fp32 and bf16 matmul GFLOP/s and memory-copy GB/s on torch's threads.

    python benchmarks/matmul_ceiling.py [--threads 2] [--size 1024]

Every time in the other benchmarks is read against these: a stage whose FLOP count is known
(6 x parameters x tokens for a forward/backward, 2 x parameters per generated token) is that
many times above its floor. The header names the CPU and what `auto` precision picks here.
"""

from __future__ import annotations

import argparse
import time

import torch

from routerr1.precision import hardware_header, matmul_gflops, probe, resolve_precision


def copy_gbps(mib: int = 256, seconds: float = 1.0) -> float:
    src = torch.empty(mib * 2**20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        dst.copy_(src)
        n += 1
    # a copy reads and writes every byte
    return 2 * src.numel() * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=1024, help="square matmul side")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    auto = resolve_precision("auto", hw=probe()).value
    print(hardware_header({"auto": auto}))
    fp32 = matmul_gflops("float32", args.size)
    bf16 = matmul_gflops("bfloat16", args.size)
    print("| measure | value |\n|---|---:|")
    print(f"| fp32 matmul {args.size}² | {fp32:.1f} GFLOP/s |")
    print(f"| bf16 matmul {args.size}² | {bf16:.1f} GFLOP/s |")
    print(f"| bf16 / fp32 speed | {bf16 / fp32:.2f}x |")
    print(f"| memory copy | {copy_gbps():.1f} GB/s |")


if __name__ == "__main__":
    main()
