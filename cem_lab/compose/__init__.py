"""The composition root: where a Hydra config becomes objects, below the console scripts of :mod:`cem_lab.cli`.

- :mod:`~cem_lab.compose.resolvers`: the OmegaConf resolvers the configs use (registered on import);
- :mod:`~cem_lab.compose.build`: config -> model, patch bank, device, ROI, crop (``instantiate_checked``);
- :mod:`~cem_lab.compose.devices`: a device or accelerator checked against this machine; ``device=free_gpu``,
  a GPU no other job holds;
- :mod:`~cem_lab.compose.overrides`: a key added with ``+`` that nothing would read, refused;
- :mod:`~cem_lab.compose.prepare`: a `cem-lab` run built and checked (:class:`~cem_lab.compose.prepare.PreparedRun`),
  and computed in one process or spread over several;
- :mod:`~cem_lab.compose.atlas`: ``roi=grid`` or a ROI list, the ROI atlas;
- :mod:`~cem_lab.compose.training`: the objects of a `cem-train` run;
- :mod:`~cem_lab.compose.attribution`: the checked settings and plan of a `cem-attribution` run.
"""
