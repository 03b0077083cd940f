"""What a restoration task is: one definition of a degradation and of its LV intervention.

A task turns a clean image into the model input (``degrade``; also used to make training
pairs) and, given a block of that input, writes a natural patch into it *degraded the same way*
(``intervene``), so that the intervened image stays a plausible input (method doc, section 3).
Tasks know nothing about estimators, models or metrics.
"""

from __future__ import annotations

import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cem_lab.errors import CemLabError


class TaskError(CemLabError, ValueError):
    """A task used with inputs it cannot handle."""


@dataclass(frozen=True)
class Placement:
    """Where one intervention goes: a block clipped to the image and to the crop.

    ``dst`` = (y0, y1, x0, x1) in crop coordinates of the model input;
    ``src`` = (oy, ox): offset of that region inside the block's patch (non-zero when the
    block is cut by the crop's top or left edge).
    """

    dst: tuple[int, int, int, int]
    src: tuple[int, int]


#: the context key of a crop's (top, left) in the whole input: a CPU int64 tensor of 2 values, present
#: in a cropped context that holds whole-image entries (:attr:`TaskInput.whole_keys`)
CROP_ORIGIN = "crop_origin"


@dataclass
class TaskInput:
    """A degraded image ready for a CEM: the model input and what interventions need.

    ``input``: (1, 3, h, w) model input on the uint8 grid; ``target``: (1, 3, H, W) ground
    truth or None; ``context``: task-specific tensors of the input's size (e.g. the rain layer).
    ``whole_keys``: the context entries that crops keep whole, for an intervention that reads the
    image beyond the crop (the JPEG task re-encodes whole 8x8 / 16x16 JPEG blocks, which a crop can
    cut); a cropped context then also holds :data:`CROP_ORIGIN` (see :func:`crop_origin`).
    """

    input: Tensor
    target: Tensor | None
    context: dict[str, Tensor] = field(default_factory=dict)
    whole_keys: frozenset[str] = frozenset()

    def to(self, device: torch.device | str) -> TaskInput:
        """The same input on ``device`` (input, target and context moved)."""
        return TaskInput(
            self.input.to(device),
            None if self.target is None else self.target.to(device),
            {k: v.to(device) for k, v in self.context.items()},
            self.whole_keys,
        )

    def crop_context(self, box: tuple[int, int, int, int]) -> dict[str, Tensor]:
        """The context of the input crop ``box`` = (y0, y1, x0, x1): every entry cut to the crop,
        except the :attr:`whole_keys` ones, which are passed whole with the crop's origin."""
        y0, y1, x0, x1 = box
        out = {k: v if k in self.whole_keys else v[..., y0:y1, x0:x1] for k, v in self.context.items()}
        if self.whole_keys:
            out[CROP_ORIGIN] = torch.tensor([y0, x0], dtype=torch.int64)
        return out


def crop_origin(context: Mapping[str, Tensor]) -> tuple[int, int]:
    """(top, left) of the crop that ``context`` belongs to, in whole-input pixels; (0, 0) for the
    context of the whole input (``TaskInput.context`` itself)."""
    origin = context.get(CROP_ORIGIN)
    if origin is None:
        return 0, 0
    y0, x0 = (int(v) for v in origin.tolist())
    return y0, x0


