"""Every figure of a sweep report (and a run's own panel) is readable at the size it is drawn: no text box
overlaps another, none leaves the canvas, and matplotlib raises no warning while drawing (issue 25).

A realistic sweep is built once per module: toy networks under zoo names, long override-style run folders
(as a hydra multirun names them), several ROIs per model and two tasks, so that ``write_report`` draws all
its figures (cem_grid, shares, reach_vs_psnr, depth_width, single_vs_mixed, study_intervals,
distance_profile). The figures are caught as they are saved (``Figure.savefig`` wrapped) and drawn again
with the Agg renderer, recording each text as it is drawn; their boxes are then compared.
"""

from __future__ import annotations

import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from torch import nn

from cem_lab import compute_cem
from cem_lab.analysis.report import write_report
from cem_lab.analysis.study_tables import profile_bin_px

#: how far (px at the figure's dpi) two text boxes may overlap, or one may pass the canvas edge
_SLACK = 2.0

#: model name -> reach (px) of its toy stand-in; SR: one family over 2 depths x 2 widths (the depth_width
#: figure), DN: one architecture single-task and mixed (single_vs_mixed)
SR_MODELS = {"fsrcnn_d2_w16_x4": 12, "fsrcnn_d2_w32_x4": 14, "fsrcnn_d4_w16_x4": 20, "fsrcnn_d4_w32_x4": 24}
DN_MODELS = {
    "srresnet_dn": 9,
    "srresnet_mixed": 12,
    "edsr_baseline_finetuned_div2k_sigma50_last": 10,
}  # the last: not in the zoo
ROIS = {"sr": [(16, 16, 16), (32, 40, 16)], "dn": [(16, 16, 8), (40, 24, 8)]}


def _override_name(model: str, task: str, index: int) -> str:
    """A run folder named like a hydra multirun's override string (long; never fits a panel title)."""
    tail = "task.scale=4,task=sr" if task == "sr" else "task.sigma=50,task=dn"
    return (
        f"dataset=standard,image_crop=256,model.id={model},model=zoo,roi=placed,"
        f"roi_place.count=2,roi_place.index={index},standard.name=astronaut,{tail}"
    )


class Blur(nn.Module):
    """A fixed Gaussian blur of radius ``reach`` (after bilinear upsampling by ``scale``): a toy restorer whose
    effects spread over several blocks around the ROI, so that shares, reaches and profiles vary between runs."""

    def __init__(self, reach: int, scale: int = 1):
        super().__init__()
        g = torch.exp(-(torch.linspace(-2.0, 2.0, 2 * reach + 1) ** 2))
        w = g[:, None] * g[None, :]
        self.weight = nn.Parameter((w / w.sum()).expand(3, 1, *w.shape).clone(), requires_grad=False)
        self.reach, self.scale = reach, scale

    def forward(self, x):
        if self.scale > 1:
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return nn.functional.conv2d(nn.functional.pad(x, [self.reach] * 4, mode="replicate"), self.weight, groups=3)


class _Caught:
    """Figures as they are saved (path -> Figure) and the warnings raised meanwhile."""

    def __init__(self):
        self.figures: dict[str, Figure] = {}
        self.warnings: list[warnings.WarningMessage] = []


def _catching(caught: _Caught, mp: pytest.MonkeyPatch) -> None:
    original = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        caught.figures[Path(str(fname)).name if not hasattr(fname, "write") else repr(fname)] = fig
        return original(fig, fname, *args, **kwargs)

    mp.setattr(Figure, "savefig", savefig)


