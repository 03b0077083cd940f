"""Incremental recompute (recompute=incremental): a plain conv stack recomputed layer by layer on the
windows an intervention can reach gives the ROI-crop outputs and map, independent of the batch size,
checked before it is trusted; other local models are traced (test_local_graph.py), and models with a
global operation fall back with a note that names it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, ConvStack, GlobalAttention, needs_shared
from torch import nn

from cem_lab import compute_cem
from cem_lab.causal.incremental import NotAChain, conv_chain
from cem_lab.causal.recompute import RoiCropRecompute
from cem_lab.causal.run import prepare_cem
from cem_lab.models import DnCNN

#: exactness is what these tests check: the job keeps incremental recompute even where the crop is faster
pytestmark = pytest.mark.usefixtures("incremental_even_when_slower")

KW = dict(block=8, coarse=2, fine=6, progress=False, figures=False, seed=3)


class MixedChain(nn.Module):
    """A chain with 5x5 and 1x1 kernels, batch norm (eval), LeakyReLU and a + residual."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5, padding=2),
            nn.BatchNorm2d(8),
            nn.LeakyReLU(0.2),
            nn.Conv2d(8, 8, 1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(8, 3, 3, padding=1),
        )
        with torch.no_grad():
            bn = self.body[1]
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
        self.eval()

    def conv_chain(self):
        return self.body, 1

    def forward(self, x):
        return x + self.body(x)


@pytest.fixture
def two_threads(torch_threads):
    """Torch on 2 intra-op threads for the test, the caller's count back afterwards."""
    torch_threads(2)


def _small_dncnn_job(small_bank):
    """A prepared incremental job of a small DnCNN on a 64 px crop (for the thread tests)."""
    return prepare_cem(
        DnCNN(features=8, depth=4),
        _image(64),
        "dn",
        (24, 24, 16),
        block=8,
        patch_bank=small_bank,
        seed=3,
        recompute="incremental",
    )


def _image(size: int) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40 : 40 + size, 150 : 150 + size])


@pytest.mark.parametrize(
    "model, roi",
    [
        (lambda: DnCNN(features=8, depth=6), (32, 32, 16)),
        (lambda: DnCNN(features=8, depth=6), (0, 80, 16)),  # ROI at the image's corner: windows leave the crop
        (lambda: MixedChain(), (36, 20, 24)),
    ],
)
def test_incremental_outputs_equal_the_crop_outputs_on_every_block(small_bank, model, roi):
    torch.manual_seed(
        0
    )  # the same random weights every run (an unlucky draw has outputs large enough to round above 1e-5)
    m = model()
    job = prepare_cem(m, _image(96), "dn", roi, block=8, patch_bank=small_bank, seed=3, recompute="incremental")
    assert job.recompute.name == "incremental", job.notes
    assert job.checks["incremental_check"]["ok"]
    blocks = np.flatnonzero(job.active)
    samples = np.arange(len(blocks)) % 3
    a = job.recompute.roi_outputs(job, blocks, samples)
    b = RoiCropRecompute().roi_outputs(job, blocks, samples)
    assert a.shape == b.shape
    assert float((a - b).abs().max()) < 1e-5
    # and the windows do less work than the crop
    assert job.recompute.chain.pixels((0, 8, 0, 8)) < (job.crop[1] - job.crop[0]) * (job.crop[3] - job.crop[2])


def test_incremental_maps_equal_roi_crop_maps_and_do_not_depend_on_the_batch_size(small_bank):
    model = DnCNN(features=8, depth=6)
    image = _image(64)
    ref = compute_cem(model, image, "dn", (24, 24, 16), patch_bank=small_bank, batch_size=32, **KW)
    a = compute_cem(
        model, image, "dn", (24, 24, 16), patch_bank=small_bank, batch_size=32, recompute="incremental", **KW
    )
    b = compute_cem(
        model, image, "dn", (24, 24, 16), patch_bank=small_bank, batch_size=5, recompute="incremental", **KW
    )
    np.testing.assert_array_equal(a.effect_raw, b.effect_raw)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.classification, ref.classification)
    np.testing.assert_allclose(a.effect_raw, ref.effect_raw, atol=1e-3)
    assert a.meta["settings"]["recompute"] == "incremental" and "recompute" not in ref.meta["settings"]
    assert a.meta["incremental_check"]["ok"]
    assert a.meta["pixels_pushed"] < ref.meta["pixels_pushed"]
    assert any(n.startswith("incremental recompute: 6 conv layers") for n in a.meta["notes"])


