"""Training of the embedded default model (:mod:`cem_lab.models.embedded`): a small colour DnCNN for
Gaussian denoising at sigma 50.

It is trained on CPU, on random crops of scikit-image's bundled colour pictures (astronaut, coffee,
rocket, immunohistochemistry, hubble_deep_field, colorwheel) with random flips, degraded by
``DenoiseTask(sigma=50).degrade`` (a fresh noise seed per batch), L1 loss, Adam (lr 2e-3, betas
(0.9, 0.999)) with ``CosineAnnealingLR`` (down to 2% of lr), He initialisation, batches of 16 crops of
48x48. ``chelsea`` is held out: a 256x256 crop of the cat's face is the validation image and the
embedded demo image.

It trains through the project's one training loop, :class:`RestorationModule` under a
``lightning.Trainer`` (the loop of ``cem-train``), with its own data recipe: :class:`EmbeddedBatches`
serves whole batches drawn from one ``torch.Generator`` (crops, flips) and degraded with the seed
``seed * 1_000_003 + step + 1``, and the module's ``scheduler`` hook supplies the recursive
``CosineAnnealingLR``. The weights are bit for bit those of the plain-torch loop that made the
committed ones (same initialisation, data, optimizer and schedule, same thread count), which
``tests/training/test_embedded_training.py`` checks against a plain loop written out in full.

The committed weights were made with::

    python -m cem_lab.training.embedded_training --out cem_lab/assets/embedded_dncnn.safetensors --steps 800

(the exact command and the validation PSNRs are recorded in ``embedded_dncnn.yaml``), with torch
2.13.0. Float results of training change with the torch build: with torch 2.14.1 (CPU, 2 threads) the same
command, through this loop or the earlier plain one alike, gives other weights of the same quality
(validation 26.452 dB against the recorded 26.429 dB). The committed file is kept, so that maps made with
the embedded default stay comparable across cem_lab versions.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from skimage import data
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from cem_lab.errors import InputError
from cem_lab.images import from_uint8, to_uint8
from cem_lab.metrics import psnr
from cem_lab.models.archs.dncnn import DnCNN
from cem_lab.models.checkpoint import save_weights
from cem_lab.models.embedded import (
    EMBEDDED_ARCH,
    EMBEDDED_SIGMA,
    EMBEDDED_WEIGHTS,
    TRAIN_IMAGES,
    embedded_demo_image,
)
from cem_lab.tasks.denoise import DenoiseTask
from cem_lab.training.restoration_module import RestorationModule, describe_scheduler

DEFAULT_STEPS = 800
DEFAULT_BATCH = 16
DEFAULT_PATCH = 48


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two (H, W, 3) uint8 images (cem_lab.metrics.psnr on the 0..255 scale)."""
    return float(psnr(from_uint8(a) * 255, from_uint8(b) * 255)[0])


@torch.no_grad()
def validate(model: nn.Module, sigma: float = EMBEDDED_SIGMA, seed: int = 0) -> dict:
    """PSNR of the noisy demo image and of the model's output, vs the clean crop."""
    clean_u8 = embedded_demo_image()
    noisy = DenoiseTask(sigma=sigma).degrade(from_uint8(clean_u8), seed)
    was_training = model.training
    model.eval()
    out = model(noisy)
    model.train(was_training)
    return {
        "psnr_noisy": round(psnr_uint8(to_uint8(noisy), clean_u8), 3),
        "psnr_model": round(psnr_uint8(to_uint8(out), clean_u8), 3),
        "image": "chelsea 256 crop",
        "sigma": sigma,
    }


def _training_images() -> list[Tensor]:
    return [from_uint8(getattr(data, name)())[0] for name in TRAIN_IMAGES]


def _batch(images: Sequence[Tensor], batch_size: int, patch: int, gen: torch.Generator) -> Tensor:
    """Random crops (uniform over pictures, then position) with random flips."""
    crops = []
    picks = torch.randint(len(images), (batch_size,), generator=gen).tolist()
    for i in picks:
        img = images[i]
        _, h, w = img.shape
        y = int(torch.randint(h - patch + 1, (1,), generator=gen))
        x = int(torch.randint(w - patch + 1, (1,), generator=gen))
        crop = img[:, y : y + patch, x : x + patch]
        flips = torch.rand(2, generator=gen)
        if flips[0] < 0.5:
            crop = crop.flip(-1)
        if flips[1] < 0.5:
            crop = crop.flip(-2)
        crops.append(crop)
    return torch.stack(crops).contiguous()


