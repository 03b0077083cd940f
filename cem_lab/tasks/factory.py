"""A task by name, or from the description a run folder stored: the one name -> class table."""

from __future__ import annotations

from cem_lab.tasks.base import Task, TaskError
from cem_lab.tasks.denoise import DenoiseTask
from cem_lab.tasks.derain import DerainTask
from cem_lab.tasks.jpeg import JpegTask
from cem_lab.tasks.super_resolution import SuperResolutionTask

#: Every task, by the name its ``describe()`` stores (``conf/task/<name>.yaml``).
TASKS: dict[str, type[Task]] = {"sr": SuperResolutionTask, "dn": DenoiseTask, "dr": DerainTask, "jpeg": JpegTask}


def make_task(name: str, **kwargs) -> Task:
    """Build a task by name: "sr" (scale), "dn" (sigma, rounding), "dr" (preset), "jpeg" (quality,
    scale, subsampling, footprint)."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)


def task_from_description(description: dict) -> Task:
    """The task that ``Task.describe()`` described (as stored in run folders and model YAMLs):
    ``task_from_description(t.describe())`` rebuilds ``t``. Keys that ``describe`` derives (the
    scale 1 of DN / DR, the bicubic kernel of SR) are checked and dropped."""
    d = dict(description)
    name = d.pop("name", None)
    if name == "sr":
        kernel = d.pop("kernel", "bicubic")
        if kernel != "bicubic":
            raise TaskError(f"sr: only the bicubic kernel is implemented, got {kernel!r}")
    elif name in ("dn", "dr"):
        scale = d.pop("scale", 1)
        if scale != 1:
            raise TaskError(f"{name}: the scale is 1, got {scale!r}")
    return make_task(name, **d)
