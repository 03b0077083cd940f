"""benchmarks/compare_runs.py tells the same map from a changed one (the identity check of a redesign)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "compare_runs.py"
RUN = ROOT / "tests" / "fixtures" / "run_v1"


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True)


def test_a_copy_is_identical_and_one_changed_bit_or_count_is_not(tmp_path):
    same = tmp_path / "same"
    shutil.copytree(RUN, same)
    p = _compare(RUN, same)
    assert p.returncode == 0 and "identical" in p.stdout, p.stdout + p.stderr

    changed = tmp_path / "changed"
    shutil.copytree(RUN, changed)
    with np.load(changed / "cem.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    effect = arrays["effect_raw"].copy()
    flat = effect.reshape(-1)
    i = int(np.flatnonzero(np.isfinite(flat))[0])
    flat[i] = np.nextafter(flat[i], np.inf)  # one ulp
    arrays["effect_raw"] = effect
    np.savez_compressed(changed / "cem.npz", **arrays)
    p = _compare(RUN, changed)
    assert p.returncode == 1 and "array effect_raw differs" in p.stdout, p.stdout

    counted = tmp_path / "counted"
    shutil.copytree(RUN, counted)
    summary = json.loads((counted / "summary.json").read_text())
    summary["forward_passes"] += 1
    (counted / "summary.json").write_text(json.dumps(summary))
    p = _compare(RUN, counted)
    assert p.returncode == 1 and "summary forward_passes" in p.stdout, p.stdout
