"""How figures are written and styled, set once: file formats, resolution, the colour range of CE maps, the
project's matplotlib theme and its colour-blind-safe palette.

A :class:`FigureStyle` comes from the ``figures`` setting (``figures=false``, ``figures.format=[png,pdf]``,
``figures.dpi=300``, ``figures.range=auto``) or from ``cem-report --format/--dpi/--range``. Drawing code
takes it in a ``with use_style(style):`` block: :func:`cem_lab.viz.canvas.save_figure` then writes every
format asked for, at the asked resolution, and the figures drawn inside the block get the project's theme
(:data:`THEME`). Outside such a block the defaults hold (PNG, each figure's own dpi, the paper's range).

Colour range of CE maps (``range``):

- ``"paper"`` (default): the task's fixed bound (SR 2.5 dB, DN 1 dB, DR 2 dB, the paper's convention), so
  that maps of different models and runs compare by colour;
- ``"auto"``: symmetric at the largest |CE| outside the ROI (over all panels of one figure);
- a number: that bound, in the map's unit.

When every effect outside the ROI is below a tenth of the range, a panel says so (:func:`faint_note`)
instead of showing a white map with no word said.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cem_lab.errors import InputError

__all__ = [
    "CATEGORICAL",
    "FORMATS",
    "STYLE_FILE",
    "OPTION_NAMES",
    "SETTING_NAMES",
    "TASK_COLOURS",
    "THEME",
    "TRAINING_COLOURS",
    "FigureStyle",
    "categorical",
    "current_style",
    "faint_note",
    "task_colour",
    "use_style",
]

#: the file formats a figure can be written in
FORMATS: tuple[str, ...] = ("png", "pdf", "svg")

#: beside a run's figures: the style they were drawn in (:meth:`FigureStyle.as_setting`)
STYLE_FILE = "style.json"

#: Okabe & Ito's colour-blind-safe qualitative palette (black left out: it is the axes' colour), for every
#: colour that is not the CE scale (models, tasks, training regimes)
CATEGORICAL: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#999999",  # grey
)

#: one colour per task, the same in every figure
TASK_COLOURS: dict[str, str] = {"sr": "#D55E00", "dn": "#0072B2", "dr": "#009E73", "jpeg": "#CC79A7"}

#: the project's matplotlib theme (rcParams), applied inside :func:`use_style`: readable small type, the
#: colour-blind-safe cycle, and vector output a journal accepts (TrueType fonts in PDF,
#: text kept as text in SVG)
THEME: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.prop_cycle": None,  # filled below (cycler is matplotlib's, imported lazily)
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "svg.hashsalt": "cem_lab",  # ids without a random salt: a redrawn SVG is byte-identical
}


def categorical(k: int) -> str:
    """The ``k``-th colour of :data:`CATEGORICAL` (cycling)."""
    return CATEGORICAL[k % len(CATEGORICAL)]


def task_colour(task: str, k: int = 0) -> str:
    """The colour of ``task`` (``sr``, ``dn`` ...; a label such as ``sr x4`` or ``sr_x4`` counts by its first
    word), else the ``k``-th categorical colour."""
    words = re.split(r"[\s_]+", str(task).strip().lower())
    return TASK_COLOURS.get(words[0] if words else "", categorical(k))


#: one colour per training regime (the multi-task study), the same in every figure
TRAINING_COLOURS: dict[str, str] = {
    "single-task": CATEGORICAL[0],
    "mixed": CATEGORICAL[1],
    "multi-in-one": CATEGORICAL[2],
}


@dataclass(frozen=True)
class FigureStyle:
    """How figures are written: ``formats`` (png, pdf, svg; the first is the one a report links), ``dpi``
    (None: each figure's own; the layout is in inches, so the dpi changes the pixels, not the layout), and
    ``range``, the colour range of CE maps (``"paper"``, ``"auto"`` or a positive number); ``label``, a template
    for the run labels of report figures."""

    formats: tuple[str, ...] = ("png",)
    dpi: int | None = None
    range: str | float = "paper"
    draw: bool = field(default=True, compare=False)
    #: a report's run labels from a template of run-table columns and settings (``"{model} b{block}"``;
    #: ``cem-report --label``); None: the model and what tells its runs apart
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", _check_formats(self.formats, SETTING_NAMES))
        object.__setattr__(self, "dpi", _check_dpi(self.dpi, SETTING_NAMES))
        object.__setattr__(self, "range", _check_range(self.range, SETTING_NAMES))

    @classmethod
    def from_options(
        cls, formats: Any, dpi: Any, range: Any, label: str | None = None, names: Mapping[str, str] | None = None
    ) -> FigureStyle:  # noqa: A002 - the option's own name
        """The style of a command's options (``--format png,pdf --dpi 300 --range auto --label ...``), a bad value
        refused in one line that names the option as ``names`` spell it (default: :data:`OPTION_NAMES`)."""
        names = OPTION_NAMES if names is None else names
        formats = formats.split(",") if isinstance(formats, str) else formats
        return cls(
            formats=_check_formats(formats, names),
            dpi=_check_dpi(dpi, names),
            range=_check_range(range, names),
            label=label or None,
        )

    @classmethod
    def from_setting(cls, value: Any) -> FigureStyle:
        """The style of a ``figures`` setting: ``true`` / ``false`` (draw or not, defaults otherwise), or a
        mapping with ``draw``, ``format`` (a name, a comma-separated string or a list), ``dpi``, ``range``."""
        if value is None or isinstance(value, bool):
            return cls(draw=value is not False)
        if isinstance(value, FigureStyle):
            return value
        if not isinstance(value, Mapping):
            try:  # an OmegaConf DictConfig
                from omegaconf import DictConfig, OmegaConf

                if isinstance(value, DictConfig):
                    value = OmegaConf.to_container(value, resolve=True)
            except ImportError:  # pragma: no cover - omegaconf is a dependency
                pass
        if not isinstance(value, Mapping):
            raise InputError(f"figures must be true, false or a mapping (figures.format=pdf ...), got {value!r}")
        unknown = set(value) - {"draw", "format", "dpi", "range"}
        if unknown:
            raise InputError(
                f"figures has no setting {', '.join(sorted(unknown))}; it takes draw, format, dpi and range"
            )
        fmt = value.get("format", "png")
        formats = fmt.split(",") if isinstance(fmt, str) else list(fmt or [])
        return cls(
            formats=tuple(formats),
            dpi=value.get("dpi"),
            range=value.get("range", "paper"),
            draw=bool(value.get("draw", True)),
        )

    def as_setting(self) -> dict[str, Any]:
        """The style as the plain mapping of the ``figures`` setting (what crosses to spawned processes)."""
        return {"draw": self.draw, "format": list(self.formats), "dpi": self.dpi, "range": self.range}

    def bound(self, paper_bound: float, effects: Iterable[np.ndarray], roi_masks: Iterable[np.ndarray] | None = None):
        """The colour bound of CE maps drawn together: the task's ``paper_bound``, the largest |CE| outside the
        ROIs (``auto``; the paper bound when every effect is 0), or the number asked for."""
        if self.range == "paper":
            return float(paper_bound)
        if self.range == "auto":
            peak = largest_effect(effects, roi_masks)
            return peak if peak > 0 else float(paper_bound)
        return float(self.range)


#: how the ``figures`` setting names its keys, and how a command's options name them (in refusals)
SETTING_NAMES: dict[str, str] = {"format": "figures.format", "dpi": "figures.dpi", "range": "figures.range"}
OPTION_NAMES: dict[str, str] = {"format": "--format", "dpi": "--dpi", "range": "--range"}


def _example(names: Mapping[str, str], key: str, value: str) -> str:
    name = names[key]
    return f"{name} {value}" if name.startswith("--") else f"{name}={value}"


def _check_formats(formats: Any, names: Mapping[str, str]) -> tuple[str, ...]:
    if isinstance(formats, str):  # "pdf" or "png,pdf", not its letters
        formats = formats.split(",")
    formats = tuple(dict.fromkeys(str(f).strip().lower().lstrip(".") for f in (formats or ()) if str(f).strip()))
    bad = [f for f in formats if f not in FORMATS]
    if not formats or bad:
        raise InputError(
            f"{names['format']} {', '.join(bad) or '(empty)'} is not one of {', '.join(FORMATS)}; "
            f"e.g. {_example(names, 'format', '[png,pdf]' if names['format'].startswith('figures') else 'png,pdf')}"
        )
    return formats


def _check_dpi(dpi: Any, names: Mapping[str, str]) -> int | None:
    if dpi is None:
        return None
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 30 <= dpi <= 2400:
        raise InputError(
            f"{names['dpi']} must be a number from 30 to 2400, got {dpi!r}; e.g. {_example(names, 'dpi', '300')}"
        )
    return int(dpi)


def _check_range(value: Any, names: Mapping[str, str]) -> str | float:
    if isinstance(value, str) and value.strip().lower() in ("paper", "auto"):
        return value.strip().lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
        raise InputError(
            f"{names['range']} must be paper (the task's fixed bound), auto (the largest |CE|) or a number > 0, "
            f"got {value!r}"
        )
    return number


def largest_effect(effects: Iterable[np.ndarray], roi_masks: Iterable[np.ndarray] | None = None) -> float:
    """The largest finite |effect| outside the ROIs over ``effects`` (0 when there is none)."""
    effects = list(effects)
    masks = list(roi_masks) if roi_masks is not None else [None] * len(effects)
    peak = 0.0
    for e, m in zip(effects, masks):
        e = np.abs(np.asarray(e, dtype=np.float64))
        if m is not None:
            e = e[~np.asarray(m, dtype=bool)]
        e = e[np.isfinite(e)]
        if e.size:
            peak = max(peak, float(e.max()))
    return peak


def faint_note(
    effects: Iterable[np.ndarray],
    roi_masks: Iterable[np.ndarray] | None,
    bound: float,
    unit: str,
    fix: str = "figures.range=auto",
) -> str:
    """A note for a map whose effects are all below a tenth of its colour range (it would look white), naming
    the largest and the ``fix``; ``""`` when some effect shows."""
    peak = largest_effect(effects, roi_masks)
    if peak >= 0.1 * bound:
        return ""
    return f"every |CE| below {0.1 * bound:.3g} {unit}, a tenth of the range (max {peak:.2g} {unit}): {fix}"


_STYLE: ContextVar[FigureStyle | None] = ContextVar("cem_lab_figure_style", default=None)
_DEFAULT = FigureStyle()


def current_style() -> FigureStyle:
    """The style of the innermost :func:`use_style` block (the defaults outside any)."""
    return _STYLE.get() or _DEFAULT


@contextlib.contextmanager
def use_style(style: FigureStyle | None = None) -> Iterator[FigureStyle]:
    """Draw and save figures with ``style`` (None: the current one) and the project's :data:`THEME`."""
    import matplotlib
    from cycler import cycler

    style = current_style() if style is None else style
    theme = dict(THEME, **{"axes.prop_cycle": cycler(color=list(CATEGORICAL))})
    token = _STYLE.set(style)
    try:
        with matplotlib.rc_context(theme):
            yield style
    finally:
        _STYLE.reset(token)
