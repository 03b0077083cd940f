"""benchmarks/gpu_check.py, the prepared device check, runs end to end (here on the CPU, small)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow  # 39 s on 2 cores: the script is run on a device machine, and its parts are tested in their rooms
def test_the_device_check_runs_and_reports_every_figure(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "check.json")])
    assert json.loads((tmp_path / "check.json").read_text()) == json.loads(json.dumps(out))
    assert out["bare_fwd_per_s"] > 0 and out["full_fp32"]["fwd_per_s"] > 0 and out["full_bf16"]["fwd_per_s"] > 0
    assert out["full_fp32"]["forward_passes"] == out["full_bf16"]["forward_passes"]  # the same plan
    c = out["bf16_vs_fp32"]
    assert math.isfinite(c["max_abs_delta_ce"]) and c["max_abs_delta_ce"] < 1.0  # bf16 is close, not equal
    assert 0.0 <= out["adaptive_saving"]["class_agreement"] <= 1.0
    assert out["reference"]["forward_passes"] > 0 and out["adaptive"]["forward_passes"] > 0