def test_a_global_model_falls_back_with_the_operation_named(clean_image, small_bank):
    m, words = GlobalAttention(), "a reduction over the spatial axes (aten::mean.dim) at conftest.py"
    ref = compute_cem(m, clean_image, "dn", (16, 16, 16), patch_bank=small_bank, **KW)
    res = compute_cem(m, clean_image, "dn", (16, 16, 16), patch_bank=small_bank, recompute="incremental", **KW)
    note = [n for n in res.meta["notes"] if n.startswith("incremental recompute (recompute=incremental) not used")]
    assert note and words in note[0], res.meta["notes"]
    np.testing.assert_array_equal(res.effect_raw, ref.effect_raw)
    assert res.meta["settings"]["recompute"] == "incremental"  # what was asked (the identity); the path: the notes


def test_conv_chain_names_what_breaks_the_chain():
    with pytest.raises(NotAChain, match="stride-1"):
        conv_chain(nn.Sequential(nn.Conv2d(3, 3, 3, stride=2, padding=1)))
    with pytest.raises(NotAChain, match="MaxPool2d"):
        conv_chain(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.MaxPool2d(2)))
    with pytest.raises(NotAChain, match="before the first convolution"):
        conv_chain(nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1)))
    with pytest.raises(NotAChain, match="padded"):
        conv_chain(nn.Sequential(nn.Conv2d(3, 3, 3, padding=0)))
    units, residual = conv_chain(DnCNN(depth=4))
    assert len(units) == 4 and residual == -1


def test_other_local_models_are_traced_instead(small_bank):
    """A model that is no conv stack (x2, an upsampled skip and a pixel shuffle) runs on the traced graph
    (tests/causal/test_local_graph.py checks that path node by node)."""
    from cem_lab.tasks import make_task

    model = ConvStack(depth=3, scale=2)
    res = compute_cem(
        model, _image(64), make_task("sr", scale=2), (16, 16, 16), patch_bank=small_bank, recompute="incremental", **KW
    )
    assert any(n.startswith("incremental recompute (traced graph)") for n in res.meta["notes"]), res.meta["notes"]


@pytest.mark.slow
@needs_shared
def test_on_the_real_dncnn_at_256_incremental_outputs_equal_the_crop_outputs():
    """KAIR's DnCNN on the 256x256 demo image and the paper's ROI: 48 items over the crop's blocks."""
    from cem_lab.images import load_image
    from cem_lab.models import load_weights
    from cem_lab.patches import PatchBank

    m = DnCNN()
    load_weights(m, SHARED_DATA / "dncnn_color_blind.pth")
    bank = PatchBank.load(SHARED_DATA / "div2k_patches8.npz")
    img = load_image(SHARED_DATA / "demo_images" / "demo_2.png")
    job = prepare_cem(m.eval(), img, "dn", (152, 96, 32), block=8, patch_bank=bank, seed=0, recompute="incremental")
    assert job.mode == "crop" and job.recompute.name == "incremental", job.notes
    rng = np.random.default_rng(0)
    blocks = rng.choice(np.flatnonzero(job.active), 48, replace=False)
    samples = rng.integers(0, 50, 48)
    a = job.recompute.roi_outputs(job, blocks, samples)
    b = RoiCropRecompute().roi_outputs(job, blocks, samples)
    assert float((a - b).abs().max()) < 1e-4
    assert job.recompute.chain.pixels((20, 28, 20, 28)) < 0.3 * 72 * 72


