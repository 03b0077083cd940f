"""The paper's layouts (viz/paper_figures.py, analysis/paper_layouts.py, cem-figure): every layout is readable at the
size it is drawn (no text over another, none off the canvas, no matplotlib warning), the row shares one colour range
(auto: the largest |CE| of all its maps; paper: the task's bound), the formats asked for are written, and bad input is
refused in one line before anything is written."""

from __future__ import annotations

import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from test_figure_layout import Blur, layout_problems

from cem_lab import compute_cem
from cem_lab.analysis.paper_layouts import find_runs, write_figure
from cem_lab.causal.result import CEMResult
from cem_lab.cli.figure import main
from cem_lab.errors import InputError
from cem_lab.viz.canvas import new_figure, text_inches
from cem_lab.viz.paper_figures import fit_label, overlay_row, pie_row, teaser
from cem_lab.viz.style import FigureStyle, largest_effect, use_style

LONG = "edsr_baseline_finetuned_div2k_sigma50_last"
#: folder -> (model, task, reach of the toy blur): three networks on DN, the first one on SR too
RUNS = {
    "dn_edsr": (LONG, "dn", 6),
    "dn_rcan": ("rcan_channel_attention_none_sigma50_long_run", "dn", 3),
    "dn_swinir": ("swinir_lightweight_dn_sigma50_x1_patch64_window8", "dn", 10),
    "sr_edsr": (LONG, "sr", 6),
}
DN = ["dn_edsr", "dn_rcan", "dn_swinir"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_bank) -> Path:
    """Four finished runs (a rectangular 48x64 crop, 8 px blocks), a folder each under the returned root."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[100:148, 200:264])
    root = tmp_path_factory.mktemp("paper_layouts")
    for folder, (model, task, reach) in RUNS.items():
        compute_cem(
            Blur(reach, 4 if task == "sr" else 1),
            image,
            task,
            (16, 24, 16),
            block=8,
            patch_bank=small_bank,
            estimator="exhaustive",
            samples=2,
            progress=False,
            output_dir=root / folder,
            model_name=model,
            figures=False,
        )
    return root


def _load(root: Path, names) -> list[CEMResult]:
    return [CEMResult.load(root / n) for n in names]


def _readable(fig) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        problems = layout_problems(fig)
    assert not problems, "\n".join(problems)


def _layouts(root: Path):
    dn = _load(root, DN)
    names = [r.meta["model"] for r in dn]
    return {
        "row": lambda: overlay_row(dn, names),
        "row with context": lambda: overlay_row(dn, names, context=True, title="three networks, one ROI"),
        "row of one": lambda: overlay_row(dn[:1], names[:1]),
        "teaser": lambda: teaser(
            {"sr x4": CEMResult.load(root / "sr_edsr"), "dn \u03c350": dn[0]}, title=f"{LONG}: one network"
        ),
        "pie": lambda: pie_row(dn, names),
        "pie of one": lambda: pie_row(dn[:1], names[:1]),
    }


@pytest.mark.parametrize("range_", ["paper", "auto", 50.0])
def test_every_layout_is_readable(runs, range_):
    """At range 50 every effect is below a tenth of the range: the faint-map note is drawn and must fit too."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with use_style(FigureStyle(range=range_)):
            figures = {name: draw() for name, draw in _layouts(runs).items()}
    for name, fig in figures.items():
        try:
            _readable(fig)
        except AssertionError as err:
            raise AssertionError(f"{name} at range {range_}: {err}") from None
    if range_ == 50.0:
        texts = [t.get_text() for t in figures["row"].texts]
        assert any("a tenth of the range" in t for t in texts), texts


def test_a_long_model_name_wraps_within_its_column_and_keeps_every_character():
    fig = new_figure(4, 3)
    label = fit_label(fig, LONG, 1.6, 8.5)
    assert label.replace("\n", "") == LONG and label.count("\n") >= 1
    assert all(text_inches(fig, [line], 8.5) <= 1.6 for line in label.split("\n"))
    assert fit_label(fig, "every |CE| below 5 dB: --range auto", 1.2, 8).count("--range") == 1  # never "--\nrange"
    cut = fit_label(fig, "x_" * 80, 1.0, 8, max_lines=3)
    assert cut.count("\n") == 2 and "\u2026" in cut


def _colorbar_bound(fig) -> float:
    """The bound of the figure's one colour bar (its axes run from -bound to +bound)."""
    bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(bars) == 1, f"{len(bars)} colour bars"
    low, high = bars[0].get_xlim()
    assert low == pytest.approx(-high)
    return high


def test_the_row_shares_one_colour_range(runs):
    dn = _load(runs, DN)
    names = [r.meta["model"] for r in dn]
    with use_style(FigureStyle(range="auto")):
        auto = _colorbar_bound(overlay_row(dn, names))
    peak = largest_effect([r.effect for r in dn], [r.roi_mask for r in dn])
    assert auto == pytest.approx(peak) and peak > 0
    assert peak > max(largest_effect([r.effect], [r.roi_mask]) for r in dn[1:])  # the row's, not each map's
    with use_style(FigureStyle(range="paper")):
        paper = _colorbar_bound(overlay_row(dn, names))
    assert paper == pytest.approx(dn[0].meta["display_bound"]) == pytest.approx(1.0)  # DN: the paper's 1 dB


