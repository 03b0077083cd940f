"""Every notebook runs as written, through a Jupyter kernel, in a fresh temporary folder.

The notebooks are executed with nbclient on the ``python3`` kernel that ipykernel installs into the
environment (the ``notebooks`` extra, part of ``dev``). The kernel starts in a temporary folder and
inherits this process's environment (with the checkout first on ``PYTHONPATH``), so a notebook reads
this checkout's ``cem_lab`` and writes nothing into the repository.

- ``quickstart`` runs on what the package ships (the embedded model, image and patch bank, the zoo).
- The three study notebooks redraw a study from its run folders, which a fresh clone does not have
  (``python experiments/<study>.py run`` makes them in 35 to 77 min). Here they read small synthetic
  populations with built-in answers (the builders of ``tests/analysis/test_findings.py``), given
  through ``CEM_LAB_STUDY_RUNS`` as a user gives their own; without any run folder they must stop
  with a message that says how to make them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

nbclient = pytest.importorskip("nbclient", reason="the notebooks extra: pip install -e '.[notebooks]'")
nbformat = pytest.importorskip("nbformat", reason="the notebooks extra: pip install -e '.[notebooks]'")

from nbclient.exceptions import CellExecutionError  # noqa: E402

from tests.analysis.test_findings import _ca, _mt, _rf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
STUDIES = ("receptive_field", "channel_attention", "multitask")


def execute(name: str, cwd: Path, monkeypatch, env: dict[str, str] | None = None):
    """Run every cell of ``notebooks/<name>.ipynb`` in a new kernel whose working folder is ``cwd``."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.delenv("CEM_LAB_STUDY_RUNS", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def _repo_files() -> set[Path]:
    return {p for folder in (NOTEBOOKS, ROOT / "runs") if folder.is_dir() for p in folder.rglob("*")}


def test_every_notebook_is_tested_and_stored_without_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(["quickstart", *STUDIES])
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3", path.name
        assert all(not c.outputs for c in nb.cells if c.cell_type == "code"), f"{path.name}: clear its outputs"


@pytest.mark.slow  # 55 s (it computes the embedded default map); the three study notebooks run in the default suite
def test_quickstart_runs_on_what_the_package_ships(tmp_path, monkeypatch):
    before = _repo_files()
    execute("quickstart", tmp_path, monkeypatch)
    summary = json.loads((tmp_path / "runs" / "notebook_demo" / "summary.json").read_text())
    assert summary["counts"]["positive"] > 0 and summary["settings"]["estimator"]["fine"] == 10
    runs = pd.read_csv(tmp_path / "runs" / "notebook_zoo_report" / "runs.csv")
    assert set(runs["model"]) == {"fsrcnn_d2_w16_x4", "fsrcnn_d16_w16_x4"}
    assert (tmp_path / "runs" / "notebook_zoo_report" / "figures" / "cem_grid.png").is_file()
    assert _repo_files() == before  # nothing written into the checkout


@pytest.mark.parametrize(
    "study,build,figures",
    [
        ("receptive_field", _rf, ["nb_rf_trends.png", "nb_rf_reach_vs_params.png"]),
        # 11 s each; the receptive-field notebook keeps the path in the default suite
        pytest.param(
            "channel_attention",
            lambda root: _ca(root, sr_gain=4, dn_gain=0),
            ["nb_ca_contrast.png"],
            marks=pytest.mark.slow,
        ),
        pytest.param("multitask", lambda root: _mt(root, "local"), ["nb_mt_pairs.png"], marks=pytest.mark.slow),
    ],
)
def test_a_study_notebook_redraws_a_population_of_run_folders(tmp_path, monkeypatch, study, build, figures):
    build(tmp_path / "population")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    execute(study, cwd, monkeypatch, env={"CEM_LAB_STUDY_RUNS": str(tmp_path / "population")})
    for name in figures:
        assert (cwd / "notebook_reports" / study / name).stat().st_size > 1000, name


def test_a_study_notebook_without_runs_says_how_to_make_them(tmp_path, monkeypatch):
    cwd = tmp_path / "notebooks"  # as if opened in a fresh clone's notebooks/ folder: ../runs does not exist
    cwd.mkdir()
    with pytest.raises(CellExecutionError) as err:
        execute("multitask", cwd, monkeypatch)
    assert "no run folders of the study" in str(err.value)
    assert "python experiments/multitask.py run" in str(err.value)


def test_the_test_install_brings_the_notebook_kernel():
    """The CI installs ``.[dev]`` and runs the README's test command: dev must bring the notebooks extra."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {r.split(">")[0] for r in extras["notebooks"]} == {"nbclient", "nbformat", "ipykernel"}
    assert "cem_lab[notebooks]" in extras["dev"]
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[dev]"' in readme and "jupyter execute notebooks/quickstart.ipynb" in readme