@pytest.mark.parametrize("slow_on", [2, 1])
def test_incremental_recompute_keeps_the_thread_count_it_measured_faster(small_bank, monkeypatch, slow_on):
    """Its many small operations run on the thread count whose probe convolution was faster (1 beside a busy
    process, all of torch's on a quiet machine: simulated here by slowing one count down); the caller's
    count is back afterwards, and the choice is recorded with the check."""
    import time

    from cem_lab.causal import threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        job = _small_dncnn_job(small_bank)
        assert job.recompute.name == "incremental", job.notes
        assert job.checks["incremental_check"]["threads"]["chosen"] in (1, 2)
        conv = torch.nn.functional.conv2d
        probes = []

        def timed(*a, **k):
            probes.append(torch.get_num_threads())
            if probes[-1] == slow_on:
                time.sleep(0.25)  # far above a tiny convolution, even one that waits for a busy core
            return conv(*a, **k)

        monkeypatch.setattr(torch.nn.functional, "conv2d", timed)
        choice = job.recompute.choose_threads(job)
        monkeypatch.setattr(torch.nn.functional, "conv2d", conv)
        assert choice["chosen"] == 3 - slow_on and torch.get_num_threads() == 2
        # the two counts in turn after a warm-up; slower on 2 threads: the probe stops at the first 2-thread time
        assert probes == ([1, 1, 2] if slow_on == 2 else [1, 1, 2, 1, 2, 1, 2])
        seen = []
        run = job.recompute.chain.roi_outputs
        monkeypatch.setattr(
            job.recompute.chain, "roi_outputs", lambda *a, **k: seen.append(torch.get_num_threads()) or run(*a, **k)
        )
        blocks = np.flatnonzero(job.active)[:4]
        job.recompute.roi_outputs(job, blocks, np.zeros(4, dtype=int))
        assert seen == [3 - slow_on] and torch.get_num_threads() == 2
        assert threads.DEFAULT_CPU_THREADS == 1  # the default before the probe, and where it cannot run
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("slow_on", [2, 1])
def test_the_roi_crop_runs_on_the_thread_count_it_measured_faster(small_bank, monkeypatch, slow_on):
    """The crop path probes its threads too, once the crop is known and before the crop's check (whose chunk
    is the map's M0), and every crop call of the map runs on the count chosen; recorded in the summary."""
    import time

    conv = torch.nn.functional.conv2d
    probes = []

    def timed(*a, **k):
        probes.append(torch.get_num_threads())
        if probes[-1] == slow_on:
            time.sleep(0.25)
        return conv(*a, **k)

    from cem_lab.causal import job as job_module

    probe = job_module.probe_threads

    def slowed_probe(*a, **k):  # only the probe's convolutions are slowed, not the model's
        monkeypatch.setattr(torch.nn.functional, "conv2d", timed)
        try:
            return probe(*a, **k)
        finally:
            monkeypatch.setattr(torch.nn.functional, "conv2d", conv)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(job_module, "probe_threads", slowed_probe)
        job = prepare_cem(
            DnCNN(features=8, depth=4), _image(64), "dn", (24, 24, 16), block=8, patch_bank=small_bank, seed=3
        )
        # the preparation's probe (the input's shape), then the crop's, each the two counts in turn after a warm-up
        assert probes == 2 * ([1, 1, 2] if slow_on == 2 else [1, 1, 2, 1, 2, 1, 2])
        assert job.checks["prepare_threads"]["chosen"] == job.prepare_threads == 3 - slow_on
        assert job.mode == "crop" and job.recompute.name == "roi_crop"
        assert job.checks["crop_threads"]["chosen"] == job.crop_threads == 3 - slow_on
        seen = []
        call = job._call_model
        monkeypatch.setattr(job, "_call_model", lambda x: seen.append(torch.get_num_threads()) or call(x))
        blocks = np.flatnonzero(job.active)[:4]
        job.recompute.roi_outputs(job, blocks, np.zeros(4, dtype=int))
        assert seen == [3 - slow_on] and torch.get_num_threads() == 2
        res = compute_cem(DnCNN(features=8, depth=4), _image(64), "dn", (24, 24, 16), patch_bank=small_bank, **KW)
        assert res.meta["crop_threads"]["chosen"] in (1, 2)
    finally:
        torch.set_num_threads(before)


