"""Config -> objects: the model, the patch bank, the device, the input crop and the ROI of a run.

Every builder checks what it builds and refuses a bad value with a user error that names the key
and the fix, before anything is written.
"""

from __future__ import annotations

import inspect
import logging
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cem_lab.bookkeeping.clean_errors import one_line, unwrap_user_error
from cem_lab.causal.roi_placement import place_roi
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S, check_checkpoint_cadence
from cem_lab.errors import InputError
from cem_lab.images import load_image
from cem_lab.io import file_sha256
from cem_lab.models.authors.catalogue import AuthorsModelError
from cem_lab.models.authors.catalogue import entry as authors_entry
from cem_lab.models.checkpoint import CheckpointError, load_model, load_weights
from cem_lab.models.official import catalogue_ids as official_ids
from cem_lab.models.pretrained import catalogue_ids
from cem_lab.models.zoo import ZooError, read_zoo_entry
from cem_lab.run_format import crop_name
from cem_lab.tasks import Task, make_task
from cem_lab.tasks.base import task_label

log = logging.getLogger("cem_lab")


def instantiate_checked(node: Any, key: str | None = None, *, calls_only: bool = False) -> Any:
    """``hydra.utils.instantiate``, with a user error raised by the target's constructor or loader
    (unknown zoo name, bad knob, malformed patch bank) reported as itself, not wrapped by Hydra.

    With ``key`` (the node's place in the config, e.g. ``cem.estimator``), any other failure to build
    the node (a ``_target_`` that does not import, a keyword the class does not take, a value of the
    wrong type) is a user error too, naming the key and the target; with ``calls_only`` only a target
    that cannot be called as the node says (it does not import, or a keyword its signature does not
    take) is, and a failure inside the target keeps its traceback (a model's constructor)."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        user = unwrap_user_error(err)
        if user is not None:
            raise user from None
        if key is None:
            raise
        target = node.get("_target_") if hasattr(node, "get") else None
        cause = err.__cause__ if err.__cause__ is not None else err
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if calls_only:
            mismatch = _call_mismatch(node)
            if mismatch is None:
                raise
            raise InputError(
                f"{key}: cannot call {target}: {mismatch}; check {key}._target_ and its keywords"
            ) from None
        raise InputError(
            f"{key}: cannot build {target or 'the object'} ({type(cause).__name__}: {reason}); check "
            f"{key}._target_ and its keywords"
        ) from None


def _call_mismatch(node: DictConfig) -> str | None:
    """Why the ``_target_`` of ``node`` cannot be called with its keywords at all (it does not import, or
    its signature does not take them), or None when it can (the failure was inside the call)."""
    target = str(node.get("_target_"))
    try:
        obj = pkgutil.resolve_name(target)
    except Exception as err:  # ImportError, AttributeError, or any error of the module's own import
        return f"it does not import ({one_line(str(err)) or type(err).__name__})"
    keywords = {str(k): None for k in node.keys() if not str(k).startswith("_")}
    try:
        inspect.signature(obj).bind(**keywords)
    except TypeError as err:
        return str(err)
    except ValueError:  # no signature to read (a builtin)
        return None
    return None


def build_node(value: Any, key: str) -> Any:
    """A config value that may be an object's ``_target_`` node: the object built from it (checked as by
    :func:`instantiate_checked`), else the value itself (a built-in's short name, e.g. ``cem.sampler=uniform``)."""
    if isinstance(value, DictConfig) and "_target_" in value:
        return instantiate_checked(value, key)
    return value


def build_model(cfg: DictConfig):
    """The model from a `model` config: `net` (a `_target_`, e.g. an architecture detected by spandrel,
    model=auto) with an optional `checkpoint`, or a saved cem_lab model (`path`, model=file)."""
    if "path" in cfg.keys() and OmegaConf.is_missing(cfg, "path"):  # `in` is False for a ??? value
        raise CheckpointError(
            "this model needs its file: model.path=PATH (model=auto: a checkpoint of an official "
            "architecture, .pth/.pt/.ckpt/.safetensors; model=file: a cem_lab .safetensors)"
        )
    if "id" in cfg.keys() and OmegaConf.is_missing(cfg, "id"):
        if "official" in str(OmegaConf.select(cfg, "net._target_", default="")):
            raise CheckpointError(
                f"model=official needs the checkpoint: model.id=NAME, one of {', '.join(official_ids())} "
                "(python -m cem_lab.models.official says what each is)"
            )
        raise CheckpointError(
            f"model=pretrained needs the network: model.id=NAME, one of {', '.join(catalogue_ids())} "
            "(cem-pretrained list says what each is)"
        )
    if cfg.get("net") is None:
        return load_model(cfg.path)
    net = instantiate_checked(cfg.net, "model.net", calls_only=True)
    ckpt = cfg.get("checkpoint")
    if ckpt:
        report = load_weights(net, ckpt)
        log.info("loaded %s", report)
        if getattr(net, "model_info", None) is None:  # recorded in summary.json
            net.model_info = {
                "class": f"{type(net).__module__}.{type(net).__qualname__}",
                "parameters": int(sum(p.numel() for p in net.parameters())),
                "checkpoint": str(ckpt),
                "sha256": file_sha256(ckpt),
            }
    return net


def build_task(node: DictConfig) -> Task:
    """The task of a `task` config: a ``_target_`` node (conf/task/), or the name form of configs written
    before tasks had targets (``{name: dn, sigma: 50}``)."""
    if "_target_" in node:
        task = instantiate_checked(node, "task")
    else:
        task = make_task(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    if not isinstance(task, Task):
        raise InputError(
            f"task._target_ built a {type(task).__name__}, not a cem_lab.tasks.Task; point it at a Task subclass"
        )
    return task


def build_patch_bank(cfg: DictConfig):
    """The patch bank of a `patches` config (conf/patches/)."""
    return instantiate_checked(cfg)


def checkpoint_cadence(cfg: DictConfig) -> tuple[float | None, int | None]:
    """``checkpoint.every_s`` and ``checkpoint.every_items``, checked."""
    ck = cfg.get("checkpoint") or {}
    every_s = ck.get("every_s", DEFAULT_CHECKPOINT_S)
    every_items = ck.get("every_items")
    check_checkpoint_cadence(every_s, every_items)
    return every_s, every_items


def check_model_task(model_cfg: DictConfig, task) -> None:
    """A zoo model (or a network of the paper's zoo) asked for a task it was not trained for is refused before
    anything is built (a study's list of models run on one task must not silently hold a denoiser among
    super-resolvers)."""
    if "models.authors" in str(OmegaConf.select(model_cfg, "net._target_", default="")):
        _check_authors_task(model_cfg, task)
        return
    if model_cfg.get("id") is None or "zoo" not in str(OmegaConf.select(model_cfg, "net._target_", default="")):
        return
    try:
        entry = read_zoo_entry(str(model_cfg.id))
    except ZooError:
        return  # the loader names the known models
    trained = list((entry.get("validation") or {}).get("tasks") or {})
    want = task_label(task)
    if trained and want not in trained and not model_cfg.get("allow_other_task", False):
        raise InputError(
            f"zoo model {model_cfg.id!r} was trained for {', '.join(trained)}, not {want}: pick a model "
            f"of this task (cem-zoo list), or set model.allow_other_task=true to map it off its task anyway"
        )


def _check_authors_task(model_cfg: DictConfig, task) -> None:
    try:
        e = authors_entry(str(model_cfg.get("name")))
    except AuthorsModelError:
        return  # the loader names the known networks
    want = str(task.describe().get("name"))
    if want not in e.tasks and not model_cfg.get("allow_other_task", False):
        raise InputError(
            f"{e.name} was trained for {e.task} (scale {e.scale}), not {want}: "
            f"pick a network of this task (docs/authors_zoo.md), or set model.allow_other_task=true to map it "
            f"off its task anyway"
        )


def crop_input(cfg: DictConfig, image: Any, name: str | None) -> tuple[Any, str | None]:
    """``image_crop``: a centre square of that side, or [top, left, height, width], cut from the clean image
    (and from the degraded input at its scale) before anything else; the image name records the crop."""
    spec = cfg.get("image_crop")
    if spec is None:
        return image, name
    if image is None:
        raise InputError(
            "image_crop cuts the clean image: give it (image=PATH or dataset=standard ...), or crop "
            "the degraded file yourself"
        )
    arr = load_image(image) if not hasattr(image, "shape") else image
    h, w = arr.shape[:2]
    cell = cfg.get("image_crop_cell")
    if cell is not None and not (isinstance(spec, int) and not isinstance(spec, bool)):
        raise InputError(f"image_crop_cell={cell} places a square crop: give image_crop a size, not {spec!r}")
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1 or spec > min(h, w):
            raise InputError(f"image_crop={spec} does not fit the {h}x{w} image; use a size in [1, {min(h, w)}]")
        top, left, ch, cw = (h - spec) // 2, (w - spec) // 2, spec, spec
        if cell is not None:
            top, left = _cell_crop(cfg, int(cell), spec, h, w)
    else:
        try:
            top, left, ch, cw = (int(v) for v in spec)
        except (TypeError, ValueError):
            raise InputError(
                f"image_crop must be a size (a centre square) or [top, left, height, width], got {spec!r}"
            ) from None
        if top < 0 or left < 0 or ch < 1 or cw < 1 or top + ch > h or left + cw > w:
            raise InputError(f"image_crop={[top, left, ch, cw]} lies outside the {h}x{w} image")
    if cfg.degraded is not None:
        raise InputError("image_crop with a degraded input (dataset=pair) is not supported: crop both files yourself")
    base = name or (Path(str(image)).stem if isinstance(image, (str, Path)) else "image")
    return arr[top : top + ch, left : left + cw].copy(), crop_name(base, top, left, ch, cw)


def _cell_crop(cfg: DictConfig, cell: int, size: int, h: int, w: int) -> tuple[int, int]:
    """Top-left of the ``size`` square centred in cell ``cell`` (row-major) of the ``image_crop_grid`` of an h x w
    image, moved inside the image where the cell is smaller than the square."""
    grid = cfg.get("image_crop_grid") or [2, 2]
    try:
        rows, cols = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise InputError(f"image_crop_grid must be [rows, cols], got {grid!r}") from None
    if rows < 1 or cols < 1 or not 0 <= cell < rows * cols:
        raise InputError(
            f"image_crop_cell={cell} is not a cell of the {rows}x{cols} image_crop_grid; use 0 to {rows * cols - 1}"
        )
    r, c = divmod(cell, cols)
    cy, cx = (2 * r + 1) * h // (2 * rows), (2 * c + 1) * w // (2 * cols)
    return min(max(0, cy - size // 2), h - size), min(max(0, cx - size // 2), w - size)


def resolve_roi(cfg: DictConfig, image: Any, task) -> tuple[Any, dict | None]:
    """``roi``: as given, or ``roi=placed``: ROI ``roi_place.index`` of ``roi_place.count`` by the seeded
    texture-strata rule of :mod:`cem_lab.causal.roi_placement`, on the clean image at output size. Returns
    the ROI and, for a placed one, the rule and its inputs (recorded in summary.json).

    The candidates' grid (``roi_place.align``) is the ROI size by default, so the ROIs do not move when
    a study compares block sizes; ``align=block`` follows ``cem.block`` (ROIs on the block grid of each
    run, placed apart for runs of other blocks)."""
    roi = cfg.roi
    if not (isinstance(roi, str) and roi == "placed"):
        return roi, None
    if image is None:
        raise InputError("roi=placed places ROIs on the clean image: give it (image=PATH), or give explicit rois")
    arr = load_image(image) if not hasattr(image, "shape") else np.asarray(image)
    arr = arr[: arr.shape[0] - arr.shape[0] % task.scale, : arr.shape[1] - arr.shape[1] % task.scale]
    rp = cfg.get("roi_place") or {}
    size = int(rp.get("size", 32))
    align = rp.get("align")
    if align == "block":
        align = int(cfg.cem.block)
    elif align is None:
        align = size
    elif isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise InputError(
            f"roi_place.align must be a positive number of output pixels, null (the ROI size) or block "
            f"(cem.block), got {align!r}"
        )
    inputs = {
        "size": size,
        "index": int(rp.get("index", 0)),
        "count": int(rp.get("count", 4)),
        "seed": int(rp.get("seed", 0)),
        "align": int(align),
        "margin": int(rp.get("margin", 0)),
    }
    placed = place_roi(arr, **inputs)
    log.info(
        "roi=placed: ROI %d of %d (texture stratum %.1f..%.1f, this ROI %.1f) at %s",
        placed.index + 1,
        placed.count,
        *placed.stratum,
        placed.texture,
        placed.as_list(),
    )
    return placed.as_list(), {**placed.describe(), "inputs": inputs}