class EmbeddedBatches(IterableDataset):
    """The embedded model's training data: ``steps`` ready batches ``{"input", "target", "task"}``.

    Batch ``step`` (0-based) is :func:`_batch` (crops and flips from one ``torch.Generator`` seeded
    with ``seed``, drawn batch after batch) degraded by ``task.degrade(clean, seed=seed * 1_000_003 +
    step + 1)``: a fresh noise seed per batch. ``task`` is all zeros (one task). Each iteration starts
    again from batch 0; use it with ``DataLoader(dataset, batch_size=None)`` (the batches are made
    here) in the main process.
    """

    def __init__(
        self, images: Sequence[Tensor], task: DenoiseTask, steps: int, batch_size: int, patch: int, seed: int = 0
    ):
        super().__init__()
        self.images = list(images)
        self.task = task
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.patch = int(patch)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        for step in range(self.steps):
            clean = _batch(self.images, self.batch_size, self.patch, gen)
            noisy = self.task.degrade(clean, seed=self.seed * 1_000_003 + step + 1)  # fresh noise per batch
            yield {"input": noisy, "target": clean, "task": torch.zeros(self.batch_size, dtype=torch.long)}


def init_weights(model: nn.Module, last_gain: float = 0.1) -> None:
    """He-normal convs with zero biases; the last conv scaled down so training starts near
    the identity (a residual DnCNN without batch norm learns much faster this way)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)
    with torch.no_grad():
        convs[-1].weight.mul_(last_gain)


def train_embedded(
    out: Path | str = EMBEDDED_WEIGHTS,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    seed: int = 0,
    patch: int = DEFAULT_PATCH,
    lr: float = 2e-3,
    threads: int = 2,
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Train the embedded DnCNN through :class:`RestorationModule` and a CPU ``lightning.Trainer``,
    save weights + YAML at ``out``, return validation metrics."""
    out = Path(out)
    if steps < 1 or batch_size < 1:
        raise InputError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)  # the initialisation is the only draw from the global generator
    task = DenoiseTask(sigma=EMBEDDED_SIGMA)
    images = _training_images()
    model = DnCNN(**EMBEDDED_ARCH)
    init_weights(model)
    model.train()
    scheduler = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=steps, eta_min=lr * 0.02)
    module = RestorationModule(
        model, task, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, max_steps=steps, loss="l1", scheduler=scheduler
    )
    batches = DataLoader(EmbeddedBatches(images, task, steps, batch_size, patch, seed), batch_size=None)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(out.parent),
    )
    start = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
        warnings.filterwarnings("ignore", ".*but have no `val_dataloader`.*")  # validate() measures it below
        warnings.filterwarnings("ignore", ".*`IterableDataset` has `__len__` defined.*")  # one process
        trainer.fit(module, train_dataloaders=batches)
    seconds = time.time() - start
    if trainer.global_step != steps:
        raise RuntimeError(f"the trainer stopped after {trainer.global_step} of {steps} steps")
    model.eval()
    metrics = validate(model, EMBEDDED_SIGMA, seed=0)
    if command is None:
        command = f"python -m cem_lab.training.embedded_training --out {out} --steps {steps} --batch-size {batch_size} --seed {seed}"
    metadata = {
        "trained_with": command,
        "validation": metrics,
        "training": {
            "task": "dn",
            "sigma": EMBEDDED_SIGMA,
            "images": list(TRAIN_IMAGES),
            "steps": steps,
            "batch_size": batch_size,
            "patch": patch,
            "lr": lr,
            "loss": "l1",
            "optimizer": "adam",
            "schedule": "cosine",
            "scheduler": describe_scheduler(scheduler),
            "seed": seed,
            "seconds": round(seconds, 1),
            "torch": str(torch.__version__),
            "loop": "lightning",
            "lightning": str(L.__version__),
        },
    }
    save_weights(
        model, out, config={"_target_": "cem_lab.models.archs.dncnn.DnCNN", **EMBEDDED_ARCH}, metadata=metadata
    )
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train the embedded model and print its validation PSNRs."""
    parser = argparse.ArgumentParser(
        prog="python -m cem_lab.training.embedded_training", description="Train cem_lab's embedded DnCNN (sigma 50)."
    )
    parser.add_argument("--out", default=str(EMBEDDED_WEIGHTS), help="output .safetensors (the .yaml goes beside it)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--patch", type=int, default=DEFAULT_PATCH)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m cem_lab.training.embedded_training", *map(shlex.quote, given)])
    metrics = train_embedded(
        Path(args.out),
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        patch=args.patch,
        lr=args.lr,
        threads=args.threads,
        command=command,
        progress=not args.no_progress,
    )
    print(
        f"validation on {metrics['image']} (sigma {metrics['sigma']:g}): "
        f"noisy {metrics['psnr_noisy']:.2f} dB -> model {metrics['psnr_model']:.2f} dB"
    )
    print(f"saved {args.out} and {Path(args.out).with_suffix('.yaml')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
