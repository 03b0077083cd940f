"""Causal effects of channels (cem_lab.causal.channels): known answers on a network whose channels are built to
carry all of the ROI's signal, none of it, or a harmful offset; the estimators, resume and batch-size invariance
of the input map; refusals in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cem_lab.causal.channels import ChannelError, ChannelJob, layer_outputs
from cem_lab.causal.settings import CEMSettings
from cem_lab.metrics import RoiMetric
from cem_lab.tasks.base import TaskInput

SIZE = 32
OFFSET = 51 / 255  # on the uint8 grid, as the metric's outputs are


class ThreeChannels(nn.Module):
    """``split`` makes three channels of the grey input: 0 = the grey image (all of the ROI's signal), 1 = the
    grey image again but never read (none of it), 2 = a constant ``OFFSET`` (added to the output: it hurts a
    ROI whose target is the grey image). The output is channel 0 + channel 2, in RGB."""

    def __init__(self):
        super().__init__()
        self.split = nn.Conv2d(3, 3, 1)
        self.merge = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.split.weight.zero_()
            self.split.weight[0, :, 0, 0] = 1 / 3
            self.split.weight[1, :, 0, 0] = 1 / 3
            self.split.bias.copy_(torch.tensor([0.0, 0.0, OFFSET]))
            self.merge.weight.zero_()
            self.merge.weight[:, 0, 0, 0] = 1.0
            self.merge.weight[:, 2, 0, 0] = 1.0

    def forward(self, x):
        return self.merge(self.split(x))


def grey(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(1, 1, SIZE, SIZE, generator=g) * 0.6
    v = torch.round(v * 255) / 255
    return v.expand(1, 3, SIZE, SIZE).contiguous()


#: the ground truth sits a little above the grey input, so that no output ever equals it (a finite PSNR)
LIFT = 13 / 255


def inputs(n_donors: int = 3):
    main = grey(0)
    return TaskInput(main, main + LIFT), [TaskInput(grey(k + 1), grey(k + 1) + LIFT) for k in range(n_donors)]


def psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    m = RoiMetric("psnr")
    return float(m(out, m.prepare(ref))[0])


ROI = (8, 8, 16)


def roi_of(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, 8:24, 8:24]


def test_the_known_answers_with_zeros():
    ti, _ = inputs()
    net = ThreeChannels()
    before = net(ti.input).detach()
    res = ChannelJob(net, ti, ROI, "split", value="zeros").run(progress=False)
    x, y = ti.input, ti.target
    m0 = psnr(roi_of(x + OFFSET), roi_of(y))
    assert res.baseline == pytest.approx(m0, abs=1e-9)
    # channel 0 carries all of the signal: without it the output is the offset alone
    assert res.raw_effect[0] == pytest.approx(m0 - psnr(roi_of(torch.full_like(x, OFFSET)), roi_of(y)), abs=1e-6)
    assert res.classification[0] == 1
    # channel 1 carries none: exactly no effect
    assert res.raw_effect[1] == 0.0 and res.classification[1] == 0
    # channel 2 hurts: without the offset the output is 13/255 from the target instead of 38/255 (-9.3 dB)
    assert res.raw_effect[2] == pytest.approx(m0 - psnr(roi_of(x), roi_of(y)), abs=1e-6)
    assert res.raw_effect[2] == pytest.approx(-20 * np.log10(OFFSET / LIFT - 1), abs=1e-3)
    assert res.classification[2] == -1
    assert res.ranking().tolist() == [0, 1, 2]
    frame = res.to_frame()
    assert list(frame["rank"]) == [1, 2, 3] and list(frame["class"]) == [1, 0, -1]
    # the hook is gone: the model gives, bit for bit, what it gave before the job (x + OFFSET up to the
    # rounding of the 1x1 convolutions' sums)
    assert torch.equal(net(x), before)
    torch.testing.assert_close(before, x + OFFSET)


def test_donor_values_average_over_the_population_exactly():
    ti, donors = inputs(3)
    net = ThreeChannels()
    res = ChannelJob(net, ti, ROI, "split", donors=donors, value="donor").run(progress=False)
    x, y = ti.input, ti.target
    m0 = psnr(roi_of(x + OFFSET), roi_of(y))
    want = np.mean([m0 - psnr(roi_of(d.input + OFFSET), roi_of(y)) for d in donors])
    assert res.n.tolist() == [3, 3, 3]  # one sample per donor, every donor once
    assert res.raw_effect[0] == pytest.approx(want, abs=1e-6)
    assert res.raw_effect[1] == 0.0  # any donor, no effect
    assert res.raw_effect[2] == 0.0  # a constant channel: every donor holds the same value
    assert np.isfinite(res.stderr[0]) and res.stderr[0] > 0
    # the mean value: one number per channel, the donors' average over images and positions
    mean = ChannelJob(net, ti, ROI, "split", donors=donors, value="mean").run(progress=False)
    level = float(torch.stack([d.input[0, 0] for d in donors]).mean())
    assert mean.n.tolist() == [1, 1, 1]
    assert mean.raw_effect[0] == pytest.approx(
        m0 - psnr(roi_of(torch.full_like(x, level + OFFSET)), roi_of(y)), abs=1e-5
    )


def test_a_channel_map_does_not_depend_on_batch_size_and_resumes(tmp_path):
    ti, donors = inputs(4)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    settings = CEMSettings(coarse=2, fine=4, tol=0.0, batch_size=3, forward_batch=2)
    kw = {"donors": donors, "settings": settings, "estimator": "coarse_to_fine"}
    whole = ChannelJob(net, ti, ROI, "1", **kw).run(progress=False)
    assert whole.meta["settings"]["estimator"]["name"] == "coarse_to_fine"
    other = ChannelJob(net, ti, ROI, "1", **{**kw, "settings": settings.replace(batch_size=5)}).run(progress=False)
    np.testing.assert_array_equal(whole.raw_effect, other.raw_effect)

    class Stop(Exception):
        pass

    calls = []

    def stop(info):
        calls.append(info)
        if len(calls) == 2:
            raise Stop

    job = ChannelJob(net, ti, ROI, "1", **kw)
    with pytest.raises(Stop):
        job.run(tmp_path, progress=False, on_batch=stop, checkpoint_every_items=1)
    resumed_job = ChannelJob(net, ti, ROI, "1", **kw)
    assert resumed_job.check_folder(tmp_path) == "partial"
    resumed = resumed_job.run(tmp_path, progress=False)
    np.testing.assert_array_equal(resumed.raw_effect, whole.raw_effect)
    assert any("resumed" in n for n in resumed.meta["notes"])
    # another layer is another run: its folder is refused
    with pytest.raises(Exception, match="another|different|fingerprint"):
        ChannelJob(net, ti, ROI, "0", **kw).check_folder(tmp_path)


def test_refusals_are_one_line():
    ti, donors = inputs(2)
    net = ThreeChannels()
    with pytest.raises(ChannelError, match="not a module"):
        ChannelJob(net, ti, ROI, "nope", donors=donors)
    with pytest.raises(ChannelError, match="needs donors"):
        ChannelJob(net, ti, ROI, "split")
    with pytest.raises(ChannelError, match="choose one of"):
        ChannelJob(net, ti, ROI, "split", value="noise")
    small = TaskInput(grey(5)[..., :16, :16], grey(5)[..., :16, :16])
    with pytest.raises(ChannelError, match="crop the population alike"):
        ChannelJob(net, ti, ROI, "split", donors=[small])
    with pytest.raises(ChannelError, match="every donor is the input"):
        ChannelJob(net, ti, ROI, "split", donors=[ti])

    shared = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(3, 3, 1), shared, nn.Conv2d(3, 3, 1), shared)
    with pytest.raises(ChannelError, match="runs 2 times"):
        ChannelJob(twice, ti, ROI, "1", value="zeros")


def test_layer_outputs_lists_the_feature_maps_in_order():
    net = ThreeChannels()
    rows = layer_outputs(net, grey(0))
    assert [(n, s[1], c) for n, s, c in rows] == [("split", 3, 1), ("merge", 3, 1)]


def test_donor_values_are_read_before_a_later_in_place_layer_changes_them():
    ti, donors = inputs(2)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 3, 3, padding=1))
    with torch.no_grad():
        net[0].bias.fill_(-0.3)
    job = ChannelJob(net, ti, ROI, "0", donors=donors, value="mean")
    with torch.no_grad():
        want = torch.stack([net[0](d.input)[0] for d in donors]).mean(dim=(0, 2, 3))
    assert (want < 0).any()  # some channel's mean is negative: a ReLU'd copy would say otherwise
    torch.testing.assert_close(job.channel_means, want, rtol=0, atol=1e-6)
