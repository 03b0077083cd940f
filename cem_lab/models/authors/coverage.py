"""The coverage table of the paper's model zoo (docs/authors_zoo.md): every architecture of the authors' ``NN_LIST``
and every checkpoint of their ``MODEL_LIST``, with how cem_lab loads it and the test that proves it.

``python -m cem_lab.models.authors.coverage > docs/authors_zoo.md`` writes it; a test keeps the file equal to
what this module makes from the catalogue.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from cem_lab.models.authors.catalogue import AUTHORS_REPO, PACKAGES, AuthorsEntry, catalogue, coverage

NN_LIST_FILE = Path(__file__).with_name("nn_list.yaml")

#: the tests that prove each way of building
PROOF = {
    "own": "keys, shapes and parameters equal the authors' (tests/models/test_authors_zoo.py, "
    "test_paper_archs_*.py); loads from a file in their layout and name",
    "spandrel": "spandrel detects it; architecture, scale and parameter count checked at load",
    "package": "the file's keys and shapes are also checked against the package's class with the authors' "
    "arguments (tests/models/test_authors_extra_arches.py); on seeded weights in the authors' files, the output "
    "equalled their classes' forward exactly (max abs diff 0.0, measured outside the project)",
}


@cache
def nn_list() -> dict[str, dict]:
    """The authors' ``NN_LIST`` in their order: whether ``MODEL_LIST`` has a checkpoint of that name, and a note."""
    return yaml.safe_load(NN_LIST_FILE.read_text())


def _how(e: AuthorsEntry) -> str:
    if e.build == "own":
        cls = str(e.arch).removeprefix("cem_lab.models.archs.")
        return f"own: `{cls}`"
    if e.build == "spandrel" and e.package:
        return f"{e.package}: {e.spandrel} ({e.licence}; `pip install 'cem_lab[{PACKAGES[e.package][1]}]'`)"
    if e.build == "spandrel":
        return f"spandrel: {e.spandrel}"
    return str(e.why)


def _task(e: AuthorsEntry) -> str:
    return {"sr": f"SR x{e.scale}", "dn": "DN", "dr": "DR", "mixed": "SR / DN / DR (scale 1)"}[e.task]


def coverage_markdown() -> str:
    """The whole table, as docs/authors_zoo.md holds it."""
    cat = catalogue()
    counts = coverage()
    archs = nn_list()
    covered = [n for n, a in archs.items() if a["checkpoint"] and n in cat and cat[n].build != "none"]
    extra = [n for n, e in cat.items() if e.package]
    lines = [
        "# The paper's model zoo in cem_lab",
        "",
        f"Every architecture and checkpoint of the authors' model zoo ({AUTHORS_REPO}, commit 5fd1d9b,",
        "`CEM_Demo/ModelZoo/__init__.py`), and how cem_lab loads it: `cem-lab model=authors model.name=NAME",
        "model.dir=FOLDER` reads `FOLDER/<file>` as the authors' `load_model` does and checks it against the network",
        "the name stands for. Written by `python -m cem_lab.models.authors.coverage` from",
        "`cem_lab/models/authors/catalogue.yaml`; a test keeps it so.",
        "",
        f"**Checkpoints (MODEL_LIST): {len(cat)}**; cem_lab loads {counts['own'] + counts['spandrel']}: it builds "
        f"{counts['own']} with its own implementations,",
        f"{counts['spandrel']} through spandrel ({len(extra)} of them, {', '.join(extra)}, only with an optional "
        "package: see below),",
        f"and {counts['none']} not yet. **Architectures (NN_LIST): {len(archs)}**, of which "
        f"{sum(a['checkpoint'] for a in archs.values())} have a checkpoint; {len(covered)} of those load.",
        "",
        "Own implementations: " + PROOF["own"] + ". Spandrel: " + PROOF["spandrel"] + ".",
        "",
        "Optional package: "
        + ", ".join(f"{p} (`pip install 'cem_lab[{x}]'`)" for p, (_, x) in PACKAGES.items())
        + " has the architectures of "
        + ", ".join(extra)
        + "; its code for them is under a non-commercial licence (named per network below, and logged when one"
        " is loaded); without it, those names are refused in one line naming the fix. "
        + PROOF["package"][0].upper()
        + PROOF["package"][1:]
        + ".",
        "",
        "## Architectures (NN_LIST)",
        "",
        "| architecture | checkpoint | cem_lab | note |",
        "| --- | --- | --- | --- |",
    ]
    for name, a in archs.items():
        e = cat.get(name)
        how = _how(e) if (a["checkpoint"] and e is not None) else "-"
        lines.append(f"| {name} | {'yes' if a['checkpoint'] else 'no'} | {how} | {a.get('note', '')} |")
    lines += [
        "",
        "## Checkpoints (MODEL_LIST)",
        "",
        "| name | task | file | authors' class | layout | cem_lab | parameters |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in cat.values():
        layout = e.layout if isinstance(e.layout, str) else " / ".join(e.layout)
        params = f"{e.parameters:,}" if e.parameters else ""
        cls = (e.authors_class or "").removeprefix("CEM_Demo/ModelZoo/")
        note = f" ({e.note})" if e.note else ""
        lines.append(f"| {e.name} | {_task(e)} | `{e.file}` | `{cls}` | {layout} | {_how(e)}{note} | {params} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(coverage_markdown(), end="")
