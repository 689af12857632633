"""What the hardware does fast. bf16 autocast pays off only where bf16 matmuls run natively
(AMX or AVX512-BF16 on CPUs, bf16 tensor cores on GPUs); elsewhere it is emulated and far slower
than fp32 (measured on an AMD EPYC without either: 0.9 vs 65 GFLOP/s for a 1024^3 matmul)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

_NATIVE_BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


@lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_is_fast(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(_cpu_flags() & _NATIVE_BF16_CPU_FLAGS)
    return False
