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


def resolve_device(name: str) -> torch.device:
    """"auto": the (current) GPU where one is visible, else the CPU; anything else as torch reads
    it, refused with a clear error when it names a GPU this machine does not have."""
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r} (cpu, cuda, cuda:N or auto): {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA GPU is visible to this process (torch {torch.__version__}); "
                             "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


# The aten operator behind F.scaled_dot_product_attention for each backend (CPU and CUDA).
SDPA_OPS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "fused (overrideable)",
    "_scaled_dot_product_attention_math": "math",
}


def sdpa_backend(device: torch.device | str, dtype: torch.dtype, num_heads: int, head_dim: int,
                 frames: int = 120) -> str:
    """Which SDPA kernel runs for the network's attention (a boolean key-padding mask broadcast
    over heads and queries, as model/dit.py calls it) on this device at this dtype: the backend
    operator the call dispatches to, recorded as it runs, never assumed."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    device = torch.device(device)
    q = torch.randn(2, num_heads, frames, head_dim, device=device, dtype=dtype)
    mask = torch.ones(2, 1, 1, frames, dtype=torch.bool, device=device)
    mask[1, ..., frames // 2:] = False  # a padded sample
    with _Record() as record:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    found = [SDPA_OPS[op] for op in record.ops if op in SDPA_OPS]
    return found[0] if found else "unknown (" + ", ".join(record.ops) + ")"


def bf16_is_fast(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(_cpu_flags() & _NATIVE_BF16_CPU_FLAGS)
    return False
