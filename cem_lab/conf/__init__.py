"""The Hydra configs, shipped inside the package as ``cem_lab.conf``."""
