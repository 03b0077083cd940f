"""Interventions: what a block of the model input is replaced by, one draw at a time.

Every draw is a pure function of a numpy Generator seeded from (seed, block, sample), so a
draw does not depend on batch size, order or device. Draws are small (an index into the
patch bank and, for denoising, a block of noise); the intervened inputs themselves are built
on the model's device, one batch at a time.

- :class:`LVIntervention` (the paper's): a natural patch from a bank, degraded by the task.
- :class:`BaselineIntervention`: ablation baselines written straight into the model input,
  without the task's degradation (zeros, image mean, blurred block, noise only), like a
  constant baseline in Captum's FeatureAblation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cem_lab.errors import InputError
from cem_lab.images import to_uint8
from cem_lab.patches import block_sharpness, make_sampler
from cem_lab.tasks.base import Placement, Task, TaskInput, write_blocks


def draw_rng(seed: int, block: int, sample: int) -> np.random.Generator:
    """The generator of one intervention draw."""
    return np.random.default_rng([int(seed), int(block), int(sample)])


class Intervention(ABC):
    """What replaces a block of the model input: bound to one task input, drawn per (block, sample),
    applied in batches."""

    name: str
    #: True when every draw is the same (one sample per block is then enough)
    deterministic: bool = False

    @property
    def writes_only_its_block(self) -> bool:
        """Whether :meth:`apply` writes each row only inside its placement and reads nothing of ``inputs``, so
        that the draws of many blocks can be written into one input at once (``apply`` on rows that are views
        of that input). False unless an intervention says so (one of your own keeps the one-by-one path)."""
        return False

    def bind(
        self,
        task: Task,
        task_input: TaskInput,
        block_boxes: list[tuple[int, int, int, int]],
        block_in: int,
        device: torch.device,
    ) -> None:
        """Prepare for one task input whose blocks are ``block_boxes`` ((y0, y1, x0, x1) in input pixels,
        side ``block_in``)."""
        self.task, self.block_in, self.device = task, block_in, device

    @abstractmethod
    def draw(self, rng: np.random.Generator, block: int, sample: int) -> tuple[int, np.ndarray | None]:
        """(content index, optional float32 noise (3, k, k)) of one draw."""

    @abstractmethod
    def apply(
        self,
        inputs: Tensor,
        context: dict[str, Tensor],
        placements: Sequence[Placement],
        draws: Sequence[tuple[int, np.ndarray | None]],
        origin: tuple[int, int] = (0, 0),
    ) -> Tensor:
        """Write the draws into the batch ``inputs`` in place.

        ``inputs`` are copies of the model input cropped at ``origin`` (top, left);
        ``context`` is the task context cropped the same way.
        """

    def describe(self) -> dict:
        """The intervention's name and settings, as recorded in summary.json."""
        return {"name": self.name}

    def fingerprint_arrays(self) -> list[np.ndarray]:
        """Arrays that the run's fingerprint hashes besides :meth:`describe` (none here)."""
        return []

    def _noise_tensor(self, draws) -> Tensor | None:
        if draws[0][1] is None:
            return None
        return torch.from_numpy(np.stack([d[1] for d in draws])).to(self.device)


class LVIntervention(Intervention):
    """Natural patches from a :class:`~cem_lab.patches.PatchBank`, degraded like the input."""

    name = "lv"

    def __init__(self, bank, sampler="uniform"):
        self.bank = bank
        self.sampler = make_sampler(sampler) if isinstance(sampler, str) else sampler
        self.sampler.bind(bank)

    def bind(self, task, task_input, block_boxes, block_in, device):
        """Degrade every bank patch once at the block size and measure each block's sharpness on the
        reference image (the target, else the input)."""
        super().bind(task, task_input, block_boxes, block_in, device)
        task.check_lv_input(task_input)  # e.g. a JPEG without its clean image: refused before any compute
        block = block_in * task.scale
        # the deterministic part of the degradation, once per bank patch, on the device
        self.content = task.patch_content(self.bank.resized(block).to(device))
        reference = task_input.target if task_input.target is not None else task_input.input
        ref_img = to_uint8(reference)
        s = task.scale if task_input.target is not None else 1
        self.block_sharpness = np.array(
            [
                block_sharpness(ref_img, (y0 * s, x0 * s, y1 * s, x1 * s), self.bank.patch_size)
                for (y0, y1, x0, x1) in block_boxes
            ]
        )

    def draw(self, rng, block, sample):
        """A bank patch chosen by the sampler for the block's sharpness, plus (3, k, k) noise when the task needs it."""
        idx = int(self.sampler.draw(rng, float(self.block_sharpness[block]), int(sample)))
        noise = None
        if self.task.needs_noise:
            noise = rng.standard_normal((3, self.block_in, self.block_in)).astype(np.float32)
        return idx, noise

    @property
    def writes_only_its_block(self) -> bool:
        """As the task's intervention does (not JPEG's, which re-encodes whole MCUs)."""
        return self.task.writes_only_its_block

    def apply(self, inputs, context, placements, draws, origin=(0, 0)):
        """Place the drawn degraded patches through the task's own intervention."""
        idx = torch.tensor([d[0] for d in draws], device=self.device)
        return self.task.intervene(inputs, context, self.content[idx], placements, self._noise_tensor(draws))

    def describe(self):
        """Name, sampler (and its options, when not the defaults) and patch bank (source, size, patch size)."""
        options = self.sampler.options() if hasattr(self.sampler, "options") else {}
        return {
            "name": self.name,
            "sampler": self.sampler.name,
            **({"sampler_options": options} if options else {}),
            "bank": self.bank.source,
            "bank_size": len(self.bank),
            "patch_size": self.bank.patch_size,
        }

    def fingerprint_arrays(self):
        """The bank's patches."""
        return [self.bank.patches]


