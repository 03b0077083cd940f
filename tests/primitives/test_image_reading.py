"""Every bit depth is read exactly, then reduced to 8-bit RGB with a note, or refused with the fix.

The files are written here with pypng, tifffile and PIL, so that the stored values are known
exactly; the sizes are odd and non-square so that a resize or a transpose would show.
"""

from __future__ import annotations

import warnings

import numpy as np
import png
import pytest
import tifffile
import torch
from PIL import Image

from cem_lab.image_decoding import ImageError
from cem_lab.images import load_image, read_image

H, W = 23, 37


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _write_png16(path, arr: np.ndarray, mode: str) -> None:
    """arr: (H, W) or (H, W, planes) uint16; mode: pypng's "L;16", "LA;16", "RGB;16", "RGBA;16"."""
    png.from_array(arr.reshape(arr.shape[0], -1), mode).save(str(path))


def _round257(v: np.ndarray) -> np.ndarray:
    return np.round(v / 257).astype(np.uint8)


# --- 16-bit PNG ----------------------------------------------------------------------------------


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    v = np.clip(_rng().normal(101 * 257, 20 * 257, (H, W)), 0, 65535).astype(np.uint16)
    f = tmp_path / "grey16.png"
    _write_png16(f, v, "L;16")
    arr, notes = read_image(f)
    assert arr.shape == (H, W, 3) and arr.dtype == np.uint8
    assert abs(arr.mean() - 101) < 1  # convert("RGB") clipped it at 255: mean ~230
    np.testing.assert_array_equal(arr[..., 0], _round257(v))
    assert (arr[..., 0] == arr[..., 2]).all()
    assert any("16-bit grey image scaled to 8 bits (value / 257, rounded" in n for n in notes)
    assert any("grey" in n and "converted to RGB" in n for n in notes)
    assert all(n.startswith(f"{f}: ") for n in notes)


def test_16bit_rgb_png_reads_every_channel_exactly(tmp_path):
    rng = _rng(1)
    v = np.dstack(
        [rng.integers(0, 65536, (H, W)), rng.integers(0, 20000, (H, W)), rng.integers(40000, 65536, (H, W))]
    ).astype(np.uint16)
    f = tmp_path / "rgb16.png"
    _write_png16(f, v, "RGB;16")
    arr, notes = read_image(f, name="img.png")
    assert arr.shape == (H, W, 3)
    np.testing.assert_array_equal(arr, _round257(v))  # Pillow keeps the high byte: v // 256
    assert notes == [
        "img.png: 16-bit RGB image scaled to 8 bits (value / 257, rounded; the pipeline "
        "computes on 8-bit values, largest change 0.5/255)"
    ]


def test_16bit_png_of_multiples_of_257_is_lossless(tmp_path):
    levels = _rng(2).integers(0, 256, (H, W, 3)).astype(np.uint16)
    f = tmp_path / "exact16.png"
    _write_png16(f, levels * 257, "RGB;16")
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, levels)
    assert len(notes) == 1 and "lossless" in notes[0] and "16-bit RGB" in notes[0]


def test_16bit_rgba_and_grey_alpha_png_drop_alpha_with_a_note(tmp_path):
    rng = _rng(3)
    v = rng.integers(0, 65536, (H, W, 4)).astype(np.uint16)
    v[..., 3] = 65535
    f = tmp_path / "rgba16.png"
    _write_png16(f, v, "RGBA;16")
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, _round257(v[..., :3]))
    assert any("RGBA" in n and "alpha channel dropped" in n and "fully opaque" in n for n in notes)

    la = rng.integers(0, 65536, (H, W, 2)).astype(np.uint16)
    f = tmp_path / "la16.png"
    _write_png16(f, la, "LA;16")
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, np.repeat(_round257(la[..., :1]), 3, axis=2))
    assert any("grey" in n and "converted to RGB" in n and "alpha channel dropped" in n for n in notes)


def test_pil_image_of_a_16bit_png_is_read_from_its_file(tmp_path):
    v = _rng(4).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    f = tmp_path / "rgb16.png"
    _write_png16(f, v, "RGB;16")
    with Image.open(f) as im:  # not loaded yet: Pillow has not truncated anything
        arr, notes = read_image(im)
    np.testing.assert_array_equal(arr, _round257(v))
    assert any("16-bit RGB" in n for n in notes)


# --- Pillow modes --------------------------------------------------------------------------------


