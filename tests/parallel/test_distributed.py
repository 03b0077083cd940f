"""The same CEM on 1 process and on 2 DDP processes (CPU, gloo) gives the same map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ConvStack

from cem_lab import compute_cem


@pytest.mark.slow  # 11 s; the 256 px two-process test and the CLI's cover the same equality by default
@pytest.mark.parametrize("batch_size", [3])
def test_two_ddp_processes_give_the_single_process_map(tmp_path, clean_image, small_bank, batch_size):
    pytest.importorskip("lightning")
    from cem_lab.parallel.fabric import compute_cem_distributed

    model = ConvStack(depth=3, width=6)
    kw = dict(block=8, patch_bank=small_bank, coarse=3, fine=5, progress=False, seed=3)
    single = compute_cem(model, clean_image, "dn", (16, 16, 16), batch_size=8, **kw)
    multi = compute_cem_distributed(
        model,
        clean_image,
        "dn",
        (16, 16, 16),
        devices=2,
        accelerator="cpu",
        batch_size=batch_size,
        output_dir=tmp_path / "ddp",
        **kw,
    )
    np.testing.assert_array_equal(multi.effect_raw, single.effect_raw)
    np.testing.assert_array_equal(multi.stderr, single.stderr)
    np.testing.assert_array_equal(multi.classification, single.classification)
    assert (tmp_path / "ddp" / "cem.npz").is_file() and (tmp_path / "ddp" / "figures" / "cem_panel.png").is_file()
    # the record counts both processes' passes: every unit (each padded to forward_batch, wherever it ran)
    # and a preparation each; rank 0's alone would be about half
    same_units = compute_cem(model, clean_image, "dn", (16, 16, 16), batch_size=batch_size, **kw).meta
    preparation = multi.meta["forward_passes"] - same_units["forward_passes"]
    assert 0 < preparation < same_units["forward_passes"] / 4, (multi.meta["forward_passes"], same_units)


# --- a 256x256 image: the result (its images alone are ~390 KiB) is larger than a pipe's buffer ------

_SCRIPT_256 = """
import sys
from pathlib import Path

import numpy as np
from skimage import data, transform
from cem_lab.parallel.fabric import compute_cem_distributed
from cem_lab.patches import PatchBank
from conftest import ConvStack


def image_256():
    return (transform.resize(data.chelsea(), (256, 256), anti_aliasing=True) * 255).round().astype(np.uint8)


KW = dict(block=32, estimator="exhaustive", samples=1, batch_size=16, progress=False, seed=3)
ROI = (96, 96, 32)


if __name__ == "__main__":
    model = ConvStack(depth=3, width=4)
    bank = PatchBank.embedded(patch_size=32, count=50, seed=1)
    out = sys.argv[1]
    if sys.argv[2] == "folder":
        compute_cem_distributed(model, image_256(), "dn", ROI, devices=2, accelerator="cpu", patch_bank=bank,
                                output_dir=out, figures=False, **KW)
    else:  # no output_dir: the result comes back through a temporary folder
        r = compute_cem_distributed(model, image_256(), "dn", ROI, devices=2, accelerator="cpu", patch_bank=bank, **KW)
        np.savez(out, effect_raw=r.effect_raw, stderr=r.stderr, classification=r.classification, counts=r.counts,
                 **{"image_" + k: v for k, v in r.images.items()})
    print("DDP-DONE", flush=True)
