"""How figures are written (cem_lab.viz.style): formats, resolution, colour range, the faint-map note, and
CEMResult.plot, which keeps matplotlib out of the causal core until it is called."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cem_lab import compute_cem
from cem_lab.errors import InputError
from cem_lab.viz.style import FigureStyle, faint_note, largest_effect


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A small denoising map whose effects reach one block around the ROI (a 9x9 box blur)."""
    from skimage import data

    from cem_lab.patches import PatchBank

    image = np.ascontiguousarray(data.astronaut()[100:164, 200:264])
    blur = nn.Conv2d(3, 3, 9, padding=4, padding_mode="replicate", groups=3, bias=False)
    with torch.no_grad():
        blur.weight.fill_(1 / 81)
    bank = PatchBank.embedded(patch_size=8, count=300, seed=1)
    return compute_cem(
        blur, image, "dn", (24, 24, 16), block=8, patch_bank=bank, estimator="exhaustive", samples=2, progress=False
    )


def test_the_figures_setting_is_read_and_checked():
    assert FigureStyle.from_setting(False).draw is False and FigureStyle.from_setting(True).draw is True
    s = FigureStyle.from_setting({"format": "png, PDF", "dpi": 300, "range": "Auto"})
    assert s.formats == ("png", "pdf") and s.dpi == 300 and s.range == "auto"
    assert FigureStyle.from_setting({"format": ["svg"], "range": "0.5"}).range == 0.5
    for bad, words in (
        ({"format": "jpg"}, "png, pdf, svg"),
        ({"dpi": 5}, "30 to 2400"),
        ({"range": "wide"}, "paper"),
        ({"range": 0}, "> 0"),
        ({"colour": "red"}, "takes draw, format, dpi and range"),
        ("pdf", "true, false or a mapping"),
    ):
        with pytest.raises(InputError, match=words.replace("(", r"\(")):
            FigureStyle.from_setting(bad)


def test_the_colour_range_and_the_faint_note():
    effect = np.array([[0.0, 0.02], [-0.3, 5.0]])
    roi = np.array([[False, False], [False, True]])  # the 5.0 is the ROI's own block: not counted
    assert largest_effect([effect], [roi]) == pytest.approx(0.3)
    assert FigureStyle(range="paper").bound(2.5, [effect], [roi]) == 2.5
    assert FigureStyle(range="auto").bound(2.5, [effect], [roi]) == pytest.approx(0.3)
    assert FigureStyle(range="auto").bound(2.5, [np.zeros((2, 2))], [roi]) == 2.5  # nothing to scale to
    assert FigureStyle(range=0.1).bound(2.5, [effect], [roi]) == pytest.approx(0.1)
    assert faint_note([effect], [roi], 2.5, "dB") == ""  # 0.3 >= 0.25
    note = faint_note([effect], [roi], 4.0, "dB")
    assert "below 0.4 dB" in note and "max 0.3 dB" in note and "figures.range=auto" in note


def test_every_format_is_written_and_opens(result, tmp_path):
    from cem_lab.viz.result_figures import save_result_figures

    written = save_result_figures(result, tmp_path, style=FigureStyle(formats=("pdf", "svg", "png"), dpi=200))
    assert written["cem_panel"].endswith("cem_panel.pdf")  # the first format is the one linked
    for stem in ("cem_panel", "pie", "colorbar"):
        for fmt in ("png", "pdf", "svg"):
            assert (tmp_path / f"{stem}.{fmt}").is_file(), (stem, fmt)
    pdfium = pytest.importorskip("pypdfium2", reason="pypdfium2 (the dev extra) renders the PDF")
    page = pdfium.PdfDocument(str(tmp_path / "cem_panel.pdf"))[0]
    png = np.asarray(Image.open(tmp_path / "cem_panel.png").convert("RGB"))
    rendered = np.asarray(page.render(scale=200 / 72).to_pil().convert("RGB"))
    assert abs(rendered.shape[0] - png.shape[0]) <= 2 and abs(rendered.shape[1] - png.shape[1]) <= 2
    assert rendered.std() > 20  # a drawing, not a blank page
    root = ET.parse(tmp_path / "cem_panel.svg").getroot()
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "causal effect map" in texts and "ROI PSNR" in texts  # text kept as text (svg.fonttype none)


def test_dpi_scales_the_pixels_not_the_layout(result, tmp_path):
    from cem_lab.viz.result_figures import save_result_figures

    save_result_figures(result, tmp_path / "a", style=FigureStyle(dpi=100))
    save_result_figures(result, tmp_path / "b", style=FigureStyle(dpi=300))
    a = Image.open(tmp_path / "a" / "cem_panel.png").size
    b = Image.open(tmp_path / "b" / "cem_panel.png").size
    assert b[0] == pytest.approx(3 * a[0], abs=2) and b[1] == pytest.approx(3 * a[1], abs=2)


def test_plot_returns_a_figure_and_draws_into_a_given_axes(result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert len(result.plot().axes) >= 4  # the panel: three images (one with its inset), colour bar, pie
    fig, axes = plt.subplots(1, 2)
    try:
        assert result.plot(ax=axes[0], kind="overlay") is fig
        assert result.plot(ax=axes[1], kind="pie") is fig
        assert axes[0].images and axes[1].patches
        title = axes[0].get_title()
        peak = largest_effect([result.effect], [result.roi_mask])
        assert "\u00b11 dB" in title  # DN: the paper's range
        result.plot(ax=axes[0], kind="overlay", range="auto")
        assert f"\u00b1{peak:.3g} dB" in axes[0].get_title()
    finally:
        plt.close(fig)
    with pytest.raises(InputError, match="figure of its own"):
        result.plot(ax=axes[0], kind="panel")
    with pytest.raises(InputError, match="panel, overlay, pie"):
        result.plot(kind="heatmap")


def test_the_causal_core_does_not_load_matplotlib():
    code = (
        "import sys, cem_lab.causal, cem_lab.api; from cem_lab.causal.result import CEMResult; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_returned_figure_shows_as_an_image_in_ipython(result):
    """Jupyter shows the cell's value by IPython's formatters; a figure built without pyplot has none until
    plot() registers it (else the notebook prints ``<Figure size ...>``)."""
    shell_mod = pytest.importorskip("IPython.core.interactiveshell", reason="IPython (the notebooks extra)")
    shell = shell_mod.InteractiveShell.instance()
    try:
        fig = result.plot(kind="pie")
        data, _ = shell.display_formatter.format(fig)
        assert "image/png" in data and len(data["image/png"]) > 1000
    finally:
        shell_mod.InteractiveShell.clear_instance()


def test_a_figure_path_keeps_a_dotted_name():
    from cem_lab.viz.canvas import figure_path

    assert figure_path("figs/row.png", "pdf").name == "row.pdf"
    assert figure_path("figs/rcan_s0.5", "pdf").name == "rcan_s0.5.pdf"  # not rcan_s0.pdf
    assert figure_path("figs/teaser", "svg").name == "teaser.svg"
    assert FigureStyle(formats="png,pdf").formats == ("png", "pdf")  # a string of formats, not its letters
