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
