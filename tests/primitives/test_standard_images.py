"""Standard test images that install offline (cem_lab.standard_images, conf/dataset/standard.yaml)."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from cem_lab.standard_images import (
    IMAGE_POOLS,
    STANDARD_IMAGES,
    DatasetError,
    image_pool,
    list_standard_images,
    standard_image,
    standard_image_path,
)

HAS_SPORCO = importlib.util.find_spec("sporco") is not None
needs_sporco = pytest.mark.skipif(
    not HAS_SPORCO, reason="sporco is not installed (pip install sporco): its five bundled images cannot be checked"
)


HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_sklearn = pytest.mark.skipif(
    not HAS_SKLEARN,
    reason="scikit-learn is not installed (pip install scikit-learn): its two sample photographs cannot be checked",
)


HAS_PYWT = importlib.util.find_spec("pywt") is not None
needs_pywt = pytest.mark.skipif(
    not HAS_PYWT, reason="PyWavelets is not installed (pip install PyWavelets): its ascent picture cannot be checked"
)
_NEEDS = {"sporco": needs_sporco, "scikit-learn": needs_sklearn, "PyWavelets": needs_pywt}


def _param(name):
    mark = _NEEDS.get(STANDARD_IMAGES[name].package)
    return pytest.param(name, marks=[mark] if mark else [], id=name)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Pictures stored as arrays are written to this module's own cache, not the user's."""
    monkeypatch.setenv("CEM_LAB_CACHE", str(tmp_path_factory.getbasetemp() / "cem_lab_cache"))


