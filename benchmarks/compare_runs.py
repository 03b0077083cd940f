"""Are two run folders the same map? Every array of cem.npz bit for bit, and the identity of summary.json.

    python benchmarks/compare_runs.py RUN_A RUN_B [RUN_A2 RUN_B2 ...]

For a change that must not move a map (a redesign, a faster recompute path): compute the map with the code
before and after, then compare the two folders. Arrays are compared by dtype, shape and bytes (NaN included);
summary.json by the fields that say what was computed and how much: the settings, the fingerprint (model,
input, bank and settings), the forward passes, the mode and the pixels pushed. Timings are not compared.
Exit status 0 when every pair is identical, 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cem_lab.run_format import read_cem_arrays, read_summary

#: the summary fields that must agree (timings, notes and checkpoint counts may differ)
IDENTITY = ("settings", "fingerprint", "forward_passes", "mode", "pixels_pushed")


def compare(a: Path, b: Path) -> list[str]:
    """The differences between the run folders ``a`` and ``b`` (empty when they hold the same map)."""
    out = []
    za, zb = read_cem_arrays(a), read_cem_arrays(b)
    if set(za) != set(zb):
        out.append(f"arrays: {sorted(set(za) ^ set(zb))} in one folder only")
    for key in sorted(set(za) & set(zb)):
        x, y = za[key], zb[key]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            out.append(f"array {key} differs")
    sa, sb = (read_summary(f, missing_ok=False) for f in (a, b))
    out += [f"summary {k}: {sa.get(k)!r} != {sb.get(k)!r}" for k in IDENTITY if sa.get(k) != sb.get(k)]
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print("usage: python benchmarks/compare_runs.py RUN_A RUN_B [RUN_A2 RUN_B2 ...]", file=sys.stderr)
        return 2
    differ = 0
    for a, b in zip(argv[::2], argv[1::2]):
        diffs = compare(Path(a), Path(b))
        n = len(read_cem_arrays(a))
        print(f"{a} vs {b}: " + ("identical" if not diffs else "; ".join(diffs)) + f" ({n} arrays)")
        differ += bool(diffs)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