def test_pil_16bit_grey_image_is_scaled(tmp_path):
    v = _rng(5).integers(0, 65536, (H, W)).astype(np.uint16)
    im = Image.fromarray(v)
    assert im.mode.startswith("I;16")
    arr, notes = read_image(im)
    np.testing.assert_array_equal(arr[..., 1], _round257(v))
    assert any("16-bit grey" in n for n in notes)


def test_32bit_integer_image_is_refused_with_its_range():
    im = Image.fromarray(np.full((H, W), 70000, dtype=np.int32))
    with pytest.raises(ImageError, match=r"32-bit integer image with values in \[70000, 70000\].*16-bit PNG"):
        read_image(im)


def test_palette_png_equals_its_rgb_expansion(tmp_path):
    rng = _rng(6)
    palette = rng.integers(0, 256, (16, 3)).astype(np.uint8)
    idx = rng.integers(0, 16, (H, W)).astype(np.uint8)
    im = Image.frombytes("P", (W, H), idx.tobytes())
    im.putpalette(palette.ravel().tolist())
    f = tmp_path / "palette.png"
    im.save(f)
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, palette[idx])
    assert notes == [f"{f}: palette image expanded to RGB (each index replaced by its palette colour)"]

    f = tmp_path / "palette_t.png"
    im.save(f, transparency=3)
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, palette[idx])
    assert any("transparency dropped" in n for n in notes)


def test_bilevel_and_grey_alpha_pngs(tmp_path):
    bits = _rng(7).random((H, W)) > 0.5
    f = tmp_path / "bilevel.png"
    Image.fromarray(bits).save(f)
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr[..., 0], bits.astype(np.uint8) * 255)
    assert any("0 and 255" in n for n in notes) and any("grey" in n for n in notes)

    la = _rng(8).integers(0, 256, (H, W, 2)).astype(np.uint8)
    f = tmp_path / "la.png"
    Image.frombytes("LA", (W, H), la.tobytes()).save(f)
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, np.repeat(la[..., :1], 3, axis=2))
    assert any("grey+alpha" in n and "converted to RGB" in n and "alpha channel dropped" in n for n in notes)


def test_cmyk_is_converted_with_an_approximate_note():
    im = Image.new("CMYK", (W, H), (0, 255, 255, 0))
    arr, notes = read_image(im, name="print.jpg")
    assert arr.shape == (H, W, 3) and tuple(arr[0, 0]) == (255, 0, 0)
    assert len(notes) == 1 and notes[0].startswith("print.jpg: CMYK") and "approximate" in notes[0]


def test_8bit_rgb_png_gives_no_notes_and_keeps_its_size(tmp_path):
    v = _rng(9).integers(0, 256, (H, W, 3)).astype(np.uint8)
    f = tmp_path / "rgb8.png"
    Image.fromarray(v).save(f)
    arr, notes = read_image(f)
    assert notes == []
    np.testing.assert_array_equal(arr, v)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_image(f), v)


# --- TIFF ----------------------------------------------------------------------------------------


def test_float32_tiff_in_unit_range_is_rounded(tmp_path):
    v = _rng(10).random((H, W, 3)).astype(np.float32)
    f = tmp_path / "float.tif"
    tifffile.imwrite(f, v)
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, np.round(v * 255).astype(np.uint8))
    assert any("float32 RGB image in [0, 1] rounded to 8 bits" in n for n in notes)

    grey = _rng(11).random((H, W)).astype(np.float64)
    f = tmp_path / "float_grey.tif"
    tifffile.imwrite(f, grey)
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr[..., 2], np.round(grey * 255).astype(np.uint8))


@pytest.mark.parametrize("shape", [(H, W), (H, W, 3)])
def test_float_tiff_outside_unit_range_is_refused(tmp_path, shape):
    v = (_rng(12).random(shape) * 4 - 1).astype(np.float32)
    v.flat[0], v.flat[1] = -1.5, 3.25
    f = tmp_path / "hdr.tif"
    tifffile.imwrite(f, v)
    with pytest.raises(ImageError, match=r"\[0, 1\].*got \[-1\.5, 3\.25\].*rescale it"):
        read_image(f)


def test_planar_16bit_tiff(tmp_path):
    v = _rng(13).integers(0, 65536, (3, H, W)).astype(np.uint16)
    f = tmp_path / "planar.tif"
    tifffile.imwrite(f, v, photometric="rgb", planarconfig="separate")
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, _round257(v.transpose(1, 2, 0)))
    assert any("16-bit RGB" in n for n in notes)


