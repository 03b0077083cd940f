"""Decoding image files and arrays to 8-bit RGB: the exact stored values first, then one reduction.

Every reader here produces the exact stored values first (uint8, uint16, bool or float, with the
channels last), and only then converts to 8-bit RGB in one place (:func:`to_rgb8`), so that each change
to the user's data is made once, on known values, and is described by one note. Pillow is not
trusted with anything above 8 bits: it clips 16-bit grey at 255 on convert("RGB"), keeps only the
high byte of 16-bit colour PNGs (it opens them as mode "RGB") and cannot open float colour TIFFs.
16-bit PNGs are read with pypng, TIFFs with tifffile, everything else with Pillow. The entry points
are :func:`cem_lab.images.read_image` and :func:`cem_lab.images.load_image`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cem_lab.errors import CemLabError


class ImageError(CemLabError, ValueError):
    """An image that cem_lab cannot use as given."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
READ_FIX = "is it a valid PNG/JPEG/BMP/TIFF file?"
# Pillow modes whose conversion to RGB is a colour transform, not a copy of stored values
_APPROXIMATE_MODES = ("CMYK", "YCbCr", "LAB", "HSV")


def read_file(path: Path, name: str, notes: list[str]) -> np.ndarray:
    """Pick the reader from the file's first bytes (not its suffix, which can lie)."""
    try:
        with path.open("rb") as f:
            head = f.read(32)
        header = _png_header(head)
        if header is not None and header[2] == 16:
            return _read_png16(path, name, notes)
        if head[:4] in _TIFF_MAGICS:
            arr = _read_tiff(path, name, notes)
            if arr is not None:
                return arr
        with Image.open(path) as im:
            return from_pil(im, name, notes)
    except ImageError:
        raise
    except Exception as err:  # PIL, pypng and tifffile raise many types for corrupt files
        raise ImageError(f"cannot read image {path}: {err}; {READ_FIX}") from err


