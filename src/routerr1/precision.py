"""Precision chosen per machine: ``auto`` means bf16 only where the hardware runs it natively.

bf16 is fast on a CPU with AMX or AVX512-BF16 and on CUDA devices that support it. Everywhere
else it is emulated: on a 2-core AVX2 CPU (AMD EPYC Zen 3) a bf16 matmul ran 56 times slower
than fp32. So ``auto`` resolves at run time, on the machine that runs the job (a SLURM GPU node
and its login node differ), and an explicit value always wins.

The probe (:func:`probe`) is the only place that looks at the hardware; tests replace it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DTYPES = ("auto", "bfloat16", "float32")
LINEAR_KERNELS = ("auto", "default", "onednn")
PRECISIONS = ("auto", "bf16", "fp32")
# CPU flags (as /proc/cpuinfo spells them) that give native bf16 matmuls
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# torch's CPU dispatch levels below AVX512 cannot use those kernels even where the CPU has them
# (e.g. ATEN_CPU_CAPABILITY=avx2)
NON_AVX512 = ("DEFAULT", "NO AVX", "AVX2", "ZVECTOR", "VSX")


@dataclass(frozen=True)
class Hardware:
    """What the precision choice depends on."""

    cpu_model: str
    cpu_capability: str  # torch.backends.cpu.get_cpu_capability()
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    cpu_vendor: str = ""  # /proc/cpuinfo's vendor_id: GenuineIntel, AuthenticAMD, ...
    cuda_name: str | None = None  # the first visible CUDA device, if any
    cuda_bf16: bool | None = None  # torch.cuda.is_bf16_supported() on it

    def describe(self) -> str:
        """One line for logs and benchmark headers."""
        gpu = f"; GPU {self.cuda_name} (bf16 {'yes' if self.cuda_bf16 else 'no'})"
        return (
            f"CPU {self.cpu_model} (torch cpu capability {self.cpu_capability}, "
            f"native bf16 {'yes' if cpu_native_bf16(self)[0] else 'no'})"
            + (gpu if self.cuda_name else "")
        )


@dataclass(frozen=True)
class Resolved:
    """A concrete precision and why it was chosen."""

    value: str  # "bfloat16"/"float32" for dtypes, "bf16"/"fp32" for train.precision
    reason: str


def _cpu_info() -> tuple[str, frozenset[str], str]:
    model, flags, vendor = "unknown CPU", frozenset(), ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        import platform

        return platform.processor() or platform.machine() or model, flags, vendor
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key == "vendor_id" and not vendor:
            vendor = value.strip()
    return model, flags, vendor


@functools.lru_cache(maxsize=1)
def probe() -> Hardware:
    """The hardware of this process (cached: it does not change while we run)."""
    import torch

    model, flags, vendor = _cpu_info()
    cuda_name = cuda_bf16 = None
    if torch.cuda.is_available():
        cuda_name = torch.cuda.get_device_name(0)
        cuda_bf16 = bool(torch.cuda.is_bf16_supported())
    return Hardware(
        cpu_model=model,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cpu_flags=flags,
        cpu_vendor=vendor,
        cuda_name=cuda_name,
        cuda_bf16=cuda_bf16,
    )


def cpu_native_bf16(hw: Hardware) -> tuple[bool, str]:
    """Whether bf16 runs natively on this CPU, and the evidence in words."""
    native = [f for f in BF16_CPU_FLAGS if f in hw.cpu_flags]
    if hw.cpu_capability.upper() in NON_AVX512:
        return False, f"cpu capability {hw.cpu_capability}, no native bf16"
    if not native:
        return False, f"cpu capability {hw.cpu_capability}, no AMX or AVX512-BF16"
    return True, f"cpu capability {hw.cpu_capability}, {' and '.join(native)}"


def native_bf16(hw: Hardware, device: str) -> tuple[bool, str]:
    if device == "cuda":
        if hw.cuda_name is None:
            return False, "no CUDA device"
        if hw.cuda_bf16:
            return True, f"CUDA {hw.cuda_name} supports bf16"
        return False, f"CUDA {hw.cuda_name} has no bf16"
    return cpu_native_bf16(hw)


def training_device(hw: Hardware) -> str:
    return "cuda" if hw.cuda_name else "cpu"


_warned: set[str] = set()


def _resolve(
    requested: str, key: str, names: tuple[str, str, str], device: str, hw: Hardware | None
) -> Resolved:
    """``names`` spells (auto, bf16, fp32) in the key's own vocabulary."""
    auto, bf16, fp32 = names
    if requested not in names:
        raise ValueError(f"{key}: {requested!r} is not one of {list(names)}")
    native, why = native_bf16(hw or probe(), device)
    if requested == auto:
        return Resolved(bf16 if native else fp32, f"auto: {why}")
    if requested == bf16 and not native:
        _warn_slow_bf16(key, why, device)
    return Resolved(requested, f"set explicitly; {why}")


def resolve_dtype(
    requested: str, key: str, device: str = "cpu", hw: Hardware | None = None
) -> Resolved:
    """The torch dtype name for a model's weights (``pool[i].dtype``, ``policy.dtype``)."""
    return _resolve(requested, key, DTYPES, device, hw)


def resolve_policy_dtype(requested: str, hw: Hardware | None = None) -> Resolved:
    """``policy.dtype``: ``auto`` keeps fp32 master weights on every machine.

    bf16 weights lose GRPO's lr-1e-6 updates; the compute precision is ``train.precision``.
    """
    if requested == "auto":
        return Resolved("float32", "auto: fp32 master weights; train.precision sets the compute")
    hw = hw or probe()
    return resolve_dtype(requested, "policy.dtype", training_device(hw), hw)


