"""JPEG artefact removal (``task=jpeg``): the degradation that waifu2x's noise models undo.

Degradation: the clean image (``scale=1``), or its bicubic x2 downscale quantized to uint8 like
:class:`~cem_lab.tasks.SuperResolutionTask`'s (``scale=2``, for upscale + denoise models), is saved
as a JPEG with Pillow (its libjpeg-turbo) at ``quality`` and ``subsampling``, and the decoded pixels
are the model input.

LV intervention: the natural patch is written into the *clean* image (at ``scale=2``: the patch
downscaled, into the clean LR image) and the JPEG blocks it touches are encoded again with the same
settings; the decoded pixels of those blocks replace the model input's. The unit is the MCU (the
minimum coded unit: 16 x 16 pixels at 4:2:0, 16 wide x 8 high at 4:2:2, 8 x 8 at 4:4:4), on the grid
of the *whole* image, whatever crop of it the runner works on: the clean image travels whole in the
task context (``TaskInput.whole_keys``) with the crop's origin. So an intervention changes exactly
the MCUs its block touches, never a pixel outside them.

Only the touched MCUs and one MCU of margin around them are encoded, not the whole image: JPEG codes
each 8 x 8 block (and at 4:2:0 each 2 x 2 chroma average) on its own, so the MCUs inside equal a
whole-image encode, and the margin gives the decoder's chroma upsampling ("fancy", a 3/4 - 1/4
triangle filter) the same neighbours at their edge as in the whole image. Measured
(tests/tasks/test_jpeg_task.py): the touched MCUs equal a whole-image re-encode bit for bit.

Where chroma is subsampled, a whole-image re-encode also changes a 1-pixel ring *outside* the
touched MCUs (the upsampling filter reaches one pixel into the next MCU): at quality 75, 4:2:0, with
the embedded bank's patches, by 5-9 levels (median), 33 at the 99th percentile, 47 at most.
``footprint`` chooses what an intervention writes:

- ``"mcu"`` (default): the touched MCUs only; the ring keeps its original decode (in which a quarter
  of the replaced content's chroma still shows). An intervention never leaves whole MCUs, so with a
  block that is a multiple of the MCU it changes exactly its block, which the runner's crop,
  per-block and incremental recomputes assume.
- ``"exact"``: the MCUs and that ring: the intervened input equals a whole-image re-encode of the
  clean image with the patch written in, everywhere. It reaches one pixel past the MCUs, hence
  past any block: use ``recompute=roi_crop`` (the default) with it.

Use ``cem.block`` a multiple of the MCU on the input grid (16 input pixels at 4:2:0; at ``scale=2``
that is 32 output pixels) for an intervention to stay inside its block; with a smaller block (the
paper's 8), ``crop_multiple=16`` keeps the runner's dependency crop on the MCU grid, so that no block
outside the crop rewrites pixels inside it.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import weakref
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from PIL.JpegImagePlugin import get_sampling  # PIL's preinit loads it for any image read anyway
from torch import Tensor

from cem_lab.images import quantize
from cem_lab.tasks.base import Task, TaskError, TaskInput, crop_origin
from cem_lab.tasks.super_resolution import bicubic_downscale

log = logging.getLogger("cem_lab")

#: chroma subsampling -> Pillow's ``subsampling`` number and the MCU (rows, columns) in pixels
SUBSAMPLINGS: dict[str, tuple[int, tuple[int, int]]] = {
    "4:4:4": (0, (8, 8)),
    "4:2:2": (1, (8, 16)),
    "4:2:0": (2, (16, 16)),
}
_BY_NUMBER = {number: name for name, (number, _) in SUBSAMPLINGS.items()}
# what YAML 1.1 makes of an unquoted 4:2:0 (a base-60 number: 4*3600 + 2*60 + 0), to name the fix
_SEXAGESIMAL = {4 * 3600 + int(n[2]) * 60 + int(n[4]): n for n in SUBSAMPLINGS}
#: what an intervention writes: the MCUs its block touches, or also the ring the chroma upsampling reaches
FOOTPRINTS = ("mcu", "exact")
#: the context key of the clean image (on the input grid) that interventions re-encode
CLEAN = "clean"


def _subsampling_name(value: str | int) -> str:
    """ "4:2:0" / "4:2:2" / "4:4:4", or Pillow's numbers 2 / 1 / 0 -> the string form."""
    if isinstance(value, str) and value.strip() in SUBSAMPLINGS:
        return value.strip()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) in _BY_NUMBER:
            return _BY_NUMBER[int(value)]
        if int(value) in _SEXAGESIMAL:
            name = _SEXAGESIMAL[int(value)]
            raise TaskError(
                f"jpeg: subsampling {value} is what YAML makes of an unquoted {name} (a base-60 "
                f'number); quote it: subsampling: "{name}"'
            )
    raise TaskError(
        f"jpeg: subsampling must be one of {list(SUBSAMPLINGS)} (or Pillow's numbers "
        f"{sorted(_BY_NUMBER)}), got {value!r}"
    )