def test_cem_figure_writes_each_format_asked_for(runs, tmp_path, capsys):
    out = tmp_path / "figs" / "row.png"
    assert main(["row", *(str(runs / n) for n in DN), "--out", str(out), "--format", "pdf,svg", "--range", "auto"]) == 0
    printed = capsys.readouterr().out.split()
    pdf, svg = out.with_suffix(".pdf"), out.with_suffix(".svg")
    assert printed == [str(pdf), str(svg)]
    assert sorted(p.name for p in out.parent.iterdir()) == ["row.pdf", "row.svg"]
    assert pdf.read_bytes().startswith(b"%PDF")
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_cem_figure_draws_every_layout_from_folders(runs, tmp_path, capsys):
    """A folder above run folders stands for its runs; --out's suffix gives the format; --labels replaces names."""
    out = tmp_path / "out"
    assert main(["pie", str(runs), "--mixed-tasks", "--out", str(out / "pie.svg")]) == 0
    assert main(["teaser", str(runs / "sr_edsr"), str(runs / "dn_edsr"), "--out", str(out / "teaser.png")]) == 0
    assert main(["panel", str(runs / "dn_rcan"), "--out", str(out / "panel.png")]) == 0
    labels = "EDSR,RCAN without channel attention,SwinIR"
    assert main(["row", *(str(runs / n) for n in DN), "--labels", labels, "--out", str(out / "row.png")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["panel.png", "pie.svg", "row.png", "teaser.png"]
    assert len(capsys.readouterr().out.splitlines()) == 4


def _refused(args, capsys, *words) -> None:
    with pytest.raises(SystemExit) as exit_:
        code = main(args)
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("cem-figure: error: ") and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


def test_cem_figure_refuses_bad_input_in_one_line_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    (empty / "notes.txt").write_text("no map here")
    _refused(["row", str(empty), "--out", str(out / "a.png")], capsys, "no finished CEM run", "summary.json")
    _refused(["row", str(runs), "--out", str(out / "b.png")], capsys, "mixes tasks", "sr", "dn", "--mixed-tasks")
    _refused(["row", *(str(runs / n) for n in DN), "--labels", "a,b", "--out", str(out / "c.png")], capsys, "2 label")
    _refused(["teaser", str(runs), "--out", str(out / "d.png")], capsys, "one network")
    _refused(["panel", str(runs), "--out", str(out / "e.png")], capsys, "a panel is one run")
    _refused(["row", str(runs / "dn_edsr"), "--out", str(out / "f.jpg")], capsys, ".jpg", "png, pdf, svg")
    _refused(["row", str(runs / "dn_edsr"), "--range", "wide", "--out", str(out / "g.png")], capsys, "--range")
    _refused(
        ["row", str(runs), "--where", "task=jpeg", "--out", str(out / "h.png")], capsys, "no run matches", "dn, sr"
    )
    _refused(["row", str(runs), "--where", "widht=3", "--out", str(out / "i.png")], capsys, "widht", "columns: run")
    _refused(["row", str(runs), "--where", "task", "--out", str(out / "j.png")], capsys, "KEY=PATTERN")
    assert not out.exists()


def test_where_picks_runs_out_of_a_folder_by_column_or_setting(runs, tmp_path, capsys):
    from cem_lab.analysis.paper_layouts import find_runs, select_runs

    table = find_runs([runs]).table
    dn = select_runs(table, ["task=dn"])
    assert len(dn) == len(DN) and set(dn["task"]) == {"dn"}
    assert list(select_runs(table, ["task=dn", "model=*rcan*"])["model"]) == [RUNS["dn_rcan"][0]]
    assert len(select_runs(table, ["estimator.samples=2"])) == len(table)  # a setting of the runs
    out = tmp_path / "dn_row.png"
    assert main(["row", str(runs), "--where", "task=dn", "--out", str(out)]) == 0 and out.is_file()


def test_an_unfinished_run_folder_is_named(runs, tmp_path):
    half = tmp_path / "half"
    half.mkdir()
    (half / "state.npz").write_bytes(b"")  # a run that was interrupted
    with pytest.raises(InputError, match="not a finished run"):
        find_runs([half])
    with pytest.raises(InputError, match="one label per run"):
        write_figure("row", [runs / n for n in DN], tmp_path / "x.png", labels=["a"])
    assert not (tmp_path / "x.png").exists()


def test_help_does_not_import_matplotlib_or_torch():
    code = (
        "import sys\nfrom cem_lab.cli.figure import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('matplotlib', 'torch', 'pandas') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "cem-figure row" in p.stdout and p.stdout.strip().splitlines()[-1] == "[]", p.stdout[-500:]


def test_the_findings_teaser_is_drawn_by_the_paper_layout(runs, tmp_path):
    from cem_lab.analysis.finding_figures import plot_teaser

    table = find_runs([runs / "sr_edsr", runs / "dn_edsr"]).table
    drawn = {}
    original = teaser

    def spy(*args, **kwargs):
        drawn["fig"] = original(*args, **kwargs)
        return drawn["fig"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cem_lab.analysis.finding_figures.teaser", spy)
        path = plot_teaser(table, LONG, tmp_path / "teaser.png")
    assert Path(path).is_file() and "fig" in drawn
    _readable(drawn["fig"])