def resolve_precision(
    requested: str, key: str = "train.precision", hw: Hardware | None = None
) -> Resolved:
    """Training/rollout compute precision: ``bf16`` autocast or plain ``fp32``."""
    hw = hw or probe()
    return _resolve(requested, key, PRECISIONS, training_device(hw), hw)


def resolve_linear_kernel(
    requested: str, dtype: str, device: str = "cpu", hw: Hardware | None = None
) -> Resolved:
    """``linear_kernel``: which kernels run a model's fp32 linear layers when it only infers
    (pool answers, policy rollouts). ``onednn`` prepacks the weights (`routerr1.packed_linear`);
    ``default`` keeps torch's (MKL on x86). ``auto`` packs on AMD CPUs in fp32, where it was
    measured: on a 2-core AMD EPYC (AVX2) a decode step's products ran 2-2.5x faster packed,
    the answers equal to rounding. Other CPUs keep torch's kernels (on Intel, MKL is Intel's
    own); bf16 runs through oneDNN already."""
    if requested not in LINEAR_KERNELS:
        raise ValueError(f"linear_kernel: {requested!r} is not one of {list(LINEAR_KERNELS)}")
    from routerr1.packed_linear import available

    if device != "cpu" or dtype != "float32":
        why = "not on CPU" if device != "cpu" else f"{dtype} runs through oneDNN already"
        return Resolved("default", f"{'auto' if requested == 'auto' else 'not used'}: {why}")
    if not available():
        return Resolved("default", "this torch has no oneDNN linear kernels")
    if requested != "auto":
        return Resolved(requested, "set explicitly")
    vendor = (hw or probe()).cpu_vendor or "unknown vendor"
    if vendor == "AuthenticAMD":
        return Resolved("onednn", "auto: AMD CPU, fp32: MKL's few-row products are slow here")
    return Resolved("default", f"auto: {vendor} CPU, torch's own kernels")


def _warn_slow_bf16(key: str, why: str, device: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    slowdown = bf16_slowdown() if device == "cpu" else None
    measured = f"a bf16 matmul runs {slowdown:.0f}x slower than fp32 here" if slowdown else why
    log.warning(
        "%s: bfloat16 was asked for, but this machine has no native bf16 (%s; %s). "
        "Set %s: auto to use float32 here.",
        key,
        why,
        measured,
        key,
    )


@functools.lru_cache(maxsize=1)
def bf16_slowdown(size: int = 256, seconds: float = 0.2) -> float:
    """bf16 / fp32 time of a square matmul on this CPU (about half a second to measure)."""
    return matmul_gflops("float32", size, seconds) / matmul_gflops("bfloat16", size, seconds)


def matmul_gflops(dtype: str, size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of a ``size``² matmul in ``dtype`` on this CPU's torch threads."""
    import torch

    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size).to(torch_dtype)
    b = torch.randn(size, size).to(torch_dtype)
    a @ b  # warm-up: oneDNN picks and JITs its kernel on the first call
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - start) / 1e9


def hardware_header(resolved: Mapping[str, str] | None = None) -> str:
    """The first lines every benchmark prints: the machine and the precisions it ran in."""
    import torch

    hw = probe()
    lines = [
        f"CPU: {hw.cpu_model}; torch {torch.__version__}, cpu capability {hw.cpu_capability}, "
        f"native bf16: {'yes' if cpu_native_bf16(hw)[0] else 'no'} ({cpu_native_bf16(hw)[1]}); "
        f"{torch.get_num_threads()} threads"
    ]
    if hw.cuda_name:
        lines.append(f"GPU: {hw.cuda_name}, bf16 {'yes' if hw.cuda_bf16 else 'no'}")
    if resolved:
        lines.append("precision: " + ", ".join(f"{k} {v}" for k, v in resolved.items()))
    return "\n".join(lines)


def resolve_config(cfg: Mapping[str, Any], hw: Hardware | None = None) -> dict[str, Resolved]:
    """Every precision a config chooses, resolved for this machine, keyed like the config."""
    hw = hw or probe()
    out: dict[str, Resolved] = {}
    for list_key in ("pool", "pool_unseen"):
        for entry in cfg.get(list_key) or []:
            if entry.get("backend", "local") != "local":
                continue  # served elsewhere: the endpoint picks its own precision
            key = f"{list_key}[{entry['name']}].dtype"
            out[f"{list_key} {entry['name']}"] = resolve_dtype(
                entry.get("dtype", "auto"), key, "cpu", hw
            )
    out["policy"] = resolve_policy_dtype((cfg.get("policy") or {}).get("dtype", "auto"), hw)
    out["train.precision"] = resolve_precision(
        (cfg.get("train") or {}).get("precision", "auto"), hw=hw
    )
    kernel = cfg.get("linear_kernel", "auto")
    for name, resolved in list(out.items()):
        if name.startswith("pool"):
            out[f"{name} linear_kernel"] = resolve_linear_kernel(kernel, resolved.value, "cpu", hw)
    rollout_dtype = "bfloat16" if out["train.precision"].value == "bf16" else "float32"
    out["policy rollouts linear_kernel"] = resolve_linear_kernel(
        kernel, rollout_dtype, training_device(hw), hw
    )
    return out


def resolved_params(cfg: Mapping[str, Any], hw: Hardware | None = None) -> dict[str, str]:
    """The resolution as flat MLflow params (``precision.<what>``)."""
    resolved = resolve_config(cfg, hw)
    return {f"precision.{name.replace(' ', '.')}": r.value for name, r in resolved.items()}
