"""The embedded DnCNN's training (`python -m cem_lab.training.embedded_training`): it runs through
RestorationModule + lightning.Trainer and must give, bit for bit, the weights of the plain-torch loop
that made the committed ones (the loop is written out in full below as the reference)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from cem_lab.errors import InputError
from cem_lab.models.archs.dncnn import DnCNN
from cem_lab.models.embedded import EMBEDDED_ARCH, EMBEDDED_SIGMA
from cem_lab.tasks.denoise import DenoiseTask
from cem_lab.training import embedded_training as et
from cem_lab.training.restoration_module import RestorationModule

STEPS, BATCH, PATCH, SEED, LR = 6, 4, 24, 3, 2e-3


@pytest.fixture
def one_thread(torch_threads):
    """train_embedded sets torch's thread count; give the test process its own back afterwards."""
    torch_threads(1)


def plain_loop(steps: int, batch_size: int, patch: int, seed: int, lr: float) -> dict[str, torch.Tensor]:
    """The plain-torch loop the committed weights were trained with (cem_lab before the Lightning port)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    task = DenoiseTask(sigma=EMBEDDED_SIGMA)
    images = et._training_images()
    model = DnCNN(**EMBEDDED_ARCH)
    et.init_weights(model)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.02)
    for step in range(steps):
        clean = et._batch(images, batch_size, patch, gen)
        noisy = task.degrade(clean, seed=seed * 1_000_003 + step + 1)
        loss = F.l1_loss(model(noisy), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lightning_training_gives_the_plain_loops_weights_bit_for_bit(tmp_path: Path, one_thread) -> None:
    out = tmp_path / "emb.safetensors"
    metrics = et.train_embedded(
        out, steps=STEPS, batch_size=BATCH, seed=SEED, patch=PATCH, lr=LR, threads=1, progress=False
    )
    assert torch.get_num_threads() == 1
    trained = load_file(str(out))
    reference = plain_loop(STEPS, BATCH, PATCH, SEED, LR)
    assert sorted(trained) == sorted(reference)
    initial = DnCNN(**EMBEDDED_ARCH).state_dict()
    for key, ref in reference.items():
        assert torch.equal(trained[key], ref), key
    assert not all(torch.equal(reference[k], initial[k]) for k in reference)  # it did train

    # nothing but the weights and their YAML is written (no lightning_logs, no checkpoints)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.safetensors", "emb.yaml"]
    meta = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert meta["trained_with"] == (
        f"python -m cem_lab.training.embedded_training --out {out} --steps {STEPS} --batch-size {BATCH} --seed {SEED}"
    )
    assert meta["validation"] == metrics and set(metrics) == {"psnr_noisy", "psnr_model", "image", "sigma"}
    training = meta["training"]
    assert training["steps"] == STEPS and training["loop"] == "lightning" and training["schedule"] == "cosine"
    assert training["scheduler"] == f"torch.optim.lr_scheduler.CosineAnnealingLR(T_max={STEPS}, eta_min={LR * 0.02!r})"


def test_the_batches_are_the_plain_loops(one_thread) -> None:
    images = et._training_images()
    task = DenoiseTask(sigma=EMBEDDED_SIGMA)
    data = et.EmbeddedBatches(images, task, steps=3, batch_size=2, patch=16, seed=5)
    gen = torch.Generator().manual_seed(5)
    batches = list(torch.utils.data.DataLoader(data, batch_size=None))
    assert len(batches) == len(data) == 3
    for step, batch in enumerate(batches):
        clean = et._batch(images, 2, 16, gen)
        assert torch.equal(batch["target"], clean)
        assert torch.equal(batch["input"], task.degrade(clean, seed=5 * 1_000_003 + step + 1))
        assert batch["task"].dtype == torch.long and batch["task"].tolist() == [0, 0]
    again = next(iter(data))  # a new pass starts again from the first batch
    assert torch.equal(again["target"], batches[0]["target"])


def test_the_scheduler_hook_replaces_the_schedule_and_stays_out_of_the_hparams() -> None:
    net = DnCNN(**EMBEDDED_ARCH)
    make = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=10, eta_min=1e-5)
    module = RestorationModule(net, "dn", lr=1e-3, max_steps=10, scheduler=make)
    assert "scheduler" not in module.hparams
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == 10
    default = RestorationModule(net, "dn", lr=1e-3, max_steps=10)
    assert isinstance(default.configure_optimizers()["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.LambdaLR)
    assert "scheduler" not in default.hparams
    with pytest.raises(InputError, match="scheduler must be None or a callable"):
        RestorationModule(net, "dn", scheduler="cosine")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="must return a torch LR scheduler"):
        RestorationModule(net, "dn", scheduler=lambda opt: opt).configure_optimizers()
