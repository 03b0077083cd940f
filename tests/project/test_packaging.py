"""The wheel holds every room and the configs: setuptools discovers the packages (every folder of ``cem_lab/``
with an ``__init__.py``), and the Hydra configs live inside the package (``cem_lab/conf``, reached as ``conf/`` at
the top of the checkout by a link), so a new room or config group is never left out of an install."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")

ROOT = Path(__file__).resolve().parents[2]


def test_packages_are_discovered_not_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["packages"]["find"]["include"] == ["cem_lab*"] and "package-dir" not in config
    assert (ROOT / "cem_lab" / "conf" / "__init__.py").is_file() and (
        ROOT / "conf"
    ).resolve() == ROOT / "cem_lab" / "conf"


def test_the_wheel_holds_every_package_and_every_config(tmp_path):
    import subprocess

    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = tmp_path.glob("cem_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    on_disk = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "cem_lab").rglob("*")
        if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
    }
    assert on_disk - names == set(), sorted(on_disk - names)[:10]