def test_the_crop_races_its_thread_counts_on_the_map_and_leaves_a_count_the_probe_misjudged(
    small_bank, monkeypatch, two_threads
):
    """Beside a busy process a probe of a few milliseconds can find all threads faster by chance (a lull of the
    other process), and a map on them ran several times slower: the crop's map times one thread and all on its
    own work units and runs on the faster. Here the probe is made to choose 2 threads and 2 threads are made
    slow on the map; the map runs on 1, says so in the summary, and equals the map on 1 thread alone."""
    import time

    from cem_lab.causal import job as job_module
    from cem_lab.causal import recompute

    def fooled(model, device, batch, side):  # a lull: 2 threads looked a little faster
        return {"chosen": 2, "probe": "set by the test", "seconds_1": 0.0010, "seconds_2": [0.0008, 0.0008, 0.0008]}

    crop = recompute.crop_outputs

    def busy(job, blocks, samples, threads):
        if threads == 2 and job.stage_draws is not None:
            time.sleep(0.03)
        return crop(job, blocks, samples, threads)

    monkeypatch.setattr(job_module, "probe_threads", fooled)
    monkeypatch.setattr(recompute, "crop_outputs", busy)
    kw, model = {**KW, "batch_size": 8}, DnCNN(features=8, depth=4)
    res = compute_cem(model, _image(64), "dn", (24, 24, 16), patch_bank=small_bank, **kw)
    assert res.meta["crop_threads"]["chosen"] == 2
    for stage in res.meta["path_race"].values():
        # timed once on 2 threads (the probe's choice, first), found decisively slower, then 1 thread only
        assert stage["units"]["roi_crop@2"] == 1 < stage["units"]["roi_crop@1"], res.meta["path_race"]
    monkeypatch.setattr(recompute, "crop_outputs", crop)
    monkeypatch.setattr(recompute, "thread_counts", lambda job: (1,))  # no race: every unit on 1 thread
    monkeypatch.setattr(job_module, "probe_threads", lambda *a: {"chosen": 1})
    one = compute_cem(model, _image(64), "dn", (24, 24, 16), patch_bank=small_bank, **kw)
    assert "path_race" not in one.meta
    np.testing.assert_allclose(res.effect_raw, one.effect_raw, atol=1e-5)
    assert (res.classification == one.classification).all()


def test_a_full_image_map_runs_on_the_thread_count_it_measured_faster(small_bank, monkeypatch, two_threads):
    """A ROI whose dependency crop is the whole input (a receptive field wider than the input) maps in full-image
    mode, on the threads probed for the input's shape (beside a busy process all threads can be many times
    slower)."""
    from cem_lab.causal import job as job_module

    probe = job_module.probe_threads
    shapes = []

    def one_thread(model, device, batch, side):
        shapes.append(tuple(side))
        return {**probe(model, device, batch, side), "chosen": 1}

    monkeypatch.setattr(job_module, "probe_threads", one_thread)
    job = prepare_cem(DnCNN(features=8, depth=6), _image(16), "dn", (4, 4, 8), block=4, patch_bank=small_bank, seed=3)
    assert job.mode == "full" and shapes == [(16, 16), (16, 16)] and job.crop_threads == 1  # preparation, map
    assert any("a receptive field wider than the input" in n for n in job.notes), job.notes
    seen = []
    call = job._call_model
    monkeypatch.setattr(job, "_call_model", lambda x: seen.append(torch.get_num_threads()) or call(x))
    job.recompute.roi_outputs(job, np.flatnonzero(job.active)[:2], np.zeros(2, dtype=int))
    assert seen == [1] and torch.get_num_threads() == 2


