"""Measuring: synchronised timers, peak memory (CUDA allocator or process RSS), freeing memory between
cases, FLOP counts, agreement.

On CUDA every timer synchronises before it starts and before it stops, so it measures the GPU's
work rather than the time to queue it. On CPU, peak memory is the growth of the process's
resident set over a block (`VmHWM` reset through `/proc/self/clear_refs`): run each case in its
own process (see `isolated.py`) so memory freed by an earlier case cannot hide a later one's.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str, repeats: int = 1) -> list[float]:
    """Seconds for each of `repeats` calls of `fn`, synchronised on CUDA."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# ----------------------------------------------------------------------------- memory

def _proc_status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """`with PeakMemory(device) as m: ...` then `m.peak_bytes` (the highest memory in use during the
    block) and `m.growth_bytes` (that peak minus what was in use when the block began).

    CUDA: `torch.cuda.max_memory_allocated` (tensors, not the allocator's cache). CPU: resident set
    size, so it includes the interpreter and the weights; `growth_bytes` is the block's own share.
    Both are None when the platform offers no way to read them.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self.growth_bytes: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            rss = _proc_status_kib("VmRSS")
            self._start = None if rss is None or not _reset_rss_peak() else rss * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._start is not None:
            hwm = _proc_status_kib("VmHWM")
            self.peak_bytes = None if hwm is None else hwm * 1024
        if self.peak_bytes is not None and self._start is not None:
            self.growth_bytes = max(self.peak_bytes - self._start, 0)


def free_memory(device: torch.device | str) -> None:
    """Collect garbage and return CUDA's cached blocks, so the next case starts from what is really in use."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- FLOPs and agreement

def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` as `torch.utils.flop_counter` counts them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    # torch counts the GPU attention kernels but not the CPU one; it does the same arithmetic.
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops}
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        fn()
    return int(counter.get_total_flops())


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors taken as flat vectors, in float64."""
    a, b = a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


# ----------------------------------------------------------------------------- the machine

def machine_info(device: torch.device | str) -> dict:
    """What the numbers were measured on: device name, torch/diffusers versions, CPU threads."""
    import diffusers

    device = torch.device(device)
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
