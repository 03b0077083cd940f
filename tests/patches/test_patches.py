"""Tests for cem_lab.patches: patch banks, sharpness score and sampling schemes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cem_lab.patches.bank as bank_mod
from cem_lab.patches import (
    PatchBank,
    PatchBankError,
    SharpnessMatchedSampler,
    StratifiedSampler,
    UniformSampler,
    block_sharpness,
    make_sampler,
    patch_sharpness,
)

SHARED_BANK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "div2k_patches8.npz"
needs_shared_bank = pytest.mark.skipif(
    not SHARED_BANK.is_file(), reason=f"reference patch bank {SHARED_BANK} not present"
)


def _random_bank(n: int = 200, p: int = 8, seed: int = 0) -> PatchBank:
    rng = np.random.default_rng(seed)
    # mix flat and textured patches so sharpness spans a wide range
    base = rng.integers(0, 256, size=(n, 1, 1, 3))
    noise = rng.integers(-60, 61, size=(n, p, p, 3)) * (np.arange(n) / n)[:, None, None, None]
    patches = np.clip(base + noise, 0, 255).astype(np.uint8)
    return PatchBank(patches, patch_sharpness(patches), source="test", meta={})


def _write_png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path, format="PNG")


# --------------------------------------------------------------------------- sharpness
def test_sharpness_flat_patch_is_zero():
    flat = np.full((2, 8, 8, 3), 123, dtype=np.uint8)
    np.testing.assert_array_equal(patch_sharpness(flat), [0.0, 0.0])


def test_sharpness_vertical_edge_by_hand():
    # grey 0 | grey 100 vertical edge between columns 3 and 4: 8 rows x one jump of 100 in dx, dy = 0
    p = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    p[0, :, 4:] = 100
    # sqrt(sum dx^2 + sum dy^2) = sqrt(8 * 100^2) = 282.84... -> rounded 283
    assert patch_sharpness(p)[0] == 283.0


def test_sharpness_uses_bt601_luma():
    # pure red 0 -> 255 horizontal edge: luma of (255,0,0) = round(0.299*255) = 76
    p = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    p[0, 2:, :, 0] = 255
    # one jump of 76 in dy on each of 4 columns: sqrt(4 * 76^2) = 152
    assert patch_sharpness(p)[0] == 152.0
    # a green edge of the same size is sharper (0.587 weight): luma 150 -> sqrt(4*150^2) = 300
    p2 = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    p2[0, 2:, :, 1] = 255
    assert patch_sharpness(p2)[0] == 300.0


def test_sharpness_rejects_bad_input():
    with pytest.raises(PatchBankError, match="uint8"):
        patch_sharpness(np.zeros((1, 8, 8, 3), dtype=np.float32))
    with pytest.raises(PatchBankError, match="shape"):
        patch_sharpness(np.zeros((8, 8, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- npz I/O
def test_save_load_round_trip(tmp_path):
    bank = _random_bank(50)
    bank.meta["source_image"] = np.array([f"img{i % 3}" for i in range(50)])
    bank.meta["top_left"] = np.arange(100).reshape(50, 2)
    path = tmp_path / "sub" / "bank.npz"
    bank.save(path)
    loaded = PatchBank.load(path)
    np.testing.assert_array_equal(loaded.patches, bank.patches)
    np.testing.assert_array_equal(loaded.sharpness, bank.sharpness)
    np.testing.assert_array_equal(loaded.meta["source_image"], bank.meta["source_image"])
    np.testing.assert_array_equal(loaded.meta["top_left"], bank.meta["top_left"])
    assert loaded.patch_size == 8 and len(loaded) == 50
    assert loaded.source == "bank.npz"
    assert not list(path.parent.glob("*.tmp"))  # atomic writer left nothing behind


def test_load_computes_missing_sharpness(tmp_path):
    bank = _random_bank(20)
    path = tmp_path / "nosharp.npz"
    np.savez(path, patches=bank.patches)
    np.testing.assert_array_equal(PatchBank.load(path).sharpness, bank.sharpness)


@needs_shared_bank
def test_shared_reference_bank_loads_and_sharpness_matches():
    bank = PatchBank.load(SHARED_BANK)
    assert len(bank) == 10000 and bank.patch_size == 8
    assert bank.patches.shape == (10000, 8, 8, 3)
    assert bank.meta["source_image"].shape == (10000,)
    assert bank.meta["top_left"].shape == (10000, 2)
    ours = patch_sharpness(bank.patches)
    # our score reproduces the paper's stored score exactly for every patch
    np.testing.assert_array_equal(ours, bank.sharpness)


# --------------------------------------------------------------------------- bank errors
def test_load_errors(tmp_path):
    with pytest.raises(PatchBankError, match="not found"):
        PatchBank.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(PatchBankError, match="not a readable .npz"):
        PatchBank.load(junk)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(PatchBankError, match="single .npy array"):
        PatchBank.load(npy)
    nokey = tmp_path / "nokey.npz"
    np.savez(nokey, images=np.zeros((3, 8, 8, 3), np.uint8), scores=np.zeros(3))
    with pytest.raises(PatchBankError, match=r"no 'patches'.*\['images', 'scores'\]"):
        PatchBank.load(nokey)
    wrongdtype = tmp_path / "float.npz"
    np.savez(wrongdtype, patches=np.zeros((3, 8, 8, 3), np.float32), sharpness=np.zeros(3))
    with pytest.raises(PatchBankError, match="must be uint8"):
        PatchBank.load(wrongdtype)
    wrongshape = tmp_path / "shape.npz"
    np.savez(wrongshape, patches=np.zeros((3, 8, 6, 3), np.uint8), sharpness=np.zeros(3))
    with pytest.raises(PatchBankError, match=r"\(N, p, p, 3\)"):
        PatchBank.load(wrongshape)
    empty = tmp_path / "empty.npz"
    np.savez(empty, patches=np.zeros((0, 8, 8, 3), np.uint8), sharpness=np.zeros(0))
    with pytest.raises(PatchBankError, match="empty"):
        PatchBank.load(empty)


def test_constructor_validation():
    good = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(PatchBankError, match="one score per patch"):
        PatchBank(good, np.zeros(3), "t", {})
    with pytest.raises(PatchBankError, match="NaN or inf"):
        PatchBank(good, np.array([0, 1, np.nan, 2.0]), "t", {})
    with pytest.raises(PatchBankError, match="square RGB"):
        PatchBank(np.zeros((4, 8, 8, 4), np.uint8), np.zeros(4), "t", {})
    with pytest.raises(PatchBankError, match="empty"):
        PatchBank(np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0), "t", {})


# --------------------------------------------------------------------------- from_folder
@pytest.fixture()
def image_folder(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    _write_png(folder / "b.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))  # 2 x 3 grid of 8
    _write_png(folder / "a.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))  # 2 x 2 grid of 8
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_from_folder_grid_counts_and_positions(image_folder):
    bank = PatchBank.from_folder(image_folder, patch_size=8, cache=False)
    assert len(bank) == 4 + 6
    assert bank.source == f"folder:{image_folder}"
    src, tl = bank.meta["source_image"], bank.meta["top_left"]
    assert list(src[:4]) == ["a.png"] * 4  # files sorted by name
    assert [tuple(t) for t in tl[4:]] == [(0, 0), (0, 8), (0, 16), (8, 0), (8, 8), (8, 16)]
    img_b = np.asarray(Image.open(image_folder / "b.png"))
    for patch, (y, x) in zip(bank.patches[4:], tl[4:]):
        np.testing.assert_array_equal(patch, img_b[y : y + 8, x : x + 8])
    np.testing.assert_array_equal(bank.sharpness, patch_sharpness(bank.patches))


def test_from_folder_stride_and_random(image_folder):
    grid = PatchBank.from_folder(image_folder, patch_size=8, stride=4, cache=False)
    # a: 16x16 -> 3x3 positions; b: 20x24 -> 4 (0,4,8,12) x 5 (0..16) positions
    assert len(grid) == 9 + 20
    rand1 = PatchBank.from_folder(image_folder, patch_size=8, count=7, seed=3, cache=False)
    rand2 = PatchBank.from_folder(image_folder, patch_size=8, count=7, seed=3, cache=False)
    rand3 = PatchBank.from_folder(image_folder, patch_size=8, count=7, seed=4, cache=False)
    assert len(rand1) == 14
    np.testing.assert_array_equal(rand1.patches, rand2.patches)
    assert not np.array_equal(rand1.meta["top_left"], rand3.meta["top_left"])
    tl = rand1.meta["top_left"]
    assert tl.min() >= 0 and tl[:7].max() <= 8 and tl[7:, 0].max() <= 12 and tl[7:, 1].max() <= 16


def test_from_folder_cache_hit_and_invalidation(image_folder, monkeypatch):
    calls = []
    real_cut = bank_mod.cut_patches

    def counting_cut(*args, **kwargs):
        calls.append(1)
        return real_cut(*args, **kwargs)

    monkeypatch.setattr(bank_mod, "cut_patches", counting_cut)
    first = PatchBank.from_folder(image_folder, patch_size=8)
    assert len(calls) == 2
    cache_file = image_folder / ".cem_lab_cache" / "bank_p8_s8_cnone_seed0.npz"
    assert cache_file.is_file()

    second = PatchBank.from_folder(image_folder, patch_size=8)
    assert len(calls) == 2  # served from the cache, nothing cut
    np.testing.assert_array_equal(second.patches, first.patches)
    np.testing.assert_array_equal(second.meta["top_left"], first.meta["top_left"])
    assert second.source == first.source and "cache_key" not in second.meta

    # another setting does not reuse this cache
    PatchBank.from_folder(image_folder, patch_size=4)
    assert len(calls) == 4

    # change one image: the cache is rebuilt and reflects the new content
    new_a = np.full((24, 16, 3), 7, dtype=np.uint8)
    _write_png(image_folder / "a.png", new_a)
    third = PatchBank.from_folder(image_folder, patch_size=8)
    assert len(calls) == 6
    assert len(third) == 6 + 6
    assert np.all(third.patches[:6] == 7)


def test_from_folder_unwritable_cache_falls_back(image_folder, tmp_path, monkeypatch):
    # the cache directory name is taken by a plain file: the folder cache cannot be written
    (image_folder / ".cem_lab_cache").write_text("in the way")
    user_cache = tmp_path / "usercache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    bank = PatchBank.from_folder(image_folder, patch_size=8)
    assert len(bank) == 10
    fallback = list((user_cache / "cem_lab").glob("*_bank_p8_s8_cnone_seed0.npz"))
    assert len(fallback) == 1
    # second call reads the fallback cache
    monkeypatch.setattr(bank_mod, "cut_patches", lambda *a, **k: pytest.fail("cache not used"))
    again = PatchBank.from_folder(image_folder, patch_size=8)
    np.testing.assert_array_equal(again.patches, bank.patches)


def test_from_folder_no_cache_writable_warns(image_folder, tmp_path, monkeypatch):
    (image_folder / ".cem_lab_cache").write_text("in the way")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.warns(UserWarning, match="not cached"):
        bank = PatchBank.from_folder(image_folder, patch_size=8)
    assert len(bank) == 10


def test_from_folder_errors(tmp_path, image_folder):
    with pytest.raises(PatchBankError, match="folder not found"):
        PatchBank.from_folder(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(PatchBankError, match=r"no images.*\.png.*\.jpg"):
        PatchBank.from_folder(empty)
    small = tmp_path / "small"
    small.mkdir()
    _write_png(small / "tiny.png", np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(PatchBankError, match=r"smaller than the patch size 8: tiny\.png \(5x6\)"):
        PatchBank.from_folder(small, cache=False)
    _write_png(image_folder / "c_tiny.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"skipped.*c_tiny\.png"):
        bank = PatchBank.from_folder(image_folder, cache=False)
    assert len(bank) == 10
    with pytest.raises(PatchBankError, match="not both"):
        PatchBank.from_folder(image_folder, stride=4, count=3)


# --------------------------------------------------------------------------- embedded
def test_embedded_bank_deterministic_and_excludes():
    bank = PatchBank.embedded(patch_size=8, count=600, seed=0)
    assert bank.patches.shape == (600, 8, 8, 3) and bank.patches.dtype == np.uint8
    assert bank.source == "embedded:skimage"
    names = set(bank.meta["source_image"])
    assert "chelsea" not in names
    assert {"astronaut", "brick", "moon", "hubble_deep_field"} <= names
    again = PatchBank.embedded(patch_size=8, count=600, seed=0)
    np.testing.assert_array_equal(again.patches, bank.patches)
    other_seed = PatchBank.embedded(patch_size=8, count=600, seed=1)
    assert not np.array_equal(other_seed.patches, bank.patches)
    np.testing.assert_array_equal(bank.sharpness, patch_sharpness(bank.patches))
    # grey textures converted to RGB: equal channels
    grey = bank.patches[bank.meta["source_image"] == "brick"]
    assert len(grey) > 0 and np.all(grey[..., 0] == grey[..., 1])

    # the in-memory cached bank is read-only, so callers cannot corrupt it; tensors still work
    assert not bank.patches.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(bank.resized(8).numpy() * 255, bank.patches.transpose(0, 3, 1, 2))

    with_cat = PatchBank.embedded(patch_size=8, count=600, seed=0, exclude=())
    assert "chelsea" in set(with_cat.meta["source_image"])
    no_moon = PatchBank.embedded(patch_size=8, count=600, seed=0, exclude=("chelsea", "moon"))
    assert not {"chelsea", "moon"} & set(no_moon.meta["source_image"])
    with pytest.raises(PatchBankError, match="unknown embedded image"):
        PatchBank.embedded(exclude=("dog",))


def test_embedded_patches_come_from_their_image():
    import skimage.data

    bank = PatchBank.embedded(patch_size=8, count=120, seed=5)
    img = skimage.data.astronaut()
    sel = np.flatnonzero(bank.meta["source_image"] == "astronaut")
    assert len(sel) > 0
    for i in sel:
        y, x = bank.meta["top_left"][i]
        np.testing.assert_array_equal(bank.patches[i], img[y : y + 8, x : x + 8])


# --------------------------------------------------------------------------- resized
def test_resized_same_size_is_exact():
    bank = _random_bank(30)
    t = bank.resized(8)
    assert t.shape == (30, 3, 8, 8) and str(t.dtype) == "torch.float32"
    expected = bank.patches.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    np.testing.assert_array_equal(t.numpy(), expected)


def test_resized_up_and_down():
    bank = _random_bank(30)
    up = bank.resized(16)
    assert up.shape == (30, 3, 16, 16)
    assert float(up.min()) >= 0.0 and float(up.max()) <= 1.0
    grid = up.numpy() * 255.0
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-4)  # on the uint8 grid
    # flat patches stay flat
    flat = PatchBank(np.full((2, 8, 8, 3), 200, np.uint8), np.zeros(2), "t", {})
    np.testing.assert_allclose(flat.resized(13).numpy(), 200 / 255.0, atol=1e-6)
    down = bank.resized(4)
    assert down.shape == (30, 3, 4, 4)


# --------------------------------------------------------------------------- samplers
@pytest.fixture(scope="module")
def wide_bank() -> PatchBank:
    return _random_bank(500, seed=2)


@pytest.mark.parametrize("name", ["uniform", "sharpness_matched", "stratified"])
def test_sampler_deterministic(name, wide_bank):
    s = make_sampler(name)
    s.bind(wide_bank)
    target = float(np.median(wide_bank.sharpness))
    a = s.draw_many(np.random.default_rng(42), target, 50)
    b = s.draw_many(np.random.default_rng(42), target, 50)
    c = s.draw_many(np.random.default_rng(43), target, 50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() < len(wide_bank)


def test_uniform_coverage(wide_bank):
    s = UniformSampler()
    s.bind(wide_bank)
    draws = s.draw_many(np.random.default_rng(0), 0.0, 50000)
    counts = np.bincount(draws, minlength=len(wide_bank))
    assert counts.min() > 0
    # 100 expected per patch: chi-square with 499 dof stays well below 650
    chi2 = float(((counts - 100.0) ** 2 / 100.0).sum())
    assert chi2 < 650


def test_sharpness_matched_returns_near_patches(wide_bank):
    k = 20
    s = SharpnessMatchedSampler(k=k)
    s.bind(wide_bank)
    sharp = wide_bank.sharpness
    for target in [0.0, float(np.percentile(sharp, 50)), float(sharp.max()) + 100.0]:
        draws = s.draw_many(np.random.default_rng(1), target, 300)
        dist = np.abs(sharp[draws] - target)
        kth = np.sort(np.abs(sharp - target))[k - 1]
        assert dist.max() <= kth  # never further than the k-th nearest patch
        assert len(np.unique(draws)) >= min(k, 15)  # spread over the candidates, not one patch
    # k larger than the bank is clipped: all patches become candidates
    big = SharpnessMatchedSampler(k=10**6)
    big.bind(wide_bank)
    assert big.candidate_range(5.0) == (0, len(wide_bank))


def test_sharpness_matched_includes_ties():
    patches = np.zeros((10, 8, 8, 3), np.uint8)
    sharp = np.array([0, 0, 0, 0, 5, 5, 9, 9, 9, 20], dtype=float)
    bank = PatchBank(patches, sharp, "t", {})
    s = SharpnessMatchedSampler(k=2)
    s.bind(bank)
    lo, hi = s.candidate_range(0.0)
    assert hi - lo == 4  # all four zeros, not two of them
    draws = s.draw_many(np.random.default_rng(0), 0.0, 400)
    assert set(draws.tolist()) == {0, 1, 2, 3}
    draws = s.draw_many(np.random.default_rng(0), 8.0, 400)
    assert set(draws.tolist()) == {6, 7, 8}
    # equidistant values on both sides of the target (5 and 9 around 7): all of them are candidates
    draws = s.draw_many(np.random.default_rng(0), 7.0, 400)
    assert set(draws.tolist()) == {4, 5, 6, 7, 8}
    draws = s.draw_many(np.random.default_rng(0), 9.5, 400)
    assert set(draws.tolist()) == {6, 7, 8}  # all three nines, not just the two nearest in sorted order
    s1 = SharpnessMatchedSampler(k=1)
    s1.bind(bank)
    assert set(s1.draw_many(np.random.default_rng(0), 19.0, 50).tolist()) == {9}


def test_stratified_cycles_strata(wide_bank):
    s = StratifiedSampler(strata=5)
    s.bind(wide_bank)
    rng = np.random.default_rng(7)
    draws = s.draw_many(rng, 0.0, 100)
    strata = [set(s.stratum_indices(i).tolist()) for i in range(5)]
    assert sum(len(st) for st in strata) == len(wide_bank)
    for i, d in enumerate(draws):
        assert int(d) in strata[i % 5]
    # strata are sharpness quantiles: each stratum's max <= the next one's min
    sharp = wide_bank.sharpness
    for i in range(4):
        assert sharp[list(strata[i])].max() <= sharp[list(strata[i + 1])].min()
    # strata clipped to the bank size
    tiny = PatchBank(np.zeros((3, 8, 8, 3), np.uint8), np.array([1.0, 2.0, 3.0]), "t", {})
    st = StratifiedSampler(strata=10)
    st.bind(tiny)
    assert st.n_strata == 3
    assert st.draw_many(np.random.default_rng(0), 0.0, 6).tolist() == [0, 1, 2, 0, 1, 2]


def test_make_sampler_and_errors(wide_bank):
    assert isinstance(make_sampler("uniform"), UniformSampler)
    sm = make_sampler("sharpness-matched", k=7)
    assert isinstance(sm, SharpnessMatchedSampler) and sm.k == 7
    assert make_sampler("stratified", strata=3).strata == 3
    with pytest.raises(ValueError, match="uniform, sharpness_matched, stratified"):
        make_sampler("gaussian")
    with pytest.raises(ValueError, match="bad options"):
        make_sampler("uniform", k=3)
    with pytest.raises(ValueError, match="positive integer"):
        SharpnessMatchedSampler(k=0)
    with pytest.raises(RuntimeError, match="bind"):
        UniformSampler().draw(np.random.default_rng(0), 0.0, 0)


# --------------------------------------------------------------------------- block_sharpness
def test_block_sharpness_same_size_equals_patch_score():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    score = block_sharpness(img, (8, 16, 16, 24), patch_size=8)
    assert score == patch_sharpness(img[None, 8:16, 16:24])[0]


def test_block_sharpness_rescaled_for_other_sizes():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 8:] = 100  # vertical edge at column 8
    s16 = block_sharpness(img, (0, 0, 16, 16), patch_size=8)
    # 16 rows x one jump of 100: sqrt(16 * 100^2) = 400, scaled by 8/16
    assert s16 == pytest.approx(200.0)
    with pytest.raises(ValueError, match="outside"):
        block_sharpness(img, (0, 0, 40, 8), patch_size=8)
    with pytest.raises(ValueError, match="uint8"):
        block_sharpness(img.astype(float), (0, 0, 8, 8), patch_size=8)
