"""How many inputs the model runs on at once when ``forward_batch=auto``: the most the device's memory holds."""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: ``forward_batch=auto`` on a device without a memory limit to find (the CPU): the default batch
CPU_FORWARD_BATCH = 8


def largest_forward_batch(model: nn.Module, x: Tensor, device: torch.device, start: int = 256) -> int:
    """The largest batch of ``x`` (a power of two <= ``start``) that the model runs on ``device`` without
    running out of memory; on a CPU, :data:`CPU_FORWARD_BATCH`."""
    if device.type != "cuda":
        return CPU_FORWARD_BATCH
    b = start
    while b > 1:
        try:
            with torch.inference_mode():
                model(x.expand(b, -1, -1, -1).contiguous())
            torch.cuda.synchronize(device)
            return b
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            b //= 2
    return 1


def available_bytes(device: torch.device) -> int | None:
    """The memory free for new work on ``device`` (CUDA: the driver's free memory; CPU: Linux's MemAvailable), or
    None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """The memory a block of work took beyond what the process held before it: CUDA's peak allocation, or on the
    CPU the peak resident set (Linux: reset through /proc/self/clear_refs, read as VmHWM). ``used`` is None where
    it cannot be measured (then nothing is concluded from it)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.used = device, None
        self._before: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        elif _reset_peak_resident():
            self._before = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.used = int(torch.cuda.max_memory_allocated(self.device)) - int(self._before or 0)
        elif self._before is not None:
            peak = _status_bytes("VmHWM")
            self.used = None if peak is None else max(0, peak - self._before)


def _reset_peak_resident() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set (VmHWM) to the current one
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