def jpeg_round_trip(image: np.ndarray, quality: int, subsampling: str) -> np.ndarray:
    """Save an (H, W, 3) uint8 RGB array as a JPEG with Pillow and decode it again (same shape).

    Pillow's defaults otherwise (baseline, standard Huffman tables, no smoothing): none of them
    changes a decoded pixel, only the file."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(
        buf, format="JPEG", quality=int(quality), subsampling=SUBSAMPLINGS[subsampling][0]
    )
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.load()
        if im.mode != "RGB":  # never for a 3-channel file written by Pillow
            im = im.convert("RGB")
        return np.asarray(im)


def _to_hwc_uint8(x: Tensor) -> np.ndarray:
    """(..., 3, h, w) float tensor on the uint8 grid -> (..., h, w, 3) uint8 array (on the CPU)."""
    u8 = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).cpu()
    return np.ascontiguousarray(u8.movedim(-3, -1).numpy())


def _to_tensor(arr: np.ndarray) -> Tensor:
    """(h, w, 3) uint8 array -> (3, h, w) float32 on the uint8 grid, computed as from_uint8 does."""
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0


class JpegTask(Task):
    """JPEG compression at ``quality`` (1..100) and chroma ``subsampling``, after an optional bicubic
    x2 downscale (``scale=2``). See the module docstring for the intervention.

    ``quality=75`` (the default) is the middle of the range that waifu2x trains its noise level 1 on
    (qualities 65-85, one compression) and the value its PyTorch port nunif validates level 1 with
    (nunif draws 4:2:0 or 4:4:4 with equal odds); it is also Pillow's own default, so a photo saved by Pillow
    without options matches it. For level 2-3 use ``quality`` 40-55 (waifu2x: 27-70, at times twice
    compressed); level 0: 85-95.
    ``subsampling="4:2:0"`` (the default) is what Pillow and libjpeg use at every quality when none is
    given (Pillow's ``subsampling=-1`` keeps libjpeg's 2x2 luma sampling factors; unlike some other
    tools, it does not switch to 4:4:4 at high qualities).
    ``footprint``: "mcu" or "exact", what an intervention writes (module docstring).
    """

    name = "jpeg"
    needs_noise = False

    def __init__(self, quality: int = 75, scale: int = 1, subsampling: str | int = "4:2:0", footprint: str = "mcu"):
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
            raise TaskError(
                f"jpeg: quality must be an integer from 1 (strongest compression) to 100, "
                f"got {quality!r}; e.g. task.quality=75"
            )
        if isinstance(scale, bool) or scale not in (1, 2):
            raise TaskError(
                f"jpeg: scale must be 1 (JPEG only) or 2 (bicubic x2 downscale, then JPEG: for "
                f"upscale + denoise models), got {scale!r}"
            )
        if footprint not in FOOTPRINTS:
            raise TaskError(
                f"jpeg: footprint must be 'mcu' (an intervention rewrites the MCUs its block "
                f"touches) or 'exact' (and the 1-pixel ring the decoder's chroma upsampling "
                f"reaches), got {footprint!r}"
            )
        self.quality = int(quality)
        self.scale = int(scale)
        self.subsampling = _subsampling_name(subsampling)
        self.footprint_mode = footprint
        self.mcu = SUBSAMPLINGS[self.subsampling][1]
        #: (rows, columns) that the decoder's chroma upsampling reaches past an MCU: 1 along a subsampled axis
        self.upsampling_reach = (int(self.mcu[0] > 8), int(self.mcu[1] > 8))
        #: the input grid a crop must follow to hold whole MCUs (the runner's crop_multiple)
        self.crop_multiple = math.lcm(*self.mcu)
        # small effects, as for DN; an SR-like range once the input is also downscaled
        self.display_bound = 1.0 if self.scale == 1 else 2.5
        self._clean_cache = None  # (weak reference to the context's clean tensor, its version, uint8 array)

    # --- degradation ---------------------------------------------------------------------------------
    def clean_input(self, clean: Tensor) -> Tensor:
        """The clean image on the input grid that the JPEG codes: ``clean`` (scale 1), or its bicubic
        x2 downscale quantized to uint8 (scale 2, as SR's input)."""
        return quantize(bicubic_downscale(clean, self.scale))

    def encode(self, images: Tensor) -> Tensor:
        """(N, 3, h, w) images on the uint8 grid -> their JPEG round trips (same shape and device)."""
        arrays = _to_hwc_uint8(images)
        out = [_to_tensor(jpeg_round_trip(a, self.quality, self.subsampling)) for a in arrays]
        return torch.stack(out).to(images.device)

    def degrade(self, clean: Tensor, seed: int = 0) -> Tensor:
        """The decoded JPEG of each clean image (``seed`` is unused: JPEG is deterministic)."""
        self.check_size(clean.shape[-2], clean.shape[-1])
        return self.encode(self.clean_input(clean))

    def prepare(self, clean: Tensor | None, seed: int = 0, degraded: Tensor | None = None) -> TaskInput:
        """The input and its context: the clean image on the input grid (``"clean"``, kept whole by
        crops), which every intervention re-encodes from.

        With a user's own JPEG (``degraded``) its ground truth ``clean`` provides that clean image;
        interventions then write the task's own encode (``quality``, ``subsampling``) of the ground
        truth with the patch into the user's decode, so the two should match: a mismatch is logged
        with the fix (:func:`read_jpeg_settings` reads a file's settings). Without a ground truth
        there is no clean image, and the LV intervention is refused (:meth:`check_lv_input`).
        """
        if degraded is None:
            if clean is None:
                raise TaskError(
                    "jpeg: give a clean image to compress, or a JPEG input (degraded=) and its ground truth"
                )
            self.check_size(clean.shape[-2], clean.shape[-1])
            lr = self.clean_input(clean)
            return TaskInput(self.encode(lr), clean, {CLEAN: lr}, frozenset({CLEAN}))
        if clean is None:
            return TaskInput(degraded, None, {})
        self.check_pair(degraded, clean)
        lr = self.clean_input(clean)
        self._note_mismatch(degraded, self.encode(lr))
        return TaskInput(degraded, clean, {CLEAN: lr}, frozenset({CLEAN}))

    def _note_mismatch(self, given: Tensor, ours: Tensor) -> None:
        diff = (given - ours).abs() * 255
        if not bool((diff > 0.5).any()):
            return
        mse = float((diff**2).mean())
        psnr = 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf")
        log.warning(
            "jpeg: the degraded input is not this task's JPEG of its ground truth (quality %d, subsampling %s"
            "%s): they differ by up to %.0f levels (PSNR %.1f dB). Interventions write this task's encode, so "
            "set task.quality / task.subsampling to the file's (cem_lab.tasks.jpeg.read_jpeg_settings(path) "
            "reads them)",
            self.quality,
            self.subsampling,
            ", after the x2 bicubic downscale" if self.scale == 2 else "",
            float(diff.max()),
            psnr,
        )

    # --- interventions ---------------------------------------------------------------------------------
    def patch_content(self, patches: Tensor) -> Tensor:
        """The natural patches on the input grid (scale 2: bicubic x2 downscale, quantized); the
        JPEG itself is applied per intervention, with the block's neighbourhood."""
        if patches.shape[-1] % self.scale:
            raise TaskError(
                f"jpeg: block size {patches.shape[-1]} is not a multiple of the scale {self.scale}; "
                f"choose cem.block as a multiple of {self.scale}"
            )
        k = patches.shape[-1] // self.scale
        my, mx = self.mcu
        if k % my or k % mx:
            log.info(
                "jpeg: a block of %d input pixels does not fill whole %dx%d MCUs (subsampling %s): each "
                "intervention rewrites the MCUs its block touches, beyond the block (cem.block a multiple "
                "of %d keeps it inside; or crop_multiple=%d)",
                k,
                mx,
                my,
                self.subsampling,
                math.lcm(my, mx) * self.scale,
                self.crop_multiple,
            )
        return quantize(bicubic_downscale(patches, self.scale))

    def check_lv_input(self, task_input: TaskInput) -> None:
        """Raise :class:`TaskError` when the context has no clean image to re-encode from."""
        if CLEAN not in task_input.context:
            raise TaskError(self._no_clean_message())

    def _no_clean_message(self) -> str:
        return (
            "jpeg: the LV intervention writes the natural patch into the clean image and encodes the JPEG "
            "blocks it touches again, and this JPEG input came without its clean image; give its ground "
            "truth too (degraded=photo.jpg image=clean.png), or use an ablation baseline "
            "(cem.intervention=zeros|mean|blur|noise)"
        )

    def footprint(
        self, block_box: tuple[int, int, int, int], size: tuple[int, int] | None = None
    ) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the pixels that an intervention on the block at ``block_box`` (whole-input
        pixels) writes: the MCUs the block touches (``footprint="mcu"``), and with ``"exact"`` the
        1-pixel ring around them that the decoder's chroma upsampling reaches (along the subsampled
        axes). Clipped to an input of ``size`` = (height, width) when given."""
        y0, y1, x0, x1 = block_box
        my, mx = self.mcu
        box = [y0 // my * my, -(-y1 // my) * my, x0 // mx * mx, -(-x1 // mx) * mx]
        if self.footprint_mode == "exact":
            ry, rx = self.upsampling_reach
            box = [box[0] - ry, box[1] + ry, box[2] - rx, box[3] + rx]
        if size is not None:
            box = [max(0, box[0]), min(size[0], box[1]), max(0, box[2]), min(size[1], box[3])]
        return tuple(box)

    def __getstate__(self) -> dict:  # pickled for worker processes: without the cache (a weak reference)
        state = dict(self.__dict__)
        state["_clean_cache"] = None
        return state

    def _clean_uint8(self, clean: Tensor) -> np.ndarray:
        """The clean image as an (H, W, 3) uint8 array on the CPU, converted once per context tensor
        (every batch of a run reads the same one; an in-place change to it is seen by its version)."""
        cached = self._clean_cache
        if cached is not None and cached[0]() is clean and cached[1] == clean._version:
            return cached[2]
        arr = _to_hwc_uint8(clean[0])
        self._clean_cache = (weakref.ref(clean), clean._version, arr)
        return arr

    def _geometry(self, placement, k: int, origin: tuple[int, int], size: tuple[int, int]):
        """Whole-image boxes of one intervention: the block (clipped to the image), its footprint and
        the encoded region (the MCUs the block touches and one MCU of margin around them)."""
        (y0, _, x0, _), (sy, sx) = placement.dst, placement.src
        height, width = size
        my, mx = self.mcu
        by0, bx0 = origin[0] + y0 - sy, origin[1] + x0 - sx
        block = (by0, min(height, by0 + k), bx0, min(width, bx0 + k))
        mcus = (block[0] // my * my, -(-block[1] // my) * my, block[2] // mx * mx, -(-block[3] // mx) * mx)
        region = (max(0, mcus[0] - my), min(height, mcus[1] + my), max(0, mcus[2] - mx), min(width, mcus[3] + mx))
        return block, self.footprint(block, size), region

    def intervene(self, inputs, context, content, placements, noise=None):
        """Write each patch into the clean image, JPEG-encode the MCUs it touches (plus one MCU of margin)
        and write the decoded footprint into the row, clipped to the crop."""
        clean = context.get(CLEAN)
        if clean is None:
            raise TaskError(self._no_clean_message())
        oy, ox = crop_origin(context)
        ch, cw = inputs.shape[-2:]
        size = tuple(clean.shape[-2:])
        k = content.shape[-1]
        geo = [self._geometry(pl, k, (oy, ox), size) for pl in placements]
        if not geo:
            return inputs
        base = self._clean_uint8(clean)
        patches = _to_hwc_uint8(content)
        for i, (block, foot, region) in enumerate(geo):
            ry0, ry1, rx0, rx1 = region
            part = base[ry0:ry1, rx0:rx1].copy()
            by0, by1, bx0, bx1 = block
            part[by0 - ry0 : by1 - ry0, bx0 - rx0 : bx1 - rx0] = patches[i, : by1 - by0, : bx1 - bx0]
            decoded = jpeg_round_trip(part, self.quality, self.subsampling)
            # the footprint's decoded pixels, where they fall inside the crop
            wy0, wy1 = max(foot[0], oy), min(foot[1], oy + ch)
            wx0, wx1 = max(foot[2], ox), min(foot[3], ox + cw)
            if wy0 >= wy1 or wx0 >= wx1:
                continue
            tile = _to_tensor(decoded[wy0 - ry0 : wy1 - ry0, wx0 - rx0 : wx1 - rx0])
            inputs[i, :, wy0 - oy : wy1 - oy, wx0 - ox : wx1 - ox] = tile.to(inputs.device, inputs.dtype)
        return inputs

    def describe(self) -> dict:
        """Name, scale, quality, subsampling and footprint."""
        return {
            "name": self.name,
            "scale": self.scale,
            "quality": self.quality,
            "subsampling": self.subsampling,
            "footprint": self.footprint_mode,
        }


# --- reading a JPEG's settings -------------------------------------------------------------------------
@functools.cache
def _standard_tables() -> dict[tuple, int]:
    """Pillow's quantization tables at every quality 1..100 -> the lowest quality that writes them."""
    probe = np.full((16, 16, 3), 128, dtype=np.uint8)
    tables: dict[tuple, int] = {}
    for q in range(1, 101):
        buf = io.BytesIO()
        Image.fromarray(probe, "RGB").save(buf, format="JPEG", quality=q)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            key = tuple(tuple(im.quantization[i]) for i in sorted(im.quantization))
        tables.setdefault(key, q)
    return tables


def read_jpeg_settings(path: str | Path | BinaryIO) -> dict:
    """The ``quality`` and ``subsampling`` a JPEG file (a path or a binary file object) was saved
    with, as :class:`JpegTask` takes them.

    ``quality`` is found by matching the file's quantization tables with the standard (IJG) tables
    that Pillow / libjpeg write at each quality; it is None when the file uses other tables (a camera,
    Photoshop, mozjpeg), and then no quality reproduces the file exactly. ``subsampling`` is None for
    a sampling that Pillow cannot write (e.g. 4:1:1) or a grey JPEG.
    """
    with Image.open(path) as im:
        if im.format != "JPEG":
            raise TaskError(f"jpeg: {path} is a {im.format} file, not a JPEG")
        key = tuple(tuple(im.quantization[i]) for i in sorted(im.quantization))
        sampling = get_sampling(im)
    return {"quality": _standard_tables().get(key), "subsampling": _BY_NUMBER.get(sampling)}