@pytest.mark.parametrize("name", [_param(n) for n in STANDARD_IMAGES])
def test_every_catalogued_image_loads_with_its_stated_size(name):
    entry = STANDARD_IMAGES[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr = standard_image(name)
    assert arr.dtype == np.uint8 and arr.shape == (*entry.size, 3)
    notes = [str(w.message) for w in caught]
    if entry.mode == "L":  # grey: replicated to RGB, with the usual note
        assert any("grey image converted to RGB" in n for n in notes), notes
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    else:
        assert not notes
    if entry.format == "NPZ":  # written once to a PNG in the cache, which is what a run reads
        assert standard_image_path(name).suffix == ".png"
    else:
        assert standard_image_path(name).name == entry.file.split("/")[-1]
    assert entry.origin and entry.content and entry.licence


@needs_pywt
def test_an_array_stored_picture_is_written_exactly_once_to_the_cache(tmp_path, monkeypatch):
    import os

    import pywt.data

    from cem_lab.standard_images import image_cache_folder

    monkeypatch.setenv("CEM_LAB_CACHE", str(tmp_path / "cache"))
    png = standard_image_path("ascent")
    assert png.parent == image_cache_folder() == tmp_path / "cache" / "standard_images"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(standard_image("ascent")[..., 0], pywt.data.ascent())
    written = png.stat().st_mtime_ns
    assert standard_image_path("ascent") == png and png.stat().st_mtime_ns == written  # not rewritten
    assert [p.name for p in png.parent.iterdir()] == [png.name]  # no temporary file left
    os.utime(png, ns=(0, 0))  # older than the package's file: written again
    standard_image_path("ascent")
    assert png.stat().st_mtime_ns > 0


@needs_pywt
def test_an_unwritable_cache_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("CEM_LAB_CACHE", str(blocker))  # the cache's folder cannot be made under a file
    with pytest.raises(DatasetError, match=r"not writable.*set \$CEM_LAB_CACHE") as err:
        standard_image_path("ascent")
    assert "\n" not in str(err.value)


@needs_pywt
def test_another_array_under_a_name_is_refused(monkeypatch, tmp_path):
    from cem_lab import standard_images

    monkeypatch.setenv("CEM_LAB_CACHE", str(tmp_path))
    entry = standard_images.STANDARD_IMAGES["ascent"]
    monkeypatch.setitem(
        standard_images.STANDARD_IMAGES,
        "ascent",
        standard_images.StandardImage(**{**entry.__dict__, "size": (256, 256)}),
    )
    with pytest.raises(DatasetError, match=r"shape \(512, 512\).*uint8 256x256"):
        standard_image_path("ascent")


@pytest.mark.parametrize("name", [n for n, e in STANDARD_IMAGES.items() if e.package == "scikit-image"])
def test_scikit_image_entries_are_what_skimage_data_returns(name):
    from skimage import data

    entry = STANDARD_IMAGES[name]
    expected = getattr(data, entry.function)()
    if isinstance(expected, tuple):  # stereo_motorcycle: (left, right, disparity)
        expected = expected[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = standard_image(name)
    got = arr[..., 0] if expected.ndim == 2 else arr
    np.testing.assert_array_equal(got, expected)


def test_the_catalogue_lists_both_packages():
    sporco = list_standard_images("sporco")
    assert sporco == ["barbara", "kodim23", "monarch", "sail", "tulips"]
    assert {"astronaut", "chelsea", "coffee", "rocket", "camera"} <= set(list_standard_images("scikit-image"))
    assert list_standard_images() == list(STANDARD_IMAGES)
    with pytest.raises(DatasetError, match="scikit-image"):
        list_standard_images("imagenet")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DatasetError, match="unknown standard image 'lena'") as err:
        standard_image("lena")
    assert "monarch" in str(err.value) and "astronaut" in str(err.value)
    with pytest.raises(DatasetError, match="known: barbara"):
        standard_image_path("Set14")


def test_a_missing_package_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sporco" else real(name, *a))
    with pytest.raises(DatasetError, match="pip install sporco"):
        standard_image("monarch")


def test_another_picture_under_a_name_is_refused(monkeypatch):
    from cem_lab import standard_images

    entry = standard_images.STANDARD_IMAGES["chelsea"]
    monkeypatch.setitem(
        standard_images.STANDARD_IMAGES,
        "chelsea",
        standard_images.StandardImage(**{**entry.__dict__, "size": (256, 256)}),
    )
    with pytest.raises(DatasetError, match="300x451 RGB"):
        standard_image_path("chelsea")


@needs_sporco
def test_dataset_standard_config_resolves_to_the_file():
    """conf/dataset/standard.yaml, with the resolvers registered as cem-lab registers them."""
    from hydra import compose, initialize_config_module

    from cem_lab.compose.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_module(config_module="cem_lab.conf", version_base="1.3"):
        default = compose(config_name="cem", overrides=["dataset=standard"])
        other = compose(config_name="cem", overrides=["dataset=standard", "standard.name=kodim23"])
    assert default.image == str(standard_image_path("monarch")) and default.degraded is None
    assert other.image == str(standard_image_path("kodim23"))


def test_the_pools_are_disjoint_and_catalogued():
    seen: dict[str, str] = {}
    for pool, names in IMAGE_POOLS.items():
        assert names == image_pool(pool) and len(set(names)) == len(names)
        for n in names:
            assert n in STANDARD_IMAGES, n
            assert n not in seen, f"{n} is in both {seen.get(n)} and {pool}"
            seen[n] = pool
    assert set(list_standard_images("sporco")) | {"ascent"} == set(image_pool("heldout"))
    assert len(image_pool("train")) >= 15
    with pytest.raises(DatasetError, match="unknown image pool 'test'.*train, heldout, validation"):
        image_pool("test")


def test_the_training_data_reads_a_pool():
    from cem_lab.training.data import DataError, RestorationDataModule

    dm = RestorationDataModule("dn", pool="train", crop=48, batch_size=2, steps_per_epoch=2)
    dm.setup()
    assert dm.train_names == list(image_pool("train")) and dm.val_names == ["chelsea_256"]
    assert "pool 'train'" in dm.describe()["images"]
    with pytest.raises(DataError, match="unknown image pool"):
        RestorationDataModule("dn", pool="nope")
    with pytest.raises(DataError, match="not both"):
        RestorationDataModule("dn", pool="train", images="somewhere")