class BaselineIntervention(Intervention):
    """Ablation baselines written straight into the model input (no task degradation).

    ``zeros``: the block is set to 0; ``mean``: to the mean colour of the input image;
    ``blur``: to the same block of a Gaussian-blurred input (``blur_sigma`` input pixels);
    ``noise``: to i.i.d. uniform noise in [0, 1], fresh for each draw.
    """

    KINDS = ("zeros", "mean", "blur", "noise")
    #: each kind writes its block from its draw or the source image alone
    writes_only_its_block = True

    def __init__(self, kind: str = "zeros", blur_sigma: float = 2.0):
        if kind not in self.KINDS:
            raise InputError(f"unknown baseline intervention {kind!r}; choose one of {list(self.KINDS)} or 'lv'")
        self.name = kind
        self.kind = kind
        self.blur_sigma = float(blur_sigma)
        self.deterministic = kind != "noise"

    def bind(self, task, task_input, block_boxes, block_in, device):
        """Precompute the ``mean`` or ``blur`` source image on the device."""
        super().bind(task, task_input, block_boxes, block_in, device)
        x = task_input.input.to(device)
        self.source = None
        if self.kind == "mean":
            self.source = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        elif self.kind == "blur":
            self.source = gaussian_blur(x, self.blur_sigma)

    def draw(self, rng, block, sample):
        """Index 0, with (3, k, k) uniform noise in [0, 1] for ``noise``."""
        if self.kind == "noise":
            return 0, rng.random((3, self.block_in, self.block_in)).astype(np.float32)
        return 0, None

    def apply(self, inputs, context, placements, draws, origin=(0, 0)):
        """Write zeros, noise, or the block of the mean or blurred source image into ``inputs``."""
        if self.kind == "zeros":
            for i, pl in enumerate(placements):
                y0, y1, x0, x1 = pl.dst
                inputs[i, :, y0:y1, x0:x1] = 0
            return inputs
        if self.kind == "noise":
            return write_blocks(inputs, self._noise_tensor(draws), placements)
        # mean / blur: copy the block from the precomputed source image, in crop coordinates
        oy, ox = origin
        for i, pl in enumerate(placements):
            y0, y1, x0, x1 = pl.dst
            inputs[i, :, y0:y1, x0:x1] = self.source[0, :, oy + y0 : oy + y1, ox + x0 : ox + x1]
        return inputs

    def describe(self):
        """Name, and ``blur_sigma`` for ``blur``."""
        d = {"name": self.name}
        if self.kind == "blur":
            d["blur_sigma"] = self.blur_sigma
        return d


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding, radius 3 sigma."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:  # tiny images: fall back to replicate padding
        xp = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    else:
        xp = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    xp = F.conv2d(xp, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(xp, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_intervention(name: str = "lv", bank=None, sampler="uniform", blur_sigma: float = 2.0) -> Intervention:
    """The intervention named ``name``: ``"lv"`` (needs ``bank``) or a baseline (zeros, mean, blur, noise)."""
    if name == "lv":
        if bank is None:
            raise InputError("the LV intervention needs a patch bank")
        return LVIntervention(bank, sampler)
    return BaselineIntervention(name, blur_sigma=blur_sigma)
