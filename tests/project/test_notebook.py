"""The quickstart notebook runs as written (its code cells, in order, in a fresh folder)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells
    namespace: dict = {}
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        exec(compile(source, f"{NOTEBOOK.name}[code cell {i}]", "exec"), namespace)  # noqa: S102
    result, report = namespace["result"], namespace["report"]
    assert result.summary()["counts"]["positive"] > 0
    assert (tmp_path / "runs" / "notebook_demo" / "summary.json").is_file()
    table = report["runs"]
    assert set(table["model"]) == {"fsrcnn_d2_w16_x4", "fsrcnn_d16_w16_x4"}
    assert Path(report["figures"]["cem_grid"]).is_file()
