"""The command-line entry points (console scripts of pyproject.toml)."""
