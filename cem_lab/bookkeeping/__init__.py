"""The bookkeeping of the CLI runs, below the entry points of :mod:`cem_lab.cli` and the composition root.

- :mod:`~cem_lab.bookkeeping.run_folder`: a run folder from refusal to acceptance (config, Hydra's record, log);
- :mod:`~cem_lab.bookkeeping.run_index`: ``done.json``, a finished run recognised without model work;
- :mod:`~cem_lab.bookkeeping.neutral_keys`: the config keys that do not change a result, one list per program;
- :mod:`~cem_lab.bookkeeping.sweep_record`: sweep folder names, per-job outcomes and error files, progress,
  ``sweep_summary.json``;
- :mod:`~cem_lab.bookkeeping.wandb_logging`: W&B runs;
- :mod:`~cem_lab.bookkeeping.clean_errors`: the one form of a user error of every CLI, and its one line on
  Ctrl-C (process level);
- :mod:`~cem_lab.bookkeeping.test_hooks`: the testing aids that the environment switches on.
"""