def test_incremental_recompute_decisively_slower_than_the_crop_runs_on_the_crop(small_bank, monkeypatch):
    """Both paths are exact, so the job keeps the faster: where incremental recompute took more than
    RACE_DECISIVE times the crop's time on the check's items (each timed again, the first call sets up; here the
    crop's first time is made cold and slow) and on items of one block, the map runs on the crop and says why."""
    import time

    from cem_lab.causal.recompute import IncrementalRecompute, RoiCropRecompute

    monkeypatch.setattr(IncrementalRecompute, "ONLY_WHEN_FASTER", True)
    real = IncrementalRecompute.roi_outputs
    calls = []

    def slow(self, job, blocks, samples):
        calls.append(len(blocks))
        time.sleep(0.3)
        return real(self, job, blocks, samples)

    crop_real, crop_calls = RoiCropRecompute.roi_outputs, []

    def crop(self, job, blocks, samples):
        if job.stage_draws is None:
            crop_calls.append(len(blocks))
        return crop_real(self, job, blocks, samples)

    from cem_lab.causal import job as job_module
    from cem_lab.causal import recompute

    verify_crop = job_module.CEMJob._verify

    def cold(self, region):  # the crop check's chunk ran cold: its rows took 0.2 s, less than incremental's 0.3
        check = verify_crop(self, region)
        blocks, outputs, _ = self.crop_reference
        self.crop_reference = (blocks, outputs, 0.2)
        return check

    warm_real, warm_calls = recompute.crop_outputs, []

    def warm(job, blocks, samples, threads):
        if job.stage_draws is None:
            warm_calls.append(len(blocks))
        return warm_real(job, blocks, samples, threads)

    monkeypatch.setattr(IncrementalRecompute, "roi_outputs", slow)
    monkeypatch.setattr(RoiCropRecompute, "roi_outputs", crop)
    monkeypatch.setattr(job_module.CEMJob, "_verify", cold)
    monkeypatch.setattr(recompute, "crop_outputs", warm)
    model = DnCNN(features=8, depth=4)
    res = compute_cem(model, _image(64), "dn", (24, 24, 16), patch_bank=small_bank, recompute="incremental", **KW)
    check = res.meta["incremental_check"]
    # the crop's outputs are the crop check's chunk's; its time, cold there, is taken again on the same items
    assert crop_calls == [] and warm_calls == [6], (crop_calls, warm_calls)
    assert check["seconds"]["roi_crop"] < 0.2
    monkeypatch.setattr(RoiCropRecompute, "roi_outputs", crop_real)
    monkeypatch.setattr(recompute, "crop_outputs", warm_real)
    monkeypatch.setattr(job_module.CEMJob, "_verify", verify_crop)
    # timed again before judged slower, then twice on items of one block (slower there too)
    assert check["ok"] and check["race"] is False and len(calls) == 4
    assert check["seconds"]["incremental"] > 2 * check["seconds"]["roi_crop"]
    assert check["seconds"]["incremental_one_block"] > 2 * check["seconds"]["roi_crop"]
    assert check["reference"] == "the crop check's chunk" and len(check["blocks"]) == 6  # its 6 spare rows
    assert not any(a.startswith("incremental") for st in res.meta.get("path_race", {}).values() for a in st["units"])
    assert any("more than 2x slower than the ROI crop on the check's 6 items" in n for n in res.meta["notes"])
    monkeypatch.setattr(IncrementalRecompute, "roi_outputs", real)
    monkeypatch.setattr(IncrementalRecompute, "ONLY_WHEN_FASTER", False)
    same = compute_cem(model, _image(64), "dn", (24, 24, 16), patch_bank=small_bank, recompute="incremental", **KW)
    assert same.meta["incremental_check"]["faster_required"] is False
    assert any(n.startswith("incremental recompute: 4 conv layers") for n in same.meta["notes"])
    np.testing.assert_allclose(res.effect_raw, same.effect_raw, atol=1e-4)