def _final_name(saved: str) -> str:
    """``cem_grid.png`` from the atomic writer's temporary name (e.g. ``.cem_grid.png.tmp123``)."""
    for name in ("cem_grid", "shares", "reach_vs_psnr", "single_vs_mixed", "study_intervals", "distance_profile"):
        if name in saved:
            return name
    if "depth_width" in saved:
        return "depth_width" + saved.split("depth_width", 1)[1].split(".png")[0]
    for name in ("cem_panel", "colorbar", "pie"):
        if name in saved:
            return name
    return saved


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, small_bank):
    """A 14-run sweep over two tasks, its report and the figures drawn for it (name -> Figure)."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[100:164, 200:264])
    root = tmp_path_factory.mktemp("layout_sweep")
    kw = dict(block=8, patch_bank=small_bank, estimator="exhaustive", samples=1, progress=False, figures=False)
    caught = _Caught()
    with pytest.MonkeyPatch.context() as mp:
        _catching(caught, mp)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            for task, models in (("sr", SR_MODELS), ("dn", DN_MODELS)):
                for model, reach in models.items():
                    for i, roi in enumerate(ROIS[task]):
                        compute_cem(
                            Blur(reach, 4 if task == "sr" else 1),
                            image,
                            task,
                            roi,
                            output_dir=root / "sweeps" / task / _override_name(model, task, i),
                            model_name=model,
                            **{
                                **kw,
                                "block": 8 if task == "sr" else 4,
                                "figures": model == "fsrcnn_d4_w32_x4" and i == 1,
                            },
                        )
            written = write_report([root], root / "report")
            caught.warnings = [w for w in rec if issubclass(w.category, UserWarning)]
    figures = {_final_name(k): f for k, f in caught.figures.items()}
    return written, figures, caught.warnings


def _drawn_texts(fig: Figure) -> tuple[list[Text], object]:
    """The texts that a draw of ``fig`` really renders (visible, non-empty, inside a drawn artist), with the renderer."""
    drawn: list[Text] = []
    original = Text.draw

    def draw(self, renderer):
        if self.get_visible() and self.get_text().strip() and self.figure is not None:
            drawn.append(self)
        return original(self, renderer)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Text, "draw", draw)
        fig.canvas.draw()
    return drawn, fig.canvas.get_renderer()


def layout_problems(fig: Figure) -> list[str]:
    """Each pair of drawn texts whose boxes overlap by more than ``_SLACK`` px, and each text that leaves the canvas."""
    texts, renderer = _drawn_texts(fig)
    boxes = [(t, t.get_window_extent(renderer)) for t in texts]
    canvas = fig.bbox
    problems = []
    for t, b in boxes:
        if (
            b.x0 < canvas.x0 - _SLACK
            or b.y0 < canvas.y0 - _SLACK
            or b.x1 > canvas.x1 + _SLACK
            or b.y1 > canvas.y1 + _SLACK
        ):
            problems.append(f"{t.get_text()!r} leaves the canvas ({_box(b)} outside {_box(canvas)})")
    for (t1, b1), (t2, b2) in combinations(boxes, 2):
        w = min(b1.x1, b2.x1) - max(b1.x0, b2.x0)
        h = min(b1.y1, b2.y1) - max(b1.y0, b2.y0)
        if w > _SLACK and h > _SLACK:
            problems.append(f"{t1.get_text()!r} overlaps {t2.get_text()!r} ({w:.0f}x{h:.0f} px)")
    return problems


def _box(b) -> str:
    return f"[{b.x0:.0f}, {b.y0:.0f}, {b.x1:.0f}, {b.y1:.0f}]"


REPORT_FIGURES = (
    "cem_grid",
    "shares",
    "reach_vs_psnr",
    "depth_width_fsrcnn_sr_x4",
    "single_vs_mixed",
    "study_intervals",
    "distance_profile",
)


def test_the_sweep_draws_every_report_figure(sweep):
    written, figures, _ = sweep
    assert set(REPORT_FIGURES) <= set(written["figures"]), sorted(written["figures"])
    assert set(REPORT_FIGURES) <= set(figures), sorted(figures)
    assert len(written["runs"]) == 14 and written["runs"]["task_label"].nunique() == 2


def test_drawing_the_report_raises_no_matplotlib_warning(sweep):
    _, _, caught = sweep
    assert not caught, [f"{w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})" for w in caught]


@pytest.mark.parametrize("name", REPORT_FIGURES + ("cem_panel", "pie", "colorbar"))
def test_no_text_overlaps_another_or_leaves_the_canvas(sweep, name):
    _, figures, _ = sweep
    assert name in figures, sorted(figures)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        problems = layout_problems(figures[name])
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_the_distance_profile_has_enough_bins(sweep):
    """Bins of a fraction of a block (from the ROI and block sizes): a profile resolves the few block rings
    around the ROI that hold most of the CE (bins of one block gave the walk's 32 px ROI three)."""
    written, _, _ = sweep
    profile = pd.read_csv(written["study_profile_csv"])
    shares = profile[profile["quantity"] == "mass_share"]
    for task, t in shares.groupby("task"):
        sizes = t.groupby("condition").size()
        assert sizes.min() >= 4 and sizes.max() >= 6, (task, sizes.to_dict())
    assert profile_bin_px(8, 32) == pytest.approx(8 / 3)  # the walk's sweep: 8 bins with CE instead of 3
    assert profile_bin_px(8, 16) == 2 and profile_bin_px(4, 64) == 4 and profile_bin_px(16, 8) == 4


def _figure_run(written) -> Path:
    runs = written["runs"]
    return Path(runs[(runs["model"] == "fsrcnn_d4_w32_x4")]["folder"].iloc[-1])


@pytest.mark.parametrize(
    "kind,range_",
    [("panel", "paper"), ("panel", 1000.0), ("overlay", "auto"), ("overlay", 1000.0), ("pie", "paper")],
)
def test_result_plot_is_readable(sweep, kind, range_):
    """``CEMResult.plot`` in each kind, and with a colour range so wide that the faint-map note is drawn."""
    from cem_lab.causal.result import CEMResult

    res = CEMResult.load(_figure_run(sweep[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fig = res.plot(kind=kind, range=range_)
        problems = layout_problems(fig)
    assert not problems, f"{kind} {range_}:\n" + "\n".join(problems)
    texts = [t.get_text() for t in _drawn_texts(fig)[0]]
    faint = [t for t in texts if "a tenth of the range" in t]
    assert bool(faint) == (range_ == 1000.0 and kind != "pie"), texts


@pytest.fixture(scope="module")
def finding_figures(sweep, tmp_path_factory):
    """The figures of the receptive-field and multi-task findings drawn for the sweep (name -> Figure)."""
    from cem_lab.analysis.finding_reports import finding_report

    out = tmp_path_factory.mktemp("layout_findings")
    caught = _Caught()
    with pytest.MonkeyPatch.context() as mp:
        _catching(caught, mp)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            drawn = {}
            for name in ("receptive_field", "multitask"):
                drawn.update(finding_report(name, sweep[0]["runs"], out)["figures"])
            caught.warnings = [w for w in rec if issubclass(w.category, UserWarning)]
    figures = {}
    for saved, fig in caught.figures.items():
        for name in drawn:
            if name in saved:
                figures[name] = fig
    return drawn, figures, caught.warnings


def test_the_findings_figures_are_readable(finding_figures):
    drawn, figures, caught = finding_figures
    assert len(drawn) >= 4 and set(drawn) <= set(figures), (sorted(drawn), sorted(figures))
    assert not caught, [f"{w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})" for w in caught]
    problems = {name: layout_problems(fig) for name, fig in figures.items()}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
