"""The package list of pyproject.toml is the package tree on disk.

setuptools' discovery cannot be combined with the mapping of the top-level ``conf/`` into the package
as ``cem_lab.conf``, so pyproject.toml lists the packages by hand; this test keeps that list equal to
the folders under ``cem_lab/`` that hold an ``__init__.py``, so a new room is never left out of a wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_on_disk_is_listed_and_nothing_else():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "cem_lab").rglob("__init__.py")
        if "__pycache__" not in p.parts and not p.parent.is_symlink()
    }
    mapped = set(config.get("package-dir", {}))
    assert listed - mapped == on_disk, (
        f"pyproject.toml [tool.setuptools] packages: add {sorted(on_disk - listed)}, remove {sorted(listed - mapped - on_disk)}"
    )
    assert (ROOT / config["package-dir"]["cem_lab.conf"] / "__init__.py").is_file()