def test_each_stage_runs_on_the_path_that_is_faster_on_its_own_work_units(small_bank, monkeypatch):
    """Where the check leaves it open, a map races incremental recompute and the crop chunk by chunk, stage by
    stage: here incremental recompute is made slow in the stage of 2 draws per block (whose chunks of 4 mix
    blocks) and the crop in the stage of 6; each stage ends up on its faster path, the summary says how many
    items each path ran, and the map equals the crop's within float rounding."""
    import time

    from cem_lab.causal import recompute
    from cem_lab.causal.recompute import IncrementalRecompute

    monkeypatch.setattr(IncrementalRecompute, "ONLY_WHEN_FASTER", True)
    monkeypatch.setattr(recompute, "RACE_DECISIVE", 1e9)  # raced whatever the check's times on this toy network
    # the check's figures left open: both paths the same per item before the map times them
    monkeypatch.setattr(
        IncrementalRecompute,
        "_prior",
        staticmethod(lambda check, chunk: lambda draws: {"incremental": 1.0, "roi_crop": 1.0}),
    )
    monkeypatch.setattr(recompute, "thread_counts", lambda job: (1,))  # the paths raced here, on one thread each
    arm_real = IncrementalRecompute._arm

    def slowed(self, job, arm, blocks, samples):
        if (job.stage_draws, arm) in ((2, "incremental@1"), (6, "roi_crop@1")):
            time.sleep(0.05)  # well above a unit's scatter beside a busy process
        return arm_real(self, job, arm, blocks, samples)

    monkeypatch.setattr(IncrementalRecompute, "_arm", slowed)
    model = DnCNN(features=8, depth=4)
    kw = {**KW, "forward_batch": 4, "batch_size": 4}  # coarse 2 draws per block, fine 6; units of 4 items
    res = compute_cem(model, _image(64), "dn", (24, 24, 16), patch_bank=small_bank, recompute="incremental", **kw)
    race = res.meta["path_race"]
    assert res.meta["incremental_check"]["race"] is True
    coarse, fine = race["2"]["units"], race["6"]["units"]
    # one unit of the slower arm at the stage's start, then (its extra 50 ms too dear for the budget) none
    assert coarse["incremental@1"] == 1 and coarse["roi_crop@1"] > 1, race
    assert fine["roi_crop@1"] == 1 and fine["incremental@1"] > 1, race
    assert race["2"]["s_per_row"]["incremental@1"] > race["2"]["s_per_row"]["roi_crop@1"]
    assert any("each stage's work units run on the fastest of it and the ROI crop" in n for n in res.meta["notes"])
    monkeypatch.setattr(IncrementalRecompute, "_arm", arm_real)
    plain = compute_cem(model, _image(64), "dn", (24, 24, 16), patch_bank=small_bank, recompute="roi_crop", **kw)
    np.testing.assert_allclose(res.effect_raw, plain.effect_raw, atol=1e-4)
    assert (res.classification == plain.classification).all()


def test_the_race_starts_from_the_checks_times_per_kind_of_stage():
    """Before a map has timed it, incremental recompute costs, per item, what the check's items of one block took,
    plus what items on different blocks took more for the share of chunks that mix blocks: about
    (chunk - 1) / draws of a stage's chunks."""
    from cem_lab.causal.recompute import IncrementalRecompute

    check = {"blocks": [0, 1], "seconds": {"incremental": 3.0, "roi_crop": 2.0, "incremental_one_block": 1.0}}
    prior = IncrementalRecompute._prior(check, chunk=8)
    assert prior(2) == {"incremental": 1.5, "roi_crop": 1.0}  # every chunk mixes blocks
    assert prior(14) == {"incremental": 0.5 + 0.5 * (1.5 - 0.5), "roi_crop": 1.0}  # half of them mix
    assert IncrementalRecompute._prior(check, chunk=1)(2)["incremental"] == 0.5  # a chunk is one item: one block
    no_one_block = {"blocks": [0, 1], "seconds": {"incremental": 1.0, "roi_crop": 2.0}}
    assert IncrementalRecompute._prior(no_one_block, chunk=8)(50) == {"incremental": 0.5, "roi_crop": 1.0}


def test_the_reference_blocks_cover_the_roi_the_crop_ring_and_the_rest():
    """The crop check's spare rows carry few items, so they are drawn in turn from the three kinds of block a
    window rule treats differently; the draw is the seed's alone."""
    from cem_lab.causal.grid import BlockGrid
    from cem_lab.causal.recompute import reference_blocks

    grid = BlockGrid(64, 64, 1, 8)
    boxes = [grid.box(i) for i in range(len(grid))]
    crop, roi = (8, 56, 8, 56), (24, 40, 24, 40)
    pick = reference_blocks(grid, boxes, crop, roi, 1, seed=3, n=6)
    assert len(pick) == 6 and list(pick) == sorted(pick)
    assert (pick == reference_blocks(grid, boxes, crop, roi, 1, seed=3, n=6)).all()
    b = np.array([boxes[i] for i in pick])
    under = (b[:, 0] < 40) & (b[:, 1] > 24) & (b[:, 2] < 40) & (b[:, 3] > 24)
    ring = ~under & ((b[:, 0] < 16) | (b[:, 1] > 48) | (b[:, 2] < 16) | (b[:, 3] > 48))
    assert under.sum() == 2 and ring.sum() == 2 and (~under & ~ring).sum() == 2
    assert set(pick) <= set(grid.blocks_touching(crop).tolist())