def _png_header(head: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk, or None if not a PNG."""
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), head[24], head[25]


def _read_png16(path: Path, name: str, notes: list[str]) -> np.ndarray:
    """A 16-bit PNG (grey, grey+alpha, RGB, RGBA), read exactly with pypng.

    ``Reader.read()`` rather than ``asDirect()``: a 16-bit PNG has no palette, and asDirect would
    shift the values down to the bit depth of an sBIT chunk, losing the stored values. A tRNS
    transparent colour is the only thing read() leaves out; it is dropped with a note.
    """
    import png  # lazy: pypng, only for PNG files

    with path.open("rb") as f:  # file= (not filename=) so that the file is closed when done
        reader = png.Reader(file=f)
        width, height, rows, info = reader.read()
        arr = np.array([np.asarray(row, dtype=np.uint16) for row in rows], dtype=np.uint16)
    arr = arr.reshape(height, width, info["planes"])
    if info["planes"] == 1:
        arr = arr[..., 0]
    if info.get("transparent") is not None:
        notes.append(f"{name}: transparent colour (PNG tRNS chunk) dropped; those pixels keep their stored colour")
    return to_rgb8(arr, name, notes, source="file", bits=info["bitdepth"])


def _read_tiff(path: Path, name: str, notes: list[str]) -> np.ndarray | None:
    """A TIFF, read exactly with tifffile; None leaves colour models other than grey/RGB to Pillow.

    tifffile reads every sample type (uint16, float32, planar (3, H, W) storage, 12-bit, ...)
    exactly, where Pillow cannot open float colour TIFFs and truncates 16-bit colour to 8 bits.
    It returns the stored values as they are, so min-is-white grey is inverted here.
    """
    import tifffile  # lazy: tifffile, only for TIFF files

    with tifffile.TiffFile(path) as tif:
        n_pages = len(tif.pages)
        page = tif.pages[0]
        photometric = -1 if page.photometric is None else int(page.photometric)
        if photometric not in (0, 1, 2):  # MINISWHITE, MINISBLACK, RGB: palette, CMYK, ... to Pillow
            return None
        if n_pages == 1 and tif.series:
            series = tif.series[0]
            arr, axes = series.asarray(), series.axes
        else:  # read the first page only, not the whole stack
            arr, axes = page.asarray(), page.axes
        bits = int(page.bitspersample)
    if n_pages > 1:
        notes.append(f"{name}: multi-page TIFF ({n_pages} pages): only the first page is read")
    arr = _tiff_to_yxs(np.asarray(arr), axes, name, notes)
    if photometric == 0 and arr.ndim == 2:  # min-is-white: 0 is white
        if arr.dtype == bool:
            arr = ~arr
        elif arr.dtype.kind == "u":
            arr = ((1 << bits) - 1 - arr.astype(np.int64)).astype(arr.dtype)
        else:
            return None
    return to_rgb8(arr, name, notes, source="file", bits=bits)


def _tiff_to_yxs(arr: np.ndarray, axes: str, name: str, notes: list[str]) -> np.ndarray:
    """Reorder tifffile's axes (e.g. "SYX" for planar storage) to (H, W) or (H, W, samples)."""
    if "Y" not in axes or "X" not in axes or len(axes) != arr.ndim:
        raise ImageError(
            f"{name}: TIFF with axes {axes!r} and shape {arr.shape} holds no 2-D image; "
            "save the picture as a plain RGB or grey TIFF or PNG"
        )
    extra = [(a, n) for a, n in zip(axes, arr.shape) if a not in "YXS"]
    if any(n > 1 for _, n in extra):
        planes = ", ".join(f"{a}={n}" for a, n in extra)
        notes.append(f"{name}: TIFF image has more than one plane ({planes}): only the first is read")
    arr = arr[tuple(slice(None) if a in "YXS" else 0 for a in axes)]
    axes = "".join(a for a in axes if a in "YXS")
    arr = arr.transpose([axes.index(a) for a in "YXS" if a in axes])
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return arr


def _tile_rawmodes(im: Image.Image) -> list[str]:
    """The raw modes Pillow will decode from; empty once the image is loaded."""
    modes = []
    for tile in getattr(im, "tile", None) or []:
        args = tile[3]
        if isinstance(args, tuple) and args and isinstance(args[0], str):
            args = args[0]
        if isinstance(args, str):
            modes.append(args)
    return modes


def _pil_source(im: Image.Image) -> Path | None:
    filename = getattr(im, "filename", None)
    return Path(filename) if filename and Path(filename).is_file() else None


def from_pil(im: Image.Image, name: str, notes: list[str]) -> np.ndarray:
    """A PIL image, by mode: exact values through to_rgb8, colour transforms with a note."""
    mode = im.mode
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"{name}: image holds {frames} frames: only the first is read")
    if mode in ("RGB", "RGBA") and any(";16" in r for r in _tile_rawmodes(im)):
        # a 16-bit colour image that Pillow would truncate: read the file exactly if we can
        source = _pil_source(im)
        if source is not None and im.format == "PNG":
            return _read_png16(source, name, notes)
        if source is not None and im.format == "TIFF":
            arr = _read_tiff(source, name, notes)
            if arr is not None:
                return arr
        raise ImageError(
            f"{name}: 16-bit colour {im.format or ''} image: Pillow would keep only the high "
            "byte of each value; save it as a 16-bit PNG or TIFF and give its path"
        )
    if mode in ("RGB", "RGBA") and not _tile_rawmodes(im):
        _note_pillow_truncated_16bit(im, name, notes)
    if mode.startswith("I;16"):
        arr = np.asarray(im)
        if arr.dtype.kind != "u":
            raise ImageError(
                f"{name}: signed 16-bit image (mode {mode}) is not supported; save it as 8- or 16-bit unsigned PNG"
            )
        return to_rgb8(arr.astype(np.uint16), name, notes, source="file", bits=16)
    if mode == "I":
        arr = np.asarray(im)
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        # Pillow opens 16-bit PNG / PGM grey as mode I: it is 16-bit data in a 32-bit mode
        if im.format in ("PNG", "PPM") and lo >= 0 and hi <= 65535:
            return to_rgb8(arr.astype(np.uint16), name, notes, source="file", bits=16)
        raise ImageError(f"{name}: 32-bit integer image with values in [{lo}, {hi}]: save it as 8- or 16-bit PNG")
    if mode == "F":
        return to_rgb8(np.asarray(im), name, notes, source="file")
    if mode in ("1", "L", "LA", "RGB", "RGBA"):
        _note_ppm_maxval(im, name, notes)
        im.load()
        return to_rgb8(np.asarray(im), name, notes, source="file")
    if mode == "RGBX":  # X is padding, not data
        return np.ascontiguousarray(np.asarray(im)[..., :3])
    if mode in ("P", "PA"):
        return _expand_palette(im, name, notes)
    why = "no colour management, so colours can differ slightly from other software"
    if mode not in _APPROXIMATE_MODES:
        why = "Pillow's generic conversion of this mode"
    try:
        arr = np.asarray(im.convert("RGB"))
    except ValueError as err:
        raise ImageError(
            f"{name}: cannot convert a {mode} image to RGB ({err}); save it as an RGB or grey PNG"
        ) from err
    notes.append(f"{name}: {mode} image converted to RGB with Pillow; the conversion is approximate ({why})")
    return np.ascontiguousarray(arr)


