"""CPU threads of a map's many model calls: measured, not assumed.

A map is thousands of calls of one shape. Split over torch's intra-op threads, each call waits for all of its
threads; on a quiet machine a second thread helps, but beside another CPU-bound process every thread waits for a
core, and small calls got slower by an order of magnitude: the DnCNN demo's incremental run took 116 s on 2
threads and 12.7 s on 1, a tiny FSRCNN's ROI-crop map 77 s on 2 and 0.9 s quiet (BENCHMARKS.md, "Incremental
recompute: under contention"). :func:`probe_threads` times one convolution of the run's shape on 1 thread and on
all of torch's, in turn, and keeps all only when clearly faster; :func:`cpu_threads` runs a block on the chosen
number. A probe of a few milliseconds can be fooled by a lull of the other process, so within a map the probe is
only the prior of a race on the map's own work units (:mod:`cem_lab.causal.path_race`); the small operations
around the model calls run on :data:`SMALL_OP_THREADS`. The choices are recorded with the map (another thread
count may round a convolution differently: FSRCNN's transposed convolution by 3e-07).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

#: threads of a map's own small operations around the model calls (drawing and pasting the interventions, the
#: checks on their inputs, the metric): a work unit's few hundred thousand values, which torch splits over its
#: threads; beside a busy process every split waited for a core, and a small network's map spent 4 to 7 times
#: its quiet time there (BENCHMARKS.md, "Paths and threads raced on the map")
SMALL_OP_THREADS = 1

#: threads of a run whose choice is not measured (a probe that cannot run): the choice that is never
#: catastrophic (1 thread is at most about 2x slower on a quiet 2-core machine, 2 were 14x slower beside a busy one)
DEFAULT_CPU_THREADS = 1


@contextmanager
def cpu_threads(device: torch.device, n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads on a CPU (at most the current number; None: as it is), then
    restore the number before it."""
    before = torch.get_num_threads()
    if device.type != "cpu" or n is None or n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: all threads are kept only where their median time is below this share of one thread's: beside a busy process a
#: median of three can fall just under one thread's by chance (a map then ran 2 to 9 times slower), while a
#: second thread that pays on a quiet machine saves far more than this on a convolution of the probe's size
PROBE_GAIN = 0.85

#: largest probe convolution, in multiply-adds: a few milliseconds on one core. A larger shape is probed with a
#: smaller batch first, then smaller sides; at this size a second thread's gain shows where there is one
PROBE_MAX_MACS = 150e6


def probe_threads(model: nn.Module, device: torch.device, batch: int, side: tuple[int, int]) -> dict[str, Any]:
    """Threads for calls of shape (``batch``, C, *side*) of ``model``: 1, or all of torch's when the model's
    largest convolution (a 64-channel 3x3 stand-in when it has none) on that shape (cut to
    :data:`PROBE_MAX_MACS`) has a median time of three on all of them below :data:`PROBE_GAIN` of its median on 1,
    the two counts timed in turn.

    Medians, because a millisecond convolution's single times scatter by tens of percent on a quiet machine
    (a rule of "faster every time" kept 1 thread where 2 made the whole map 1.3x faster). The probe stops at
    a time on all threads twice the fastest on one (threads waiting for a busy core), so beside a busy
    process it costs about one waited-for convolution. Returns ``{"chosen": n, "probe": what was timed,
    "seconds_1": median of the times on 1, "seconds_<all>": the times on all}``; ``{"chosen": None}`` off the CPU,
    where threads are not ours to choose."""
    most = torch.get_num_threads()
    if device.type != "cpu":
        return {"chosen": None}
    if most <= 1:
        return {"chosen": 1}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    if convs:
        conv = max(convs, key=lambda m: m.weight.numel())
        weight, bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
    else:
        weight, bias = torch.rand(64, 64, 3, 3, device=device), None
    per_px = weight[0].numel() * weight.shape[0]  # multiply-adds per output pixel
    h, w = side
    batch = max(1, min(batch, int(PROBE_MAX_MACS // max(1, per_px * h * w))))
    if batch * per_px * h * w > PROBE_MAX_MACS:
        f = (PROBE_MAX_MACS / (per_px * h * w)) ** 0.5
        h, w = max(8, int(h * f)), max(8, int(w * f))
    x = torch.rand(batch, weight.shape[1], h, w, device=device, dtype=weight.dtype)

    def once(n: int) -> float:
        with cpu_threads(device, n), torch.inference_mode():
            t = time.perf_counter()
            torch.nn.functional.conv2d(x, weight, bias)
            return time.perf_counter() - t

    once(1)  # warm-up
    ones: list[float] = []
    many: list[float] = []
    for _ in range(3):  # in turn, so that a load that comes and goes weighs on both counts alike
        ones.append(once(1))
        many.append(once(most))
        if many[-1] >= 2 * min(ones):  # clearly slower (threads waiting for a busy core): no need to wait for more
            break
    one = float(np.median(ones))
    return {
        "chosen": most if len(many) == 3 and float(np.median(many)) < PROBE_GAIN * one else 1,
        "probe": f"conv {tuple(weight.shape)} on {tuple(x.shape)}",
        "seconds_1": round(one, 6),
        f"seconds_{most}": [round(v, 6) for v in many],
    }