class Task(ABC):
    """A degradation and its LV intervention. Subclasses set ``name`` and ``scale``."""

    name: str = "task"
    scale: int = 1
    #: whether each intervention draw needs fresh Gaussian noise of the block's shape
    needs_noise: bool = False
    #: whether :meth:`intervene` writes each row only inside its placement, from its own content, noise and the
    #: context, reading nothing of ``inputs``: then many blocks can be written into one input at once. False
    #: unless a task says so (a task of your own keeps the one-block-after-another path)
    writes_only_its_block: bool = False
    #: symmetric colour bound of the CE map figures, in dB (reference values)
    display_bound: float = 1.0

    # --- degradation -------------------------------------------------------------
    @abstractmethod
    def degrade(self, clean: Tensor, seed: int) -> Tensor:
        """(N, 3, H, W) clean images -> (N, 3, H/s, W/s) model inputs on the uint8 grid."""

    def prepare(self, clean: Tensor | None, seed: int = 0, degraded: Tensor | None = None) -> TaskInput:
        """Build the CEM input from a clean image, or from a user's own degraded input.

        With ``degraded`` given, ``clean`` is its ground truth (or None for a
        ground-truth-free run) and no synthetic degradation is applied.
        """
        if degraded is None:
            if clean is None:
                raise TaskError("give a clean image to degrade, or a degraded input")
            self.check_size(clean.shape[-2], clean.shape[-1])
            return TaskInput(self.degrade(clean, seed), clean, {})
        if clean is not None:
            self.check_pair(degraded, clean)
        return TaskInput(degraded, clean, {})

    # --- interventions -------------------------------------------------------------
    def patch_content(self, patches: Tensor) -> Tensor:
        """Deterministic part of the degradation applied once to a bank of HR patches.

        (N, 3, b, b) patches on the uint8 grid -> (N, 3, b/s, b/s) on the input grid.
        """
        return patches

    @abstractmethod
    def intervene(
        self,
        inputs: Tensor,
        context: dict[str, Tensor],
        content: Tensor,
        placements: Sequence[Placement],
        noise: Tensor | None = None,
    ) -> Tensor:
        """Write one intervention per batch row, in place, and return ``inputs``.

        ``inputs``: (B, 3, h, w) copies of the (cropped) model input; ``context``: the task
        context cropped the same way; ``content``: (B, 3, k, k) per-row patch content from
        :meth:`patch_content`; ``noise``: (B, 3, k, k) standard normal draws when
        :attr:`needs_noise`.
        """

    def check_lv_input(self, task_input: TaskInput) -> None:  # noqa: B027 (an optional hook)
        """Refuse, with the fix, a task input that the LV intervention cannot be built on (nothing
        to refuse by default; the JPEG task needs the clean image of a JPEG given with ``degraded``)."""

    # --- checks ------------------------------------------------------------------------
    def check_size(self, height: int, width: int) -> None:
        """Raise :class:`TaskError` unless ``height`` and ``width`` (clean-image pixels) are multiples of ``scale``."""
        if height % self.scale or width % self.scale:
            raise TaskError(
                f"{self.name}: image size {height}x{width} is not a multiple of the scale "
                f"{self.scale}; crop it (cem_lab.tasks.crop_to_scale does) before degrading"
            )

    def check_pair(self, degraded: Tensor, clean: Tensor) -> None:
        """Raise :class:`TaskError` unless ``clean`` is exactly ``scale`` times the size of ``degraded``."""
        h, w = degraded.shape[-2:]
        H, W = clean.shape[-2:]
        if (H, W) != (h * self.scale, w * self.scale):
            raise TaskError(
                f"{self.name}: degraded input {h}x{w} and ground truth {H}x{W} do not match "
                f"the scale x{self.scale}; the ground truth must be {h * self.scale}x{w * self.scale}"
            )

    def describe(self) -> dict:
        """The task's name and settings, as recorded in summary.json."""
        return {"name": self.name, "scale": self.scale}


def crop_to_scale(image: Tensor, scale: int) -> Tensor:
    """Cut H and W down to a multiple of ``scale`` (top-left kept), as the reference does."""
    h, w = image.shape[-2:]
    return image[..., : h - h % scale, : w - w % scale]


def seed_from_name(name: str) -> int:
    """Per-image seed: the first number in the file name (the reference's rule), else a CRC32."""
    match = re.search(r"\d+", name)
    if match:
        return int(match.group())
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def write_blocks(inputs: Tensor, values: Sequence[Tensor], placements: Sequence[Placement]) -> Tensor:
    """Write per-row block values (3, k, k) into ``inputs`` at their placements."""
    for i, (val, pl) in enumerate(zip(values, placements)):
        y0, y1, x0, x1 = pl.dst
        oy, ox = pl.src
        inputs[i, :, y0:y1, x0:x1] = val[:, oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
    return inputs


def task_label(task: Task | Mapping[str, Any]) -> str:
    """A short name of a task and its parameters: ``sr_x4``, ``dn_s50``, ``dr_medium``, ``jpeg_q75``
    (``jpeg_q75_444_x2``: another chroma subsampling than 4:2:0, scale 2).

    ``task``: a :class:`Task` or its ``describe()`` mapping (as stored in run folders and model
    YAMLs)."""
    d = task.describe() if isinstance(task, Task) else task
    name = str(d.get("name", "unknown"))
    if name == "sr" and d.get("scale") is not None:
        return f"sr_x{int(d['scale'])}"
    if name == "dn" and d.get("sigma") is not None:
        return f"dn_s{float(d['sigma']):g}"
    if name == "dr" and d.get("preset") is not None:
        return f"dr_{d['preset']}"
    if name == "jpeg" and d.get("quality") is not None:
        label = f"jpeg_q{int(d['quality'])}"
        if d.get("subsampling") not in (None, "4:2:0"):
            label += "_" + str(d["subsampling"]).replace(":", "")
        if d.get("footprint") not in (None, "mcu"):
            label += f"_{d['footprint']}"
        if int(d.get("scale", 1)) != 1:
            label += f"_x{int(d['scale'])}"
        return label
    return name