def _expand_palette(im: Image.Image, name: str, notes: list[str]) -> np.ndarray:
    """P / PA: each index replaced by its palette colour (exact); any transparency dropped."""
    palette = getattr(im, "palette", None)
    transparent = "transparency" in im.info or getattr(palette, "mode", "RGB") == "RGBA"
    arr = np.asarray(im.convert("RGB"))
    notes.append(f"{name}: palette image expanded to RGB (each index replaced by its palette colour)")
    if im.mode == "PA":
        notes.append(f"{name}: alpha channel of the palette image dropped")
    elif transparent:
        notes.append(f"{name}: palette transparency dropped; transparent pixels keep their palette colour")
    return np.ascontiguousarray(arr)


def _note_ppm_maxval(im: Image.Image, name: str, notes: list[str]) -> None:
    """Pillow itself rescales PPM/PGM files whose maximum value is not 255 (rounding)."""
    for tile in getattr(im, "tile", None) or []:
        args = tile[3]
        if tile[0] == "ppm" and isinstance(args, tuple) and len(args) > 1 and args[1] != 255:
            notes.append(
                f"{name}: PPM/PGM image with maximum value {args[1]} scaled to 8 bits "
                f"(value * 255 / {args[1]}, rounded)"
            )
            return


def _note_pillow_truncated_16bit(im: Image.Image, name: str, notes: list[str]) -> None:
    """A PIL image already decoded from a 16-bit PNG holds only the high byte of each value."""
    source = _pil_source(im)
    if source is None or im.format != "PNG":
        return
    try:
        with source.open("rb") as f:
            header = _png_header(f.read(32))
    except OSError:
        return
    if header is not None and header[2] == 16 and (header[0], header[1]) == im.size:
        notes.append(
            f"{name}: Pillow decoded this 16-bit PNG keeping only the high byte of each value "
            f"(up to 1/255 below rounding); give the path {source} to have it read exactly"
        )


_LAYOUTS = {1: "one-channel", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}


def to_rgb8(arr: np.ndarray, name: str, notes: list[str], source: str = "array", bits: int | None = None) -> np.ndarray:
    """Stored values -> (H, W, 3) uint8 RGB, one note per change; the one place where data changes.

    ``source="file"``: a decoded file (grey+alpha allowed, a float file is always noted);
    ``"array"``: a numpy array or tensor (floats already on the 1/255 grid are not noted).
    ``bits``: the significant bits of integer samples (12-bit TIFFs arrive as uint16).
    """
    if arr.ndim == 2:
        layout = "grey"
    elif arr.ndim == 3 and arr.shape[2] in _LAYOUTS and (arr.shape[2] != 2 or source == "file"):
        layout = _LAYOUTS[arr.shape[2]]
    else:
        raise ImageError(f"{name}: expected an H x W x 3 RGB image, got shape {arr.shape}")
    alpha = arr[..., -1] if layout in ("grey+alpha", "RGBA") else None
    colour = arr[..., :-1] if alpha is not None else arr
    if layout == "grey+alpha":
        colour = colour[..., 0]
    colour = _to_8bit(colour, layout, name, notes, source, bits)
    if colour.ndim == 2:
        what = "grey" if layout in ("grey", "grey+alpha") else layout
        if alpha is not None:
            notes.append(
                f"{name}: grey+alpha image converted to RGB (grey channel replicated, "
                f"alpha channel dropped{_opacity(alpha)})"
            )
        else:
            notes.append(f"{name}: {what} image converted to RGB (channel replicated)")
        colour = np.repeat(colour[..., None], 3, axis=2)
    elif colour.shape[2] == 1:
        notes.append(f"{name}: one-channel image converted to RGB (channel replicated)")
        colour = np.repeat(colour, 3, axis=2)
    elif alpha is not None:
        notes.append(f"{name}: RGBA image converted to RGB (alpha channel dropped{_opacity(alpha)})")
    return np.ascontiguousarray(colour)


