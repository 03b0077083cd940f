"""The causal core's entry points: prepare a map (:func:`prepare_cem`), run it (:func:`run_cem`), or
both with a locked run folder (:func:`compute_cem`). Figures are not the core's: ``cem_lab.compute_cem``
(:mod:`cem_lab.api`) adds them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cem_lab.causal.executors import BatchInfo, UnitExecutor
from cem_lab.causal.grid import Roi
from cem_lab.causal.job import CEMJob
from cem_lab.causal.result import CEMResult
from cem_lab.causal.settings import DEFAULT_CHECKPOINT_S, CEMSettings, check_checkpoint_cadence
from cem_lab.errors import InputError
from cem_lab.folder_lock import hold_run_folder
from cem_lab.images import ImageLike, from_uint8, read_image
from cem_lab.tasks import Task, crop_to_scale, make_task, seed_from_name

log = logging.getLogger("cem_lab")

#: called with the saved result and its folder once it is saved (in the folder's lock, main process)
OnSaved = Callable[[CEMResult, Path], Any]


def _read_input(image: ImageLike, name: str, notes: list[str]):
    """An image as a (1, 3, H, W) float tensor; every change made to it is added to ``notes``."""
    arr, changes = read_image(image, name=name)
    notes.extend(changes)
    return from_uint8(arr)


def _to_scale(image: Tensor, scale: int, name: str, notes: list[str]) -> Tensor:
    cut = crop_to_scale(image, scale)
    if cut.shape[-2:] != image.shape[-2:]:
        notes.append(
            f"{name}: {image.shape[-2]}x{image.shape[-1]} cut to {cut.shape[-2]}x{cut.shape[-1]} "
            f"(height and width must be multiples of the scale x{scale}; the top-left part is kept)"
        )
    return cut


def prepare_cem(
    model: nn.Module,
    image: ImageLike | None,
    task: Task | str,
    roi,
    *,
    settings: CEMSettings | None = None,
    degraded: ImageLike | None = None,
    patch_bank=None,
    image_seed: int | None = None,
    device: Any = None,
    image_name: str | None = None,
    model_name: str | None = None,
    blocks: Sequence[int] | None = None,
    full_output: Tensor | None = None,
    roi_placement: dict | None = None,
    **keywords: Any,
) -> CEMJob:
    """The checked :class:`~cem_lab.causal.job.CEMJob` of :func:`compute_cem` (same arguments), with
    nothing written. ``roi_placement``: how the ROI was chosen, when a rule chose it (recorded in
    summary.json as ``roi_placement``: the rule and its inputs, so that a report can tell why two runs'
    ROIs differ).

    ``settings``: a :class:`~cem_lab.causal.settings.CEMSettings`, or its fields as keywords
    (``block``, ``estimator``, ``coarse``, ``fine``, ``tol``, ... and ``estimator_options``, the
    adaptive options as a dict), not both. Every check of the input happens here (images, ROI,
    block, model output); the changes made to the user's input (a grey image made RGB, a 16-bit
    image scaled to 8 bits, an SR image cut to a multiple of the scale) are logged once and listed
    in ``job.notes`` (summary.json's notes).
    """
    if settings is not None and keywords:
        raise InputError(f"give the settings as settings= or as keywords, not both (got {sorted(keywords)} too)")
    settings = settings if settings is not None else CEMSettings.from_keywords(**keywords)
    if isinstance(task, str):
        task = make_task(task)
    roi = Roi.parse(roi)
    name = image_name or (
        Path(image).name
        if isinstance(image, (str, Path))
        else Path(degraded).name
        if isinstance(degraded, (str, Path))
        else "image"
    )
    notes: list[str] = []
    clean = None
    if image is not None:
        clean = _read_input(image, "image" if not isinstance(image, (str, Path)) else str(image), notes)
    if image_seed is None:
        image_seed = seed_from_name(name) if task.name == "dr" else 0
    if degraded is not None:
        where = "degraded input" if not isinstance(degraded, (str, Path)) else str(degraded)
        deg = _read_input(degraded, where, notes)
        # recorded in summary.json's notes: which file the model was given (the task's degradation is not applied)
        notes.append(f"the model's input is {where}, as given (the task's own degradation is not applied)")
        if clean is not None and tuple(clean.shape[-2:]) != (deg.shape[-2] * task.scale, deg.shape[-1] * task.scale):
            clean = _to_scale(clean, task.scale, "image", notes)
        task_input = task.prepare(clean, image_seed, degraded=deg)
    else:
        if clean is None:
            raise InputError("give an image (the clean ground truth) or a degraded input")
        clean = _to_scale(clean, task.scale, "image", notes)
        task_input = task.prepare(clean, image_seed)
    for note in notes:  # before the preparation (minutes for a large network): the user learns of it first
        log.info("input: %s", note)
    job = CEMJob(
        model,
        task,
        task_input,
        roi,
        settings,
        patch_bank=patch_bank,
        device=device,
        image_name=name,
        model_name=model_name,
        blocks=blocks,
        full_output=full_output,
    )
    job.notes[:0] = [f"input: {n}" for n in notes]
    job.roi_placement = dict(roi_placement) if roi_placement else None
    return job


def compute_cem(
    model: nn.Module,
    image: ImageLike | None,
    task: Task | str,
    roi,
    *,
    output_dir: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[BatchInfo], None] | None = None,
    executor: UnitExecutor | None = None,
    lock_folder: bool = True,
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
    checkpoint_every_items: int | None = None,
    on_saved: OnSaved | None = None,
    **kwargs: Any,
) -> CEMResult:
    """Compute the causal effect map of ``model`` for the ROI of one image.

    ``image``: the clean image (ground truth); the task degrades it into the model input. To use
    your own degraded input (a real noisy photo), pass it as ``degraded`` and its ground truth as
    ``image`` (or ``image=None`` with ``metric="output_change"``). ``roi`` = (top row, left column,
    size) in output pixels. The map's settings (``block`` in output pixels, the estimator and its
    counts, the intervention, the metric, ...) are a :class:`~cem_lab.causal.settings.CEMSettings`
    given as ``settings=`` or as keywords (``estimator``: "coarse_to_fine" (default; ``coarse``,
    ``fine``, ``tol``), "exhaustive" (``samples`` per block) or "adaptive" (``coarse``, ``tol``,
    ``fine`` (the ROI blocks' reference draws) and ``estimator_options``: round_size, growth,
    max_samples, half_width, settled_half_width, level, roi_blocks; see
    :class:`~cem_lab.causal.estimators.AdaptiveEstimator`). ``patch_bank``: a
    :class:`~cem_lab.patches.PatchBank` (default: the embedded bank). With ``output_dir`` the run is
    checkpointed there (every ``checkpoint_every`` seconds or ``checkpoint_every_items`` items),
    resumed when rerun, and saved (numbers and images; ``on_saved(result, folder)`` is then called,
    e.g. to draw figures); the folder is locked for the run (:mod:`cem_lab.folder_lock`: another
    process's run in it is refused, and a refused run leaves no folder behind; ``lock_folder=False``
    when the caller holds it). ``blocks`` restricts the work to some flat block indices (the others
    are reported as NaN, count 0). ``batch_size`` items are built and recorded together (the unit of
    work; it does not change the result); the model always runs on ``forward_batch`` inputs at a
    time, which is part of the computation (another value can change float rounding, so it is part
    of the run's identity); ``forward_batch="auto"`` takes the largest power of two that fits the GPU
    (8 on a CPU). ``executor`` spreads the work units over processes (see
    ``cem_lab.parallel.fabric``). The other keywords are those of :func:`prepare_cem`.
    """
    check_checkpoint_cadence(checkpoint_every, checkpoint_every_items)
    main = executor is None or executor.is_main
    hold = (
        hold_run_folder(output_dir, what="a cem_lab map")
        if output_dir is not None and lock_folder and main
        else nullcontext()
    )
    with hold:
        job = prepare_cem(model, image, task, roi, **kwargs)
        if output_dir is not None:
            job.check_folder(output_dir)
        return run_cem(
            job,
            output_dir,
            progress=progress,
            on_batch=on_batch,
            executor=executor,
            checkpoint_every=checkpoint_every,
            checkpoint_every_items=checkpoint_every_items,
            on_saved=on_saved,
        )


def run_cem(
    job: CEMJob,
    output_dir: str | Path | None = None,
    *,
    progress: bool = True,
    on_batch: Callable[[BatchInfo], None] | None = None,
    executor: UnitExecutor | None = None,
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_S,
    checkpoint_every_items: int | None = None,
    on_saved: OnSaved | None = None,
) -> CEMResult:
    """Run a prepared job (:func:`prepare_cem`) and save its result in ``output_dir`` (the main
    process only; then ``on_saved(result, folder)``); the caller holds the folder's lock."""
    result = job.run(
        output_dir,
        progress=progress,
        on_batch=on_batch,
        executor=executor,
        checkpoint_every=checkpoint_every,
        checkpoint_every_items=checkpoint_every_items,
    )
    if output_dir is not None and (executor is None or executor.is_main):
        result.save(output_dir)
        if on_saved is not None:
            on_saved(result, Path(output_dir))
    return result
