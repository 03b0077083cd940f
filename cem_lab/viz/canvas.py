"""Figures without global state: a figure with its own Agg canvas, axes placed in inches, atomic writes in
the formats of the current style (:mod:`cem_lab.viz.style`).

Every file is written atomically (:func:`cem_lab.io.atomic_path`) and made readable (0644).
Figures are built with :class:`matplotlib.figure.Figure` and :class:`FigureCanvasAgg` directly,
so no global matplotlib / pyplot state is touched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from cem_lab.io import PathLike, atomic_path
from cem_lab.viz.style import FORMATS, current_style


def new_figure(width: float, height: float, dpi: int = 120) -> Figure:
    """A figure with its own Agg canvas (no pyplot, no global backend); axes are placed by hand."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def text_inches(fig: Figure, texts, fontsize: float) -> float:
    """The width in inches of the widest of ``texts`` (the longest line of each) at ``fontsize``, as ``fig`` draws
    them: for sizing a figure to its labels, so that a layout engine never has to squeeze the axes away."""
    renderer = fig.canvas.get_renderer()
    widths = [
        Text(0, 0, str(t), fontsize=fontsize, figure=fig).get_window_extent(renderer).width / fig.dpi for t in texts
    ]
    return max(widths, default=0.0)


def add_axes_in(fig: Figure, left: float, bottom: float, width: float, height: float) -> Axes:
    """Add axes at a position given in inches from the figure's bottom-left corner."""
    fw, fh = fig.get_size_inches()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))


def figure_path(path: PathLike, fmt: str) -> Path:
    """``path`` as a file of format ``fmt``: its suffix replaced when it names a format (``fig.png``), else the
    format appended (``rcan_s0.5`` -> ``rcan_s0.5.pdf``, not ``rcan_s0.pdf``)."""
    path = Path(path)
    if path.suffix.lstrip(".").lower() in FORMATS:
        return path.with_suffix(f".{fmt}")
    return path.with_name(f"{path.name}.{fmt}")


def save_figure(fig: Figure, path: PathLike) -> str:
    """Write ``fig`` at ``path`` in each format of the current style (:func:`cem_lab.viz.style.use_style`;
    PNG by default), each file atomically (mode 0644, white background): ``path``'s suffix is replaced by the
    format's (:func:`figure_path`). Returns the path of the first format's file."""
    style = current_style()
    written = []
    for fmt in style.formats:
        target = figure_path(path, fmt)
        with atomic_path(target) as tmp:
            # metadata without a date: a redrawn vector figure is byte-identical, so a paper's repository
            # sees no change where nothing changed
            fig.savefig(tmp, format=fmt, facecolor="white", dpi=style.dpi or "figure", metadata=_METADATA[fmt])
            _make_readable(tmp)
        written.append(str(target))
    return written[0]


_METADATA: dict[str, dict] = {
    "png": {"Software": "cem_lab (matplotlib)"},
    "pdf": {"Creator": "cem_lab (matplotlib)", "CreationDate": None},
    "svg": {"Creator": "cem_lab (matplotlib)", "Date": None},
}


def save_png(image: np.ndarray, path: PathLike) -> str:
    """Write an (H, W, 3) uint8 ``image`` as a PNG to ``path`` atomically (mode 0644); return the path."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
        _make_readable(tmp)
    return str(path)


def _make_readable(tmp: Path) -> None:
    """mkstemp creates 0600 files; give figures the usual 0644."""
    try:
        os.chmod(tmp, 0o644)
    except OSError:  # pragma: no cover - e.g. filesystems without modes
        pass