def _opacity(alpha: np.ndarray) -> str:
    """'; it was fully opaque' or how many pixels were not, so the user can judge the drop."""
    full = 1 if alpha.dtype == bool or alpha.dtype.kind == "f" else np.iinfo(alpha.dtype).max
    see_through = float(np.mean(alpha < full)) if alpha.size else 0.0
    if see_through == 0:
        return "; it was fully opaque"
    return (
        f"; {100 * see_through:.3g}% of the pixels were not fully opaque and keep their stored "
        "colour, not composited on a background"
    )


def _to_8bit(v: np.ndarray, layout: str, name: str, notes: list[str], source: str, bits: int | None) -> np.ndarray:
    """Colour samples of any supported type -> uint8, rounding to nearest, with a note if changed."""
    what = "grey" if layout == "grey+alpha" else layout
    if v.dtype == np.uint8 and (bits is None or bits >= 8):
        return v
    if v.dtype == bool or (bits == 1 and v.dtype.kind == "u"):
        notes.append(f"{name}: black-and-white (1-bit) image mapped to 0 and 255")
        return (v != 0).astype(np.uint8) * 255
    if v.dtype.kind == "u" and v.dtype.itemsize <= 2:
        return _scale_integers(v, bits or 8 * v.dtype.itemsize, what, name, notes)
    if v.dtype.kind == "f":
        return _round_floats(v, what, name, notes, source)
    if source == "file":
        raise ImageError(
            f"{name}: {v.dtype} samples are not supported; save the image as 8- or 16-bit "
            "PNG or TIFF (or as a float TIFF with values in [0, 1])"
        )
    raise ImageError(
        f"{name}: expected a uint8 image (or uint16, or floats in [0, 1]), got dtype {v.dtype}; "
        "convert it with np.clip(img, 0, 255).astype(np.uint8)"
    )


def _scale_integers(v: np.ndarray, bits: int, what: str, name: str, notes: list[str]) -> np.ndarray:
    """n-bit integers -> 8 bits by value * 255 / (2**n - 1), rounded (value / 257 for 16 bits).

    Rounding, not Pillow's high byte: round(v / 257) is the nearest 8-bit level, so no value
    moves by more than 0.5/255. Ties cannot occur (2**n - 1 is odd).
    """
    maxval = (1 << bits) - 1
    scaled = v / (maxval / 255)  # maxval / 255 is exactly 257.0 for 16 bits
    out = np.round(scaled)
    change = float(np.abs(scaled - out).max()) if v.size else 0.0
    formula = "value / 257" if bits == 16 else f"value * 255 / {maxval}"
    if change == 0:
        multiple = "257" if bits == 16 else f"{maxval}/255"
        notes.append(
            f"{name}: {bits}-bit {what} image scaled to 8 bits losslessly "
            f"({formula}; every value is a multiple of {multiple})"
        )
    else:
        notes.append(
            f"{name}: {bits}-bit {what} image scaled to 8 bits ({formula}, rounded; the pipeline "
            f"computes on 8-bit values, largest change {change:.2g}/255)"
        )
    return np.clip(out, 0, 255).astype(np.uint8)


def _round_floats(v: np.ndarray, what: str, name: str, notes: list[str], source: str) -> np.ndarray:
    """Floats in [0, 1] -> round(value * 255); anything else is refused with the range seen."""
    v = v.astype(np.promote_types(v.dtype, np.float32), copy=False)
    if v.size and not np.isfinite(v).all():
        raise ImageError(
            f"{name}: {v.dtype} image holds NaN or infinite values; replace them "
            "(e.g. np.nan_to_num) and scale to [0, 1]"
        )
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo < 0 or hi > 1:
        if source == "file":
            fix = "rescale it to [0, 1], or save it as an 8- or 16-bit PNG or TIFF"
        elif lo >= 0 and hi <= 255:
            fix = "divide by 255 first"
        else:
            fix = "rescale it to [0, 1] first"
        raise ImageError(
            f"{name}: {v.dtype} image values must lie in [0, 1] to be read as an image "
            f"(got [{lo:.6g}, {hi:.6g}]); {fix}"
        )
    scaled = v * 255
    out = np.round(scaled)
    change = float(np.abs(scaled - out).max()) if v.size else 0.0
    if change > 1e-3:
        notes.append(
            f"{name}: {v.dtype} {what} image in [0, 1] rounded to 8 bits (round(value * 255); "
            f"the pipeline computes on 8-bit values, largest change {change:.2g}/255)"
        )
    elif source == "file":
        notes.append(
            f"{name}: {v.dtype} {what} image read as 8-bit values losslessly (every value is a multiple of 1/255)"
        )
    return out.astype(np.uint8)
