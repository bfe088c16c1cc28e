"""Linear layers with their weights prepacked for oneDNN, for fp32 inference on CPU.

torch runs an fp32 ``nn.Linear`` through MKL. On the AMD EPYC of issue #15 (AVX2 only) MKL's
products of a few rows by a large weight, which is every decode step, ran 2-2.5x slower than
oneDNN's with the weight reordered once (``benchmarks/linear_kernels.py``). Decoding is made
of such products, so the pool's answers and the policy's rollouts spend most of their time
there. The results differ from MKL's only in fp32 rounding.

``routerr1.precision.resolve_linear_kernel`` decides where this is used (``linear_kernel``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# the batch size oneDNN tunes the packed layout for; any number of rows still works
PACK_ROWS = 16


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """Inference-only stand-in for an fp32 ``nn.Linear``: same outputs up to rounding."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.out_features, self.in_features = weight.shape
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACK_ROWS)
        self.register_buffer("packed_weight", packed, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed_weight, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)


def _fp32_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) of every plain fp32 ``nn.Linear``. Adapter layers (peft's
    LoRA wraps its base layer and reads its weight) are left alone."""
    if getattr(model, "peft_config", None):
        return []
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Linear and child.weight.dtype == torch.float32:
                found.append((parent, name, child))
    return found


def pack_linears(model: nn.Module) -> int:
    """Replace ``model``'s fp32 linear layers by packed ones, for good (a model that only
    answers). A tied output layer gets its own packed copy; the embedding keeps the weight.
    Returns how many were replaced."""
    layers = _fp32_linears(model)
    for parent, name, child in layers:
        setattr(parent, name, PackedLinear(child))
    return len(layers)


@contextmanager
def packed_linears(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Pack ``model``'s fp32 linear layers while the block runs (a policy rolls out with the
    weights of this moment) and put the trainable layers back after. Yields how many."""
    layers = _fp32_linears(model) if enabled else []
    with torch.no_grad():
        for parent, name, child in layers:
            setattr(parent, name, PackedLinear(child))
    try:
        yield len(layers)
    finally:
        for parent, name, child in layers:
            setattr(parent, name, child)
