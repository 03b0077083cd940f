"""Tasks (degradations) and their LV interventions."""

from cem_lab.tasks.base import (
    CROP_ORIGIN,
    Placement,
    Task,
    TaskError,
    TaskInput,
    crop_origin,
    crop_to_scale,
    seed_from_name,
    task_label,
    write_blocks,
)
from cem_lab.tasks.denoise import DenoiseTask
from cem_lab.tasks.derain import DerainTask
from cem_lab.tasks.factory import TASKS, make_task, task_from_description
from cem_lab.tasks.jpeg import JpegTask, read_jpeg_settings
from cem_lab.tasks.super_resolution import SuperResolutionTask, bicubic_downscale

__all__ = [
    "CROP_ORIGIN",
    "Placement",
    "Task",
    "TaskError",
    "TaskInput",
    "crop_origin",
    "crop_to_scale",
    "seed_from_name",
    "task_label",
    "write_blocks",
    "DenoiseTask",
    "DerainTask",
    "SuperResolutionTask",
    "bicubic_downscale",
    "TASKS",
    "make_task",
    "task_from_description",
    "JpegTask",
    "read_jpeg_settings",
]
