"""The hand-written reading of each study cannot drift from the numbers its write-up regenerates.

Each study script keeps its prose (``NOTES``) beside the code; ``report`` appends it to the tables it
regenerates from the run folders. Every interval the prose quotes (``value [low, high]``) must stand in
those tables, and the committed write-up must hold the prose as the script has it now.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ("receptive_field", "channel_attention", "multitask")
INTERVAL = re.compile(r"([+-]?\d[\d.,]*) \[([+-]?\d[\d.]*), ([+-]?\d[\d.]*)\]")
NOTES_HEADING = "## Reading, confounds and what is left out"


def _notes(study: str) -> str:
    if str(ROOT / "experiments") not in sys.path:  # the study scripts import their shared runner by name
        sys.path.insert(0, str(ROOT / "experiments"))
    spec = importlib.util.spec_from_file_location(f"study_{study}", ROOT / "experiments" / f"{study}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NOTES


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("study", STUDIES)
def test_every_interval_in_the_prose_stands_in_the_regenerated_tables(study):
    notes = _flat(_notes(study))
    tables = _flat((ROOT / "experiments" / "results" / f"{study}.md").read_text().split(NOTES_HEADING)[0])
    quoted = INTERVAL.findall(notes)
    assert quoted, f"{study}: the prose quotes no interval (the pattern no longer matches the write-up style?)"
    missing = [
        f"{v} [{lo}, {hi}]"
        for v, lo, hi in quoted
        if not re.search(rf"[+]?{re.escape(v.lstrip('+'))}\s*\[{re.escape(lo)},\s*{re.escape(hi)}\]", tables)
    ]
    assert not missing, f"{study}: the prose quotes intervals that its tables do not hold: {missing}"


@pytest.mark.parametrize("study", STUDIES)
def test_the_committed_write_up_holds_the_script_prose(study):
    text = (ROOT / "experiments" / "results" / f"{study}.md").read_text()
    assert NOTES_HEADING in text
    assert _flat(text.split(NOTES_HEADING)[1]) == _flat(_notes(study)), (
        f"experiments/results/{study}.md is stale: rerun `python experiments/{study}.py report`"
    )
