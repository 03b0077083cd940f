"""RestorationModule's ``scheduler`` hook: a callable optimizer -> LR scheduler in place of ``schedule``."""

from __future__ import annotations

import functools

import pytest
import torch

from cem_lab.errors import InputError
from cem_lab.models.archs.dncnn import DnCNN
from cem_lab.models.embedded import EMBEDDED_ARCH
from cem_lab.training.restoration_module import RestorationModule


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
