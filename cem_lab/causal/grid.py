"""The block grid on the model input and the region of interest on the output."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cem_lab.errors import CemLabError


class GeometryError(CemLabError, ValueError):
    """An ROI or block size that does not fit the image."""


@dataclass(frozen=True)
class Roi:
    """Region of interest in *output* pixels: top row, left column, side length."""

    top: int
    left: int
    size: int

    @classmethod
    def parse(cls, value) -> Roi:
        """A ROI from a Roi, a ``{"top", "left", "size"}`` dict or a (top, left, size) sequence (output pixels);
        raises :class:`GeometryError` for anything else."""
        if isinstance(value, Roi):
            return value
        if isinstance(value, dict):
            return cls(int(value["top"]), int(value["left"]), int(value["size"]))
        try:
            top, left, size = (int(v) for v in value)
        except (TypeError, ValueError) as err:
            raise GeometryError(f"ROI must be (top row, left column, size) in output pixels, got {value!r}") from err
        return cls(top, left, size)

    def as_list(self) -> list[int]:
        """``[top, left, size]``."""
        return [self.top, self.left, self.size]

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) in output pixels."""
        return self.top, self.top + self.size, self.left, self.left + self.size

    def validate(self, out_h: int, out_w: int, scale: int) -> None:
        """Raise :class:`GeometryError` unless the ROI lies inside an ``out_h`` x ``out_w`` output and its top,
        left and size are multiples of ``scale``."""
        if self.size <= 0:
            raise GeometryError(f"ROI size must be positive, got {self.size}")
        if self.top < 0 or self.left < 0 or self.top + self.size > out_h or self.left + self.size > out_w:
            if self.size > out_h or self.size > out_w:
                raise GeometryError(
                    f"ROI of size {self.size} does not fit the {out_h}x{out_w} output image; "
                    f"use a smaller roi size or a larger image"
                )
            raise GeometryError(
                f"ROI (top {self.top}, left {self.left}, size {self.size}) lies outside the "
                f"{out_h}x{out_w} output image; top must be in [0, {out_h - self.size}] and left in "
                f"[0, {out_w - self.size}]"
            )
        if scale > 1 and (self.top % scale or self.left % scale or self.size % scale):
            raise GeometryError(
                f"ROI (top {self.top}, left {self.left}, size {self.size}) is not aligned to the scale "
                f"x{scale}: all three must be multiples of {scale}"
            )


def block_distances(grid_shape: tuple[int, int], block: int, output_shape: tuple[int, int], roi: Roi) -> np.ndarray:
    """(rows, cols) distances in output pixels from each block's centre (a partial edge block: the centre of what
    it covers) to the centre of ``roi``."""
    rows, cols = grid_shape
    h, w = output_shape
    cy = (np.arange(rows) * block + np.minimum((np.arange(rows) + 1) * block, h)) / 2
    cx = (np.arange(cols) * block + np.minimum((np.arange(cols) + 1) * block, w)) / 2
    return np.hypot(cy[:, None] - (roi.top + roi.size / 2), cx[None, :] - (roi.left + roi.size / 2))


@dataclass(frozen=True)
class BlockGrid:
    """Square blocks of ``block`` output pixels (``block // scale`` input pixels).

    Edge blocks are partial when the block does not divide the image (the patch is cropped
    to fit, as in the reference). Blocks are numbered row-major.
    """

    input_h: int
    input_w: int
    scale: int
    block: int

    def __post_init__(self):
        if self.block <= 0:
            raise GeometryError(f"block size must be positive, got {self.block}")
        if self.block % self.scale:
            raise GeometryError(
                f"block size {self.block} (output pixels) is not divisible by the scale x{self.scale}; "
                f"use a multiple of {self.scale}, e.g. {self.scale * max(1, round(self.block / self.scale))}"
            )
        if self.block_in > self.input_h or self.block_in > self.input_w:
            raise GeometryError(
                f"block of {self.block} output pixels is larger than the image "
                f"({self.input_h * self.scale}x{self.input_w * self.scale} output pixels); use a smaller cem.block"
            )

    @property
    def block_in(self) -> int:
        """Block side in input pixels."""
        return self.block // self.scale

    @property
    def rows(self) -> int:
        """Block rows; the last may be partial."""
        return math.ceil(self.input_h / self.block_in)

    @property
    def cols(self) -> int:
        """Block columns; the last may be partial."""
        return math.ceil(self.input_w / self.block_in)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.rows, self.cols

    def __len__(self) -> int:
        return self.rows * self.cols

    def partial_note(self) -> str | None:
        """One line on the partial blocks when the block does not divide the image (None when it does):
        how many there are and their sizes, in output pixels."""
        rest_h, rest_w = self.input_h % self.block_in, self.input_w % self.block_in
        if not rest_h and not rest_w:
            return None
        b, s = self.block, self.scale
        sizes = []
        if rest_h:
            sizes.append(f"the last row {rest_h * s}x{b} px")
        if rest_w:
            sizes.append(f"the last column {b}x{rest_w * s} px")
        if rest_h and rest_w:
            sizes.append(f"the corner {rest_h * s}x{rest_w * s} px")
        partial = (self.cols if rest_h else 0) + (self.rows if rest_w else 0) - (1 if rest_h and rest_w else 0)
        return (
            f"cem.block={b} does not divide the {self.input_h * s}x{self.input_w * s} output: {partial} of the "
            f"{len(self)} blocks are partial ({', '.join(sizes)}, height x width in output pixels; their patches are "
            f"cut to fit); a block size that divides the image avoids them"
        )

    def box(self, index: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of block ``index`` in input pixels, clipped to the image."""
        r, c = divmod(int(index), self.cols)
        b = self.block_in
        return r * b, min((r + 1) * b, self.input_h), c * b, min((c + 1) * b, self.input_w)

    def roi_mask(self, roi: Roi) -> np.ndarray:
        """Blocks whose output extent intersects the ROI."""
        y0, y1, x0, x1 = roi.box
        r0, r1 = y0 // self.block, (y1 - 1) // self.block
        c0, c1 = x0 // self.block, (x1 - 1) // self.block
        mask = np.zeros(self.shape, dtype=bool)
        mask[r0 : r1 + 1, c0 : c1 + 1] = True
        return mask

    def blocks_touching(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Flat indices of the blocks that intersect an input-pixel box (y0, y1, x0, x1)."""
        y0, y1, x0, x1 = box
        b = self.block_in
        rows = np.arange(y0 // b, (y1 - 1) // b + 1)
        cols = np.arange(x0 // b, (x1 - 1) // b + 1)
        return (rows[:, None] * self.cols + cols[None, :]).ravel()
