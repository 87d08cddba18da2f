"""Settings a run leaves to curate: 4-bit or not, and the pack size, from the device and its
free memory, each with the reason it was chosen (printed in the summary and the packet).

- Quantization: 4-bit (QLoRA) saves memory where memory is what limits, on CUDA. On CPU the
  host's memory rarely limits a model small enough to train there, and 4-bit computes in
  bf16, which is fast only on CPUs with bf16 instructions (AVX-512 BF16 / AMX: here QLoRA ran
  149 tokens/s against plain LoRA's 85 on SmolLM2-135M) and emulated, far slower, elsewhere
  (a 512-token step took ~95 s against ~15 s). Plain LoRA is the CPU default, and the reason
  printed says when `--quantize` would be faster on this CPU.
- Pack size: on CPU, attention over a packed row is materialized (a mask and the attention
  weights per layer, kept for the backward pass), so memory grows with the square of the
  pack: 8,192 tokens on SmolLM2-135M grew past 20 GB. The pack is sized to half the free
  memory by that estimate, and kept small on CPU, where a step's time grows with it while
  throughput does not. On CUDA, packs of 8,192 tokens, bounded by the same estimate against
  the GPU's free memory. Never below the longest row, which is never cut.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_PACK = 512  # a step on 2 cores takes ~5-10 s at this size; throughput does not improve above
CUDA_PACK = 8192
MEMORY_SHARE = 0.5  # of the free memory, for the attention estimate


@dataclass(frozen=True)
class Choice:
    value: Any
    why: str


def available_memory(device: str) -> int:
    """Free bytes on the device: the GPU's, else the host's (the cgroup's limit where lower)."""
    if device == "cuda":
        import torch

        gpu_free, _ = torch.cuda.mem_get_info()
        return int(gpu_free)
    free: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free or 1 << 62, int(limit) - used)
    except (OSError, ValueError):
        pass
    if free is None:
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
        free = pages * os.sysconf("SC_PAGE_SIZE") if pages else 8 << 30
    return max(int(free), 1 << 28)


def attention_bytes(config: Any, tokens: int) -> int:
    """Memory that materialized attention over one packed row keeps for the backward pass."""
    layers = int(getattr(config, "num_hidden_layers", 32))
    heads = int(getattr(config, "num_attention_heads", 32))
    return layers * heads * tokens * tokens * 4 * 2 + tokens * tokens * 4


def has_bf16_instructions() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_quantization(asked: bool | None, device: str) -> Choice:
    if asked is not None:
        return Choice(asked, "as asked" if asked else "as asked (--no-quantize)")
    if device == "cuda":
        return Choice(True, "QLoRA on CUDA: 4-bit weights leave memory for larger packs")
    hint = (
        "this CPU has bf16 instructions, so --quantize (QLoRA) is likely faster here"
        if has_bf16_instructions()
        else "4-bit computes in bf16, which this CPU emulates slowly"
    )
    return Choice(False, f"the CPU default: host memory does not limit a small model; {hint}")


def choose_pack_size(asked: int | None, device: str, config: Any, longest: int) -> Choice:
    """Tokens per pack: as asked, else by device and free memory; at least the longest row."""
    if asked is not None:
        return Choice(asked, "as asked")
    free = available_memory(device)
    budget = free * MEMORY_SHARE
    # largest pack whose attention fits the budget (solve the quadratic estimate)
    per_token_sq = attention_bytes(config, 1)
    fits = int(math.sqrt(budget / per_token_sq)) if per_token_sq else CUDA_PACK
    preferred = CPU_PACK if device == "cpu" else CUDA_PACK
    size = min(preferred, fits)
    size = max(size, _round_up(longest, 128))
    gib = free / (1 << 30)
    if size == preferred:
        why = f"{device} default ({gib:.1f} GiB free; attention at this size needs "
        why += f"{attention_bytes(config, size) / (1 << 30):.1f} GiB)"
    elif size == _round_up(longest, 128) and size > min(preferred, fits):
        why = f"the longest row ({longest} tokens): rows are never cut"
    else:
        why = f"bounded by memory: {gib:.1f} GiB free, materialized attention grows with the square"
    return Choice(size, why)


def _round_up(n: int, step: int) -> int:
    return max(step, -(-n // step) * step)