def test_16bit_grey_and_8bit_tiffs(tmp_path):
    v = _rng(14).integers(0, 65536, (H, W)).astype(np.uint16)
    f = tmp_path / "grey16.tif"
    tifffile.imwrite(f, v)
    arr, _ = read_image(f)
    np.testing.assert_array_equal(arr[..., 0], _round257(v))

    rgb = _rng(15).integers(0, 256, (H, W, 3)).astype(np.uint8)
    f = tmp_path / "rgb8.tif"
    tifffile.imwrite(f, rgb)
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, rgb)
    assert notes == []


def test_multipage_tiff_reads_the_first_page_with_a_note(tmp_path):
    pages = _rng(16).integers(0, 256, (4, H, W, 3)).astype(np.uint8)
    f = tmp_path / "stack.tif"
    tifffile.imwrite(f, pages)
    arr, notes = read_image(f)
    np.testing.assert_array_equal(arr, pages[0])
    assert any("4 pages" in n and "first page" in n for n in notes)


def test_unsupported_tiff_sample_type_is_refused(tmp_path):
    f = tmp_path / "signed.tif"
    tifffile.imwrite(f, np.zeros((H, W), dtype=np.int16))
    with pytest.raises(ImageError, match="int16.*8- or 16-bit"):
        read_image(f)


# --- arrays and tensors --------------------------------------------------------------------------


def test_numpy_arrays():
    v = _rng(17).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    arr, notes = read_image(v, name="arr")
    np.testing.assert_array_equal(arr, _round257(v))
    assert notes[0].startswith("arr: 16-bit RGB image scaled to 8 bits")

    b = _rng(18).random((H, W)) > 0.5
    arr, notes = read_image(b)
    np.testing.assert_array_equal(arr[..., 1], b * 255)
    assert any("0 and 255" in n for n in notes)

    levels = _rng(19).integers(0, 256, (H, W, 3))
    arr, notes = read_image((levels / 255).astype(np.float32))  # already on the 1/255 grid
    np.testing.assert_array_equal(arr, levels)
    assert notes == []
    off = _rng(20).random((H, W, 3))
    arr, notes = read_image(off)
    np.testing.assert_array_equal(arr, np.round(off * 255).astype(np.uint8))
    assert len(notes) == 1 and "rounded to 8 bits" in notes[0]

    with pytest.raises(ImageError, match="int32.*astype"):
        read_image(np.zeros((H, W, 3), dtype=np.int32))
    with pytest.raises(ImageError, match=r"got \[0, 200\].*divide by 255"):
        read_image(np.linspace(0, 200, H * W * 3).reshape(H, W, 3))


def test_tensors_note_grey_and_rgba():
    grey = torch.rand(1, H, W)
    arr, notes = read_image(grey)
    assert arr.shape == (H, W, 3) and any("converted to RGB" in n for n in notes)
    rgba = torch.ones(4, H, W)
    arr, notes = read_image(rgba)
    assert arr.shape == (H, W, 3) and (arr == 255).all()
    assert any("RGBA" in n and "alpha channel dropped" in n for n in notes)
    with pytest.raises(ImageError, match=r"\[0, 255\]"):
        read_image(torch.full((3, H, W), 300, dtype=torch.int64))


# --- load_image and broken files -----------------------------------------------------------------


def test_load_image_warns_with_the_notes(tmp_path):
    v = _rng(21).integers(0, 65536, (H, W)).astype(np.uint16)
    f = tmp_path / "grey16.png"
    _write_png16(f, v, "L;16")
    _, notes = read_image(f)
    with pytest.warns(UserWarning) as record:
        arr = load_image(f)
    assert [str(w.message) for w in record] == notes and len(notes) == 2
    assert all(w.filename == __file__ for w in record)  # stacklevel points at the caller
    np.testing.assert_array_equal(arr[..., 0], _round257(v))


@pytest.mark.parametrize("kind", ["png8", "png16", "tiff"])
def test_truncated_file_raises_image_error(tmp_path, kind):
    v = _rng(22).integers(0, 256, (H, W, 3)).astype(np.uint8)
    f = tmp_path / ("cut.tif" if kind == "tiff" else "cut.png")
    if kind == "png8":
        Image.fromarray(v).save(f)
    elif kind == "png16":
        _write_png16(f, v.astype(np.uint16) * 300, "RGB;16")
    else:
        tifffile.imwrite(f, v)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3] if kind != "tiff" else data[:16])
    with pytest.raises(ImageError, match=r"cannot read image .*cut\..*valid PNG/JPEG/BMP/TIFF"):
        read_image(f)
