"""Training restoration networks: one Lightning loop for `cem-train`, `cem-zoo` and the embedded model.

- :mod:`~cem_lab.training.restoration_module`: :class:`RestorationModule`, L1 + Adam training of any
  restoration network, EMA, validation PSNR / SSIM (BasicSR conventions) beside the trivial baseline,
  export to ``.safetensors`` + ``.yaml``;
- :mod:`~cem_lab.training.data`: :class:`RestorationDataModule`, random crops degraded on the fly by the
  task objects, one task or a mix, embedded pictures or a folder;
- :mod:`~cem_lab.training.heldout`: the held-out evaluation of a trained (zoo) model;
- :mod:`~cem_lab.training.embedded_training`: the embedded DnCNN's recipe (its own data, Adam betas and
  ``CosineAnnealingLR``), trained through the same :class:`RestorationModule` and ``lightning.Trainer``.

Lightning is imported by those modules, not here: import them by their own names.
"""
