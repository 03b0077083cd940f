"""Training and validation data for restoration networks, degraded on the fly by the task objects.

:class:`RestorationDataModule` serves

* **training** samples: a random ``crop`` x ``crop`` HR crop of one training picture (pictures
  drawn uniformly), a random flip + rot90 (one of the 8 symmetries of the square), degraded by the
  task's own ``degrade`` (``cem_lab.tasks``: the same definition the CEM interventions use) with a
  seed of its own. Everything a sample draws comes from ``numpy.random.SeedSequence((seed, epoch,
  index))``, so a sample is a pure function of the data seed, the epoch and its index: two runs
  with the same seed see the same data, whatever ``num_workers``.
* **validation** samples: fixed held-out pictures degraded once with ``val_seed``.

Image sources: the scikit-image sample pictures bundled with scikit-image (the default, offline:
astronaut, coffee, rocket, immunohistochemistry, hubble_deep_field and colorwheel for training,
the 256 x 256 crop of ``chelsea`` used by the embedded model and demo for validation), or a folder
of images (sorted by name; the last ``val_images`` are held out).

Multi-task models: with several tasks (``tasks=["sr", "dn", "dr"]``) each sample picks one task
at random, and SR inputs are *bicubic-upsampled back to the HR size* (``F.interpolate``,
``align_corners=False``, no clamping or rounding: exactly what the architectures'
``upsampling="pre"`` mode feeds its body). Every pair is then scale 1, so the network is built at
scale 1. Because an architecture at scale 1 and the same architecture at ``scale=s,
upsampling="pre"`` have the same weights and the same body, a mixed model's weights load into the
``pre`` network to restore LR inputs directly (``pre_upsample_config``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from skimage import data
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from cem_lab.errors import CemLabError
from cem_lab.images import IMAGE_EXTENSIONS, list_images, load_image
from cem_lab.models.archs.common import upsample
from cem_lab.models.embedded import TRAIN_IMAGES, embedded_demo_image
from cem_lab.standard_images import DatasetError, image_pool, standard_image
from cem_lab.tasks import Task, TaskError, crop_to_scale, make_task
from cem_lab.tasks.base import task_label

__all__ = [
    "DataError",
    "RestorationDataModule",
    "find_images",
    "pre_upsample",
    "pre_upsample_config",
    "resolve_tasks",
    "task_label",
]

#: the embedded validation picture's name
EMBEDDED_VAL_NAME = "chelsea_256"

TaskSpec = Task | str | dict


class DataError(CemLabError, ValueError):
    """Training data that cannot be used as configured (no images, bad crop, ...)."""


# ----------------------------------------------------------------------------- tasks
def resolve_tasks(tasks: TaskSpec | Sequence[TaskSpec]) -> list[Task]:
    """Task objects from tasks, names (``"sr"``: the task's defaults) or dicts (``{"name": "sr",
    "scale": 2}``); one spec or a list. Two tasks with the same label are an error."""
    if isinstance(tasks, (Task, str, dict)) or (hasattr(tasks, "keys") and hasattr(tasks, "items")):
        tasks = [tasks]  # type: ignore[list-item]
    out: list[Task] = []
    for spec in tasks:  # type: ignore[union-attr]
        if isinstance(spec, Task):
            out.append(spec)
        elif isinstance(spec, str):
            out.append(make_task(spec))
        elif hasattr(spec, "items"):
            kwargs = dict(spec)
            if "name" not in kwargs:
                raise TaskError(f"a task given as a mapping needs a 'name' (sr, dn or dr), got {kwargs}")
            out.append(make_task(**kwargs))
        else:
            raise TaskError(f"a task is a name (sr, dn, dr), a mapping with a 'name' or a Task, got {spec!r}")
    if not out:
        raise TaskError("give at least one task (sr, dn or dr)")
    labels = [task_label(t) for t in out]
    if len(set(labels)) != len(labels):
        raise TaskError(f"the same task is listed twice: {labels}")
    return out


def pre_upsample(x: Tensor, scale: int) -> Tensor:
    """Bicubic upsampling by ``scale`` exactly as ``upsampling="pre"`` networks do it."""
    return upsample(x, scale, "bicubic")


def pre_upsample_config(config: dict, scale: int) -> dict:
    """The config of a scale-1 network (trained on pre-upsampled SR pairs) rebuilt as its
    ``scale``-x ``upsampling="pre"`` twin: same weights, takes the LR image directly."""
    return {**config, "scale": int(scale), "upsampling": "pre"}


# ----------------------------------------------------------------------------- images
def find_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; errors name what was looked for."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"image folder not found: {folder} (relative paths are resolved from the directory you launched from)"
        )
    files = list_images(folder)
    if not files:
        raise DataError(
            f"no images in {folder}: looked for files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} (case-insensitive, not in subfolders)"
        )
    return files


def to_chw_uint8(arr: np.ndarray) -> Tensor:
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # a read-only decode (PIL, a memory map): torch wants memory it may write
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _to_float(img: Tensor) -> Tensor:
    return img.float().div_(255.0)


def _center_crop(img: Tensor, size: int | None) -> Tensor:
    if size is None:
        return img
    h, w = img.shape[-2:]
    s_h, s_w = min(size, h), min(size, w)
    y, x = (h - s_h) // 2, (w - s_w) // 2
    return img[..., y : y + s_h, x : x + s_w]


# ----------------------------------------------------------------------------- datasets
class _EpochSampler(Sampler[int]):
    """Yields global sample numbers ``epoch * length + i``; the dataset turns them back into
    (epoch, i), so a sample depends on the epoch even in worker processes.

    Under a Lightning trainer (``step_fn`` returns its global step) the epoch's first sample comes
    from the step: ``step * batch_size``, and an epoch that a checkpoint interrupted yields only
    its remaining batches. A resumed run therefore sees exactly the samples of an uninterrupted
    one. Without a trainer, ``set_epoch`` (which Lightning also calls) picks the epoch.
    """

    def __init__(self, length: int, batch_size: int, step_fn: Callable[[], int | None] | None = None):
        self.length = length
        self.batch_size = batch_size
        self.step_fn = step_fn
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        step = self.step_fn() if self.step_fn is not None else None
        if step is None:
            start, stop = self.epoch * self.length, (self.epoch + 1) * self.length
        else:
            per_epoch = self.length // self.batch_size
            start = step * self.batch_size
            stop = (step // per_epoch + 1) * self.length
        return iter(range(start, stop))


class TrainPairs(Dataset):
    """Random degraded crops; index ``epoch * length + i`` -> the i-th sample of that epoch."""

    def __init__(
        self,
        images: Sequence[Tensor],
        tasks: Sequence[Task],
        crop: int,
        length: int,
        seed: int = 0,
        augment: bool = True,
        pre_upsample: bool = False,
    ):
        self.images = list(images)  # (3, H, W) uint8
        self.tasks = list(tasks)
        self.crop = crop
        self.length = length
        self.seed = int(seed)
        self.augment = augment
        self.pre_upsample = pre_upsample

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        epoch, i = divmod(int(index), self.length)
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch, i]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        img = self.images[int(rng.integers(len(self.images)))]
        _, h, w = img.shape
        y = int(rng.integers(h - self.crop + 1))
        x = int(rng.integers(w - self.crop + 1))
        flip = bool(rng.integers(2))
        rot = int(rng.integers(4))
        task_index = int(rng.integers(len(self.tasks)))
        degrade_seed = int(rng.integers(2**31 - 1))
        clean = _to_float(img[:, y : y + self.crop, x : x + self.crop])[None]
        if self.augment:
            if flip:
                clean = clean.flip(-1)
            if rot:
                clean = torch.rot90(clean, rot, dims=(-2, -1))
            clean = clean.contiguous()
        task = self.tasks[task_index]
        inp = task.degrade(clean, degrade_seed)
        if self.pre_upsample:
            inp = pre_upsample(inp, task.scale)
        return {"input": inp[0], "target": clean[0], "task": task_index}


class ValPairs(Dataset):
    """Fixed, precomputed validation pairs (one per held-out image and task)."""

    def __init__(self, pairs: list[dict[str, Any]]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.pairs[index]


# ----------------------------------------------------------------------------- data module
class RestorationDataModule(L.LightningDataModule):
    """Degraded training crops and fixed validation pairs for one task or a mix of tasks.

    Args:
        tasks: one task (a ``Task``, a name ``"sr"``/``"dn"``/``"dr"`` or a dict with a ``name``
            and the task's arguments) or a list of them (a multi-task model).
        images: a folder of training images; ``None`` = the embedded scikit-image pictures.
        pool: instead, a pool of standard images (:data:`cem_lab.standard_images.IMAGE_POOLS`, e.g.
            ``"train"``: 17 pictures of scikit-image, matplotlib and scikit-learn), validated on the
            embedded chelsea crop.
        crop: side of the HR training crops; a multiple of every task's scale.
        batch_size: training crops per step.
        steps_per_epoch: training batches per epoch (an epoch is a Lightning epoch: validation
            and the checkpoint run at its end).
        seed: the data seed; sample i of epoch e uses ``SeedSequence((seed, e, i))``.
        val_images: with a folder, how many images (the last ones by name) are held out.
        val_crop: centre crop side of the validation images (rounded down to the scales);
            ``None`` = whole images (the embedded one is the 256 x 256 ``chelsea`` crop).
        val_seed: the seed of the validation degradations (noise, rain).
        pre_upsample: feed SR inputs bicubic-upsampled to the HR size (scale-1 pairs); ``None`` =
            only with several tasks. A mix of tasks must pre-upsample.
        augment: random flips and rot90 of the training crops.
        num_workers: DataLoader worker processes for training (0 = the main process).
    """

    def __init__(
        self,
        tasks: TaskSpec | Sequence[TaskSpec] = "sr",
        images: str | Path | None = None,
        crop: int = 96,
        batch_size: int = 16,
        steps_per_epoch: int = 500,
        seed: int = 0,
        val_images: int = 1,
        val_crop: int | None = None,
        val_seed: int = 0,
        pre_upsample: bool | None = None,
        augment: bool = True,
        num_workers: int = 0,
        pool: str | None = None,
    ):
        super().__init__()
        if pool not in (None, "") and images not in (None, ""):
            raise DataError(
                f"give either a folder of training images (data.images={images}) or a standard image "
                f"pool (data.pool={pool}), not both"
            )
        if pool not in (None, ""):
            try:
                image_pool(str(pool))
            except DatasetError as err:
                raise DataError(str(err)) from None
        self.pool = None if pool in (None, "") else str(pool)
        self.tasks = resolve_tasks(tasks)
        if pre_upsample is None:
            pre_upsample = len(self.tasks) > 1
        if len(self.tasks) > 1 and not pre_upsample:
            raise DataError(
                "a multi-task model needs scale-1 pairs: SR inputs are bicubic-"
                "upsampled to the HR size (pre_upsample=True)"
            )
        self.pre_upsample = bool(pre_upsample)
        self.scales = sorted({t.scale for t in self.tasks})
        for name, value, minimum in (
            ("crop", crop, 1),
            ("batch_size", batch_size, 1),
            ("steps_per_epoch", steps_per_epoch, 1),
            ("val_images", val_images, 1),
            ("num_workers", num_workers, 0),
            ("seed", seed, 0),
            ("val_seed", val_seed, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
        for t in self.tasks:
            if crop % t.scale:
                raise DataError(
                    f"crop {crop} is not a multiple of the scale {t.scale} of task "
                    f"{task_label(t)}; choose a crop divisible by {t.scale} "
                    f"(e.g. {max(t.scale, crop - crop % t.scale)})"
                )
        if val_crop is not None and (isinstance(val_crop, bool) or not isinstance(val_crop, int) or val_crop < 1):
            raise DataError(f"val_crop must be a positive integer or None, got {val_crop!r}")
        self.images_dir = None if images in (None, "") else Path(images)
        self.crop = crop
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = int(seed)
        self.val_images = val_images
        self.val_crop = val_crop
        self.val_seed = int(val_seed)
        self.augment = augment
        self.num_workers = num_workers
        self.train_images: list[Tensor] | None = None
        self.train_names: list[str] = []
        self.val_names: list[str] = []
        self._val_clean: list[Tensor] | None = None
        self.train_set: TrainPairs | None = None
        self.val_set: ValPairs | None = None

    # -- loading ---------------------------------------------------------------------------
    def _load_sources(self) -> tuple[list[tuple[str, Tensor]], list[tuple[str, Tensor]]]:
        """(name, (3, H, W) uint8) for the training and the validation pictures."""
        if self.pool is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # grey pictures replicated to RGB
                train = [(n, to_chw_uint8(standard_image(n))) for n in image_pool(self.pool)]
            return train, [(EMBEDDED_VAL_NAME, to_chw_uint8(embedded_demo_image()))]
        if self.images_dir is None:
            train = [(n, to_chw_uint8(getattr(data, n)())) for n in TRAIN_IMAGES]
            val = [(EMBEDDED_VAL_NAME, to_chw_uint8(embedded_demo_image()))]
            return train, val
        files = find_images(self.images_dir)
        if len(files) <= self.val_images:
            raise DataError(
                f"{self.images_dir} holds {len(files)} image(s); the last {self.val_images} "
                "are held out for validation (data.val_images), so at least "
                f"{self.val_images + 1} are needed"
            )
        loaded = [(f.name, to_chw_uint8(load_image(f))) for f in files]
        return loaded[: -self.val_images], loaded[-self.val_images :]

    def setup(self, stage: str | None = None) -> None:
        """Load the pictures and build the datasets (once; errors before any training)."""
        if self.train_set is not None:
            return
        train, val = self._load_sources()
        small = [f"{n} ({img.shape[1]}x{img.shape[2]})" for n, img in train if min(img.shape[1:]) < self.crop]
        kept = [(n, img) for n, img in train if min(img.shape[1:]) >= self.crop]
        if small:
            warnings.warn(
                f"skipping {len(small)} training image(s) smaller than the crop "
                f"{self.crop}x{self.crop}: {', '.join(small)}",
                stacklevel=2,
            )
        if not kept:
            where = self.images_dir if self.images_dir is not None else "the embedded pictures"
            raise DataError(
                f"no training image in {where} is at least {self.crop}x{self.crop} "
                "pixels (the crop); use a smaller train.crop or larger images"
            )
        self.train_names = [n for n, _ in kept]
        self.train_images = [img for _, img in kept]
        self.train_set = TrainPairs(
            self.train_images,
            self.tasks,
            self.crop,
            self.steps_per_epoch * self.batch_size,
            seed=self.seed,
            augment=self.augment,
            pre_upsample=self.pre_upsample,
        )
        self.val_set = ValPairs(self._validation_pairs(val))

    def _validation_pairs(self, val: list[tuple[str, Tensor]]) -> list[dict[str, Any]]:
        multiple = int(np.lcm.reduce(self.scales))
        pairs = []
        self.val_names = []
        for name, img in val:
            clean = crop_to_scale(_center_crop(img, self.val_crop), multiple)
            if min(clean.shape[1:]) < multiple:
                raise DataError(
                    f"validation image {name} ({img.shape[1]}x{img.shape[2]}) is too small for the task scale"
                )
            clean = _to_float(clean)[None]
            self.val_names.append(name)
            for k, task in enumerate(self.tasks):
                inp = task.degrade(clean, self.val_seed)
                if self.pre_upsample:
                    inp = pre_upsample(inp, task.scale)
                pairs.append({"input": inp[0], "target": clean[0], "task": k, "name": name})
        return pairs

    # -- loaders ---------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Random training crops, ``batch_size`` per batch, in an order that resumes from the trainer's global step."""
        self.setup("fit")
        assert self.train_set is not None
        sampler = _EpochSampler(len(self.train_set), self.batch_size, self._global_step)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _global_step(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.global_step)

    def val_dataloader(self) -> DataLoader:
        """The validation pairs (every image under every task), one per batch, in order."""
        self.setup("validate")
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=1, shuffle=False, num_workers=0)

    # -- description -----------------------------------------------------------------------
    def describe(self) -> dict:
        """What the data is, for the exported model's metadata."""
        return {
            "images": (
                f"standard image pool {self.pool!r} (cem_lab.standard_images.IMAGE_POOLS)"
                if self.pool is not None
                else "embedded scikit-image pictures"
                if self.images_dir is None
                else str(self.images_dir)
            ),
            "train_images": list(self.train_names),
            "val_images": list(self.val_names),
            "crop": self.crop,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "val_seed": self.val_seed,
            "val_crop": self.val_crop,
            "augment": self.augment,
            "pre_upsample": self.pre_upsample,
        }