def test_beside_a_busy_process_no_step_of_a_map_runs_on_threads_nobody_chose(small_bank, monkeypatch, two_threads):
    """Beside a busy process any torch call on the default threads waits for a core: a check of 100,000 values
    took 150 ms on two threads and 0.2 ms on one. With the probes choosing one thread (as they do there) and the
    race kept to it, every model call of a traced incremental job (the crop check's full-image pass, the trace,
    the un-intervened maps, the items) and every finiteness check of its outputs runs on one thread, while
    torch's own count stays two."""
    from cem_lab.causal import job as job_module
    from cem_lab.causal import recompute

    seen: dict[str, list[int]] = {"model": [], "isfinite": []}

    class Residual(nn.Module):  # not a plain chain: the traced graph's path
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            seen["model"].append(torch.get_num_threads())
            return x + self.b(torch.relu(self.a(x)))

    isfinite = torch.isfinite

    def recorded(t):
        seen["isfinite"].append(torch.get_num_threads())
        return isfinite(t)

    monkeypatch.setattr(job_module, "probe_threads", lambda *a, **k: {"chosen": 1})
    monkeypatch.setattr(recompute, "probe_threads", lambda *a, **k: {"chosen": 1})
    monkeypatch.setattr(recompute, "thread_counts", lambda job: (1,))
    monkeypatch.setattr(torch, "isfinite", recorded)
    res = compute_cem(Residual(), _image(64), "dn", (24, 24, 16), patch_bank=small_bank, recompute="incremental", **KW)
    assert res.meta["mode"] == "crop" and "incremental_check" in res.meta, res.meta["notes"]
    assert seen["model"] and set(seen["model"]) == {1}, seen["model"]
    assert seen["isfinite"] and set(seen["isfinite"]) == {1}, seen["isfinite"]
    assert torch.get_num_threads() == 2


def test_a_runs_identity_does_not_follow_the_path_its_check_chose(small_bank, monkeypatch, tmp_path):
    """Whether incremental recompute's check declines it follows the machine's load; the run's identity must not:
    a study's finished map was refused ("another run") where a busier check had declined the strategy. The identity
    holds the strategy asked for; a map finished where the check declined it is read back where the check keeps
    it, and a checkpoint recorded under the earlier identity (none where declined) is this run's too."""
    from cem_lab.causal import recompute
    from cem_lab.causal.recompute import IncrementalRecompute

    model, kw = DnCNN(features=8, depth=4), {**KW, "recompute": "incremental", "patch_bank": small_bank}
    folder = tmp_path / "run"
    monkeypatch.setattr(IncrementalRecompute, "ONLY_WHEN_FASTER", True)
    monkeypatch.setattr(recompute, "RACE_DECISIVE", 0.0)  # every check finds it decisively slower: declined
    declined = compute_cem(model, _image(64), "dn", (24, 24, 16), output_dir=folder, **kw)
    assert any("not used" in n for n in declined.meta["notes"])
    monkeypatch.setattr(IncrementalRecompute, "ONLY_WHEN_FASTER", False)  # kept, whatever its times
    job = prepare_cem(
        model, _image(64), "dn", (24, 24, 16), **{k: v for k, v in kw.items() if k not in ("progress", "figures")}
    )
    assert job.recompute.name == "incremental"
    assert job.fingerprint() == declined.meta["fingerprint"] and job.check_folder(folder) == "complete"
    again = compute_cem(model, _image(64), "dn", (24, 24, 16), output_dir=folder, **kw)
    np.testing.assert_array_equal(again.effect_raw, declined.effect_raw)  # read back, not recomputed
    # a checkpoint of the earlier identity (a declined strategy recorded none) is accepted
    from cem_lab.run_format import read_state, state_path, write_state

    state = read_state(state_path(folder))
    (legacy,) = job.fingerprint_also()
    write_state(state_path(folder), {**state, "fingerprint": np.array(legacy)})
    assert legacy != job.fingerprint() and job.check_folder(folder) == "complete"
    write_state(state_path(folder), {**state, "fingerprint": np.array("another run")})
    with pytest.raises(Exception, match="holds a run with other settings"):
        job.check_folder(folder)