"""


def _run_256(tmp_path, target, how, timeout=240):
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_256.py"
    script.write_text(_SCRIPT_256)
    tests = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    try:
        proc = subprocess.run(
            [sys.executable, str(script), str(target), how],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        # subprocess.run kills the launcher; its spawned workers die with their pipes
        pytest.fail(
            f"a 2-process CEM of a 256x256 image did not exit within {timeout} s (hang); "
            f"stderr: {(err.stderr or b'')[-2000:]!r}"
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "DDP-DONE" in proc.stdout
    assert "is deprecated" not in proc.stderr, proc.stderr[-2000:]
    return script


@pytest.fixture(scope="module")
def single_256(tmp_path_factory):
    """The one-process map both 256x256 two-process tests compare with (computed once per module)."""
    import importlib.util

    from cem_lab.patches import PatchBank

    root = tmp_path_factory.mktemp("single_256")
    (root / "ddp_256.py").write_text(_SCRIPT_256)
    spec = importlib.util.spec_from_file_location("ddp_256", root / "ddp_256.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = compute_cem(
        ConvStack(depth=3, width=4),
        mod.image_256(),
        "dn",
        mod.ROI,
        patch_bank=PatchBank.embedded(patch_size=32, count=50, seed=1),
        output_dir=root / "single",
        figures=False,
        **mod.KW,
    )
    return result, root / "single"


def test_two_processes_on_a_256_image_exit_and_give_the_single_process_map(tmp_path, single_256):
    pytest.importorskip("lightning")
    _run_256(tmp_path, tmp_path / "ddp", "folder")
    single, single_dir = single_256
    with np.load(tmp_path / "ddp" / "cem.npz") as m, np.load(single_dir / "cem.npz") as s:
        assert set(m.files) == set(s.files)
        for k in s.files:
            np.testing.assert_array_equal(m[k], s[k], err_msg=k)
    assert single.counts.sum() > 0


@pytest.mark.slow  # 21 s; the two-process 256 px map and its exit stay in the default suite
def test_two_processes_without_output_dir_return_the_single_process_result(tmp_path, single_256):
    pytest.importorskip("lightning")
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("cem_ddp_*"))
    _run_256(tmp_path, tmp_path / "multi.npz", "none")
    assert set(Path(tempfile.gettempdir()).glob("cem_ddp_*")) == before  # the temporary folder is gone
    single, _ = single_256
    with np.load(tmp_path / "multi.npz") as m:
        np.testing.assert_array_equal(m["effect_raw"], single.effect_raw)
        np.testing.assert_array_equal(m["stderr"], single.stderr)
        np.testing.assert_array_equal(m["classification"], single.classification)
        np.testing.assert_array_equal(m["counts"], single.counts)
        assert {k[len("image_") :] for k in m.files if k.startswith("image_")} == set(single.images)
        for k, v in single.images.items():
            np.testing.assert_array_equal(m["image_" + k], v, err_msg=k)


@pytest.mark.slow  # 15 s: a third two-process run, for its log file only
def test_rank_0_log_records_reach_the_log_file(tmp_path, clean_image, small_bank):
    pytest.importorskip("lightning")
    import json
    import logging

    from cem_lab.parallel.fabric import compute_cem_distributed

    model = ConvStack(depth=3, width=6)
    kw = dict(block=8, patch_bank=small_bank, coarse=3, fine=5, progress=False, seed=3)
    log_file = tmp_path / "cem.log"
    log_file.write_text("[parent] first line\n")
    logger = logging.getLogger("cem_lab")
    handlers, level = list(logger.handlers), logger.level
    multi = compute_cem_distributed(
        model, clean_image, "dn", (16, 16, 16), devices=2, accelerator="cpu", batch_size=3, log_file=log_file, **kw
    )
    assert (list(logger.handlers), logger.level) == (handlers, level)  # the parent's logging is untouched
    lines = log_file.read_text().splitlines()
    assert lines[0] == "[parent] first line"  # appended, not overwritten
    crop = [ln for ln in lines if "local model: running on a" in ln]
    assert len(crop) == 1, lines  # rank 0 only
    assert "][cem_lab][INFO] - local model: running on a" in crop[0] and crop[0].startswith("[20")
    # no output_dir: the result comes back through a temporary folder, as complete as compute_cem's own
    single = compute_cem(model, clean_image, "dn", (16, 16, 16), batch_size=8, **kw)
    for k in ("effect", "effect_raw", "stderr", "ci_low", "ci_high", "counts", "classification", "roi_mask"):
        np.testing.assert_array_equal(getattr(multi, k), getattr(single, k), err_msg=k)
    assert set(multi.images) == set(single.images)
    for k in single.images:
        np.testing.assert_array_equal(multi.images[k], single.images[k])
    # the forward passes and pixels are both processes' (each prepares its own job), and the run times differ
    a, b = (
        json.loads(
            json.dumps(
                {
                    k: v
                    for k, v in r.summary().items()
                    if k not in ("forward_passes", "pixels_pushed", "timings", "checkpoints", "this_session")
                }
            )
        )
        for r in (multi, single)
    )
    assert a == b


@pytest.mark.slow  # 46 s; test_two_processes_on_a_256_image_exit_and_give_the_single_process_map keeps 256 in the default suite
def test_cli_two_processes_on_the_256_default_exit_with_the_one_process_map(tmp_path):
    """`cem-lab parallel=ddp_cpu` on the embedded 256x256 image exits by itself (it hung after
    writing its map before: the result went back through a full pipe) with the 1-process map, logs
    rank 0's lines to cem.log once, and a rerun of a run left unmarked by such a hang finishes."""
    import json
    import subprocess
    import sys

    args = ["cem=exhaustive", "cem.samples=1", "cem.block=32", "roi=[96,96,32]", "progress=false", "figures=false"]

    def cli(extra, folder):
        return subprocess.run(
            [sys.executable, "-m", "cem_lab.cli.cem", *args, *extra, f"hydra.run.dir={folder}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )

    one = cli([], tmp_path / "one")
    two = cli(["parallel=ddp_cpu"], tmp_path / "two")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = np.load(tmp_path / "one" / "cem.npz"), np.load(tmp_path / "two" / "cem.npz")
    assert tuple(a["input_shape"]) == (256, 256)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    log = (tmp_path / "two" / "cem.log").read_text()
    assert log.count("running on a") == 1, log
    assert "FutureWarning" not in two.stderr and "deprecated" not in two.stderr
    # what a hang left: the map complete on disk, never marked finished; the rerun finishes it
    (tmp_path / "two" / "done.json").unlink()
    again = cli(["parallel=ddp_cpu"], tmp_path / "two")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "done.json").read_text())["fingerprint"]
    np.testing.assert_array_equal(np.load(tmp_path / "two" / "cem.npz")["effect_raw"], a["effect_raw"])
