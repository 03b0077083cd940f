"""No module of cem_lab imports itself back through others (the layer contracts of lint-imports cover rooms;
this covers the modules inside a room). Imports made only for type checking do not run and are left out."""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (pip install -e '.[dev]')")
nx = pytest.importorskip("networkx", reason="networkx comes with torch")


def test_no_module_level_import_cycle():
    graph = grimp.build_graph("cem_lab", exclude_type_checking_imports=True)
    edges = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            edges.add_edge(module, imported)
    cycles = [c for c in nx.simple_cycles(edges) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])
