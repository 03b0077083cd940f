"""`cem-lab`: compute one causal effect map from a Hydra config (see conf/cem.yaml).

With no arguments it runs the embedded default: cem_lab's own small DnCNN on a crop of
scikit-image's `chelsea`, DN sigma 50, embedded patch bank, reference estimator settings.

Rerunning a command reuses its folder: a finished run is recognised without any model work
(cem_lab/bookkeeping/run_index.py), an interrupted one resumes from its checkpoint.

In a multirun (``-m``, see cem_lab/bookkeeping/sweep_record.py) a job that fails writes ``error.txt`` in
its folder and returns, so that the other jobs go on.

Testing aids: the environment variable ``CEM_LAB_TEST_INTERRUPT=[JOB:]BATCHES[:hang]`` raises
KeyboardInterrupt (as Ctrl-C would) after BATCHES batches of the multirun job number JOB (0-based;
without ``JOB:``, of any run), to test that an interrupted sweep resumes exactly; with ``:hang`` the
run stops there for good instead (after a checkpoint), to be killed (``kill -9``) by a test.
``CEM_LAB_TEST_START_GATE`` (below) starts runs at one moment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from cem_lab.bookkeeping.run_index import DONE_FILE, finished_run, mark_done, state_status

log = logging.getLogger("cem_lab")


def run_name(override_dirname: str) -> str:
    """A folder name from the command-line overrides: stable, readable, filesystem-safe.

    Path values are shortened to their file name; whenever anything is shortened, a hash of
    the full overrides is appended so that two different runs never share a folder.
    """
    if not override_dirname:
        return "default"
    parts = []
    for item in override_dirname.split(","):
        key, sep, value = item.partition("=")
        if "/" in value or "\\" in value:
            value = re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value
        parts.append(f"{key}{sep}{value}")
    name = re.sub(r"[^A-Za-z0-9=,._+\-\[\]]+", "_", ",".join(parts))
    if name != override_dirname or len(name) > 200:
        digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
        name = f"{name[:200]}-{digest}"
    return name


def zoo_file(name: str) -> str:
    """The resolver ``cem_zoo_file``: the weights file of zoo model ``name``. ``model=zoo`` records
    it, so a finished run is recognised only while those weights are unchanged (done.json keeps
    the size and modification time of every file its config names)."""
    from cem_lab.models.zoo import ZOO_DIR

    return str(ZOO_DIR / f"{name}.safetensors")


if not OmegaConf.has_resolver("cem_run_name"):
    OmegaConf.register_new_resolver("cem_run_name", run_name)
if not OmegaConf.has_resolver("cem_zoo_file"):
    OmegaConf.register_new_resolver("cem_zoo_file", zoo_file)


def standard_image_file(name: str) -> str:
    """The resolver ``cem_standard_image`` (conf/dataset/standard.yaml): the installed file of a standard
    test image (cem_lab.datasets)."""
    from cem_lab.datasets import standard_image_file as installed_file

    return installed_file(name)


if not OmegaConf.has_resolver("cem_standard_image"):
    OmegaConf.register_new_resolver("cem_standard_image", standard_image_file)


def folder_image_file(folder: str, index: Any) -> str:
    """The resolver ``cem_folder_image`` (conf/dataset/folder.yaml): image number ``index`` (0-based, by
    file name) of ``folder``, so that a study sweeps a folder with ``folder.index=range(0,N)``."""
    from cem_lab.training.data import IMAGE_EXTENSIONS, find_images

    root = Path(str(folder)).expanduser()
    if not root.is_dir():
        raise ValueError(f"dataset=folder: {root} is not a folder; give folder.dir=PATH, a folder of images")
    files = find_images(root)
    if not files:
        raise ValueError(
            f"dataset=folder: {root} holds no image ({', '.join(IMAGE_EXTENSIONS)}); give a folder of "
            "images as folder.dir"
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(files):
        raise ValueError(
            f"dataset=folder: folder.index={index!r}, but {root} holds {len(files)} image(s): use an "
            f"index in [0, {len(files) - 1}] (sweep them all with folder.index=range(0,{len(files)}))"
        )
    return str(files[index])


if not OmegaConf.has_resolver("cem_folder_image"):
    OmegaConf.register_new_resolver("cem_folder_image", folder_image_file)

from cem_lab.bookkeeping import sweep_record  # noqa: E402 (importing it registers the cem_sweep_name resolver)

INTERRUPT_ENV = "CEM_LAB_TEST_INTERRUPT"
#: testing aid: with ``CEM_LAB_TEST_START_GATE=<path>`` a run writes ``<path>.<pid>.ready`` and waits
#: until ``<path>`` exists before it takes its run folder's lock, so that a test can release two
#: runs into one folder at the same moment
START_GATE_ENV = "CEM_LAB_TEST_START_GATE"
PROGRAM = "cem-lab"
#: the `cem` config keys of the adaptive estimator (conf/cem/adaptive.yaml)
ADAPTIVE_OPTIONS = ("round_size", "growth", "max_samples", "half_width", "settled_half_width", "level", "roi_blocks")


def instantiate_checked(node: Any) -> Any:
    """``hydra.utils.instantiate``, with a user error raised by the target's constructor or loader
    (unknown zoo name, bad knob, malformed patch bank) reported as itself, not wrapped by Hydra."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from cem_lab.bookkeeping.clean_errors import unwrap_user_error

    try:
        return instantiate(node)
    except InstantiationException as err:
        user = unwrap_user_error(err)
        if user is not None:
            raise user from None
        raise


def build_model(cfg: DictConfig):
    """The model from a `model` config: `net` (a `_target_`, e.g. an architecture detected by spandrel,
    model=auto) with an optional `checkpoint`, or a saved cem_lab model (`path`, model=file)."""
    from cem_lab.io import file_sha256
    from cem_lab.models.checkpoint import CheckpointError, load_model, load_weights

    if "path" in cfg.keys() and OmegaConf.is_missing(cfg, "path"):  # `in` is False for a ??? value
        raise CheckpointError(
            "this model needs its file: model.path=PATH (model=auto: a checkpoint of an official "
            "architecture, .pth/.pt/.ckpt/.safetensors; model=file: a cem_lab .safetensors)"
        )
    if "id" in cfg.keys() and OmegaConf.is_missing(cfg, "id"):
        from cem_lab.models.pretrained import catalogue_ids

        raise CheckpointError(
            f"model=pretrained needs the network: model.id=NAME, one of {', '.join(catalogue_ids())} "
            "(cem-pretrained list says what each is)"
        )
    if cfg.get("net") is None:
        return load_model(cfg.path)
    net = instantiate_checked(cfg.net)
    ckpt = cfg.get("checkpoint")
    if ckpt:
        report = load_weights(net, ckpt)
        log.info("loaded %s", report)
        if getattr(net, "model_info", None) is None:  # recorded in summary.json
            net.model_info = {
                "class": f"{type(net).__module__}.{type(net).__qualname__}",
                "parameters": int(sum(p.numel() for p in net.parameters())),
                "checkpoint": str(ckpt),
                "sha256": file_sha256(ckpt),
            }
    return net


def build_patch_bank(cfg: DictConfig):
    return instantiate_checked(cfg)


def resolve_device(name: Any):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class PreparedRun:
    """A run whose every input has been built and checked, with nothing written yet."""

    job: Any  #: the checked CEMJob (on the run's device; for several processes a check only)
    model: Any
    image: Any
    task: Any
    roi: list
    kwargs: dict  #: compute_cem's keywords
    distributed: dict | None  #: trainer settings when the map is spread over processes


def _checkpoint_cadence(cfg: DictConfig) -> tuple[float | None, int | None]:
    from cem_lab.causal.runner import DEFAULT_CHECKPOINT_S, check_checkpoint_cadence

    ck = cfg.get("checkpoint") or {}
    every_s = ck.get("every_s", DEFAULT_CHECKPOINT_S)
    every_items = ck.get("every_items")
    check_checkpoint_cadence(every_s, every_items)
    return every_s, every_items


def prepare_kwargs(cfg: DictConfig, output_dir: Path):
    """The model, image, task and :func:`~cem_lab.causal.runner.prepare_cem` keywords of ``cfg``,
    and the run keywords (output folder, figures, progress, checkpoint cadence)."""
    from cem_lab.tasks import make_task

    task = make_task(**OmegaConf.to_container(cfg.task, resolve=True))
    device = resolve_device(cfg.device)
    import torch

    torch.manual_seed(cfg.seed)  # models without a checkpoint get a reproducible initialisation
    check_model_task(cfg.model, task)
    image, name = cfg.image, None
    if image is None and cfg.degraded is None:
        from cem_lab.models.embedded import embedded_demo_image

        image, name = embedded_demo_image(), "chelsea_256"
    image, name = crop_input(cfg, image, name)
    roi = resolve_roi(cfg, image, task)
    model = build_model(cfg.model).to(device)
    c = cfg.cem
    bank = build_patch_bank(cfg.patches) if c.intervention == "lv" else None
    every_s, every_items = _checkpoint_cadence(cfg)
    kwargs = dict(
        degraded=cfg.degraded,
        block=c.block,
        patch_bank=bank,
        sampler=c.get("sampler", "uniform"),
        intervention=c.intervention,
        estimator=c.estimator,
        samples=c.get("samples"),
        coarse=c.get("coarse", 3),
        fine=c.get("fine", 50),
        tol=c.tol,
        classification=c.classification,
        estimator_options={k: c[k] for k in ADAPTIVE_OPTIONS if k in c} or None,
        metric=cfg.metric.name,
        crop_border=cfg.metric.crop_border,
        test_y_channel=cfg.metric.test_y_channel,
        seed=cfg.seed,
        image_seed=cfg.image_seed,
        batch_size=cfg.batch_size,
        forward_batch=cfg.forward_batch,
        mode=cfg.mode,
        crop_margin=cfg.crop_margin,
        crop_multiple=cfg.crop_multiple,
        image_name=name,
        model_name=cfg.model.get("name") or getattr(model, "name", None),
        recompute=cfg.get("recompute", "roi_crop"),
        device=device,
    )
    run_kwargs = dict(
        output_dir=output_dir,
        figures=cfg.figures,
        progress=cfg.progress,
        checkpoint_every=every_s,
        checkpoint_every_items=every_items,
    )
    return model, image, task, kwargs, run_kwargs, roi


def check_model_task(model_cfg: DictConfig, task) -> None:
    """A zoo model asked for a task it was not trained for is refused before anything is built (a study's
    list of models run on one task must not silently hold a denoiser among super-resolvers)."""
    if model_cfg.get("id") is None or "zoo" not in str(OmegaConf.select(model_cfg, "net._target_", default="")):
        return
    from cem_lab.models.zoo import ZooError, read_zoo_entry
    from cem_lab.tasks.base import task_label

    try:
        entry = read_zoo_entry(str(model_cfg.id))
    except ZooError:
        return  # the loader names the known models
    trained = list((entry.get("validation") or {}).get("tasks") or {})
    want = task_label(task)
    if trained and want not in trained and not model_cfg.get("allow_other_task", False):
        raise ValueError(
            f"zoo model {model_cfg.id!r} was trained for {', '.join(trained)}, not {want}: pick a model "
            f"of this task (cem-zoo list), or set model.allow_other_task=true to map it off its task anyway"
        )


def crop_input(cfg: DictConfig, image: Any, name: str | None) -> tuple[Any, str | None]:
    """``image_crop``: a centre square of that side, or [top, left, height, width], cut from the clean image
    (and from the degraded input at its scale) before anything else; the image name records the crop."""
    spec = cfg.get("image_crop")
    if spec is None:
        return image, name
    from cem_lab.images import load_image

    if image is None:
        raise ValueError(
            "image_crop cuts the clean image: give it (image=PATH or dataset=standard ...), or crop "
            "the degraded file yourself"
        )
    arr = load_image(image) if not hasattr(image, "shape") else image
    h, w = arr.shape[:2]
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1 or spec > min(h, w):
            raise ValueError(f"image_crop={spec} does not fit the {h}x{w} image; use a size in [1, {min(h, w)}]")
        top, left, ch, cw = (h - spec) // 2, (w - spec) // 2, spec, spec
    else:
        try:
            top, left, ch, cw = (int(v) for v in spec)
        except (TypeError, ValueError):
            raise ValueError(
                f"image_crop must be a size (a centre square) or [top, left, height, width], got {spec!r}"
            ) from None
        if top < 0 or left < 0 or ch < 1 or cw < 1 or top + ch > h or left + cw > w:
            raise ValueError(f"image_crop={[top, left, ch, cw]} lies outside the {h}x{w} image")
    if cfg.degraded is not None:
        raise ValueError("image_crop with a degraded input (dataset=pair) is not supported: crop both files yourself")
    base = name or (Path(str(image)).stem if isinstance(image, (str, Path)) else "image")
    return arr[top : top + ch, left : left + cw].copy(), f"{base}_crop{top}_{left}_{ch}x{cw}"


def resolve_roi(cfg: DictConfig, image: Any, task) -> Any:
    """``roi``: as given, or ``roi=placed``: ROI ``roi_place.index`` of ``roi_place.count`` by the seeded
    texture-strata rule of :mod:`cem_lab.causal.roi_placement`, on the clean image at output size."""
    roi = cfg.roi
    if not (isinstance(roi, str) and roi == "placed"):
        return roi
    from cem_lab.causal.roi_placement import place_roi
    from cem_lab.images import load_image

    if image is None:
        raise ValueError("roi=placed places ROIs on the clean image: give it (image=PATH), or give explicit rois")
    arr = load_image(image) if not hasattr(image, "shape") else np.asarray(image)
    arr = arr[: arr.shape[0] - arr.shape[0] % task.scale, : arr.shape[1] - arr.shape[1] % task.scale]
    rp = cfg.get("roi_place") or {}
    placed = place_roi(
        arr,
        size=int(rp.get("size", 32)),
        index=int(rp.get("index", 0)),
        count=int(rp.get("count", 4)),
        seed=int(rp.get("seed", 0)),
        align=int(rp.get("align") or cfg.cem.block),
        margin=int(rp.get("margin", 0)),
    )
    log.info(
        "roi=placed: ROI %d of %d (texture stratum %.1f..%.1f, this ROI %.1f) at %s",
        placed.index + 1,
        placed.count,
        *placed.stratum,
        placed.texture,
        placed.as_list(),
    )
    return placed.as_list()


def prepare(cfg: DictConfig, output_dir: Path) -> PreparedRun:
    """Build the task, model, patch bank and the CEM job of ``cfg`` and check them and the folder's
    checkpoint (another run's is refused): every refusal happens here, before anything is written."""
    from cem_lab.causal.runner import prepare_cem

    model, image, task, kwargs, run_kwargs, roi = prepare_kwargs(cfg, output_dir)
    device = kwargs.pop("device")
    dist = cfg.get("trainer") or {}
    distributed = None
    if int(dist.get("devices", 1) or 1) != 1 or int(dist.get("num_nodes", 1) or 1) > 1:
        distributed = OmegaConf.to_container(dist, resolve=True) if OmegaConf.is_config(dist) else dict(dist)
    with _quiet("cem_lab") if distributed else nullcontext():
        # for several processes this is a check only: rank 0 prepares the job again and logs it
        job = prepare_cem(model, image, task, list(roi), device=device, **kwargs)
        job.check_folder(output_dir)
    return PreparedRun(job, model, image, task, list(roi), {**kwargs, **run_kwargs}, distributed)


@contextmanager
def _quiet(logger: str):
    log_ = logging.getLogger(logger)
    level = log_.level
    log_.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log_.setLevel(level)


def launch_rank(cfg: DictConfig) -> int:
    """This process's rank when a cluster started one process per device (``srun`` with
    ``trainer=ddp_gpu``, or ``torchrun``); 0 otherwise. Only rank 0 locks and writes the run folder."""
    dist = cfg.get("trainer") or {}
    if int(dist.get("devices", 1) or 1) == 1 and int(dist.get("num_nodes", 1) or 1) == 1:
        return 0
    for var in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def compute(p: PreparedRun, output_dir: Path, on_batch: Callable | None = None):
    """Run a prepared map: its checkpoints, numbers and figures go to ``output_dir``."""
    from cem_lab.causal.runner import run_cem

    if p.distributed is None:
        kw = p.kwargs
        return run_cem(
            p.job,
            output_dir,
            figures=kw["figures"],
            progress=kw["progress"],
            on_batch=on_batch,
            checkpoint_every=kw["checkpoint_every"],
            checkpoint_every_items=kw["checkpoint_every_items"],
        )
    from cem_lab.parallel.fabric import compute_cem_distributed

    d = p.distributed
    p.job = None  # the check is done; each process builds its own job
    return compute_cem_distributed(
        p.model.cpu(),
        p.image,
        p.task,
        p.roi,
        devices=d.get("devices"),
        accelerator=d.get("accelerator", "auto"),
        num_nodes=int(d.get("num_nodes", 1)),
        strategy=d.get("strategy", "ddp_spawn"),
        log_file=str(output_dir / "cem.log"),
        **p.kwargs,
    )


def run(
    cfg: DictConfig, output_dir: Path, on_batch: Callable | None = None, *, memory=None, tracker: Callable | None = None
):
    """Compute and save the CEM that ``cfg`` describes into ``output_dir`` (locked for the run), and
    mark it finished (``done.json``).

    Nothing is written before the input is accepted (:func:`prepare`); then ``config.yaml``,
    Hydra's record and ``cem.log`` (with the records ``memory``, a :func:`buffered_log`, kept of
    the checks), then the map. ``tracker``: a context (W&B) that sees the run and its folder.
    """
    from cem_lab.bookkeeping.run_folder import accept_run_folder, buffered_log, close_log_file
    from cem_lab.folder_lock import hold_run_folder

    output_dir = Path(output_dir)
    with hold_run_folder(output_dir, what=PROGRAM):
        with nullcontext(memory) if memory is not None else buffered_log() as kept:
            prepared = prepare(cfg, output_dir)  # every refusal happens here, before anything is written
            handler = accept_run_folder(cfg, output_dir, kept)
        try:
            with tracker() if tracker is not None else nullcontext(None) as wb:
                result = compute(prepared, output_dir, on_batch)
                mark_done(cfg, output_dir, result.meta["fingerprint"])
                if wb is not None:
                    wb.log_folder(output_dir)
            return result
        finally:
            close_log_file(handler)


def report(result, folder: Path, skipped: bool = False) -> str:
    """The console lines of a finished map. A reused map (``skipped``) says that nothing was computed
    now and when its numbers were computed; the figure path is printed only if the figure exists."""
    s = result.summary()
    c, sh = s["counts"], s["shares"]
    head = f"CEM already finished (skipped) in {folder}" if skipped else f"CEM written to {folder}"
    lines = [
        head,
        f"  ROI {s['metric']} before intervention: {s['baseline_metric']:.3f} {s['unit']}",
        f"  blocks outside the ROI: {s['blocks_outside_roi']}  positive {c['positive']} ({sh['positive']:.1%})  "
        f"negative {c['negative']} ({sh['negative']:.1%})  zero {c['zero']} ({sh['zero']:.1%})",
    ]
    if "effect_max" in s:
        lines.append(
            f"  effect range {s['effect_range']:.3f} {s['unit']}: max {s['effect_max']['value']:.3f} at block "
            f"{tuple(s['effect_max']['block'])}, min {s['effect_min']['value']:.3f} at block "
            f"{tuple(s['effect_min']['block'])}"
        )
    work = f"{s['forward_passes']} forward passes, {s['timings'].get('run_s', 0):.1f} s on {s['device']}"
    if skipped:
        when = _finished_at(folder)
        lines.append(f"  nothing computed now; the map was computed earlier{when}: mode {s['mode']}, {work}")
    else:
        lines.append(f"  mode {s['mode']}, {work}")
    panel = folder / "figures" / "cem_panel.png"
    lines.append(f"  figures: {panel}" if panel.is_file() else "  figures: none (figures=false)")
    return "\n".join(lines)


def _finished_at(folder: Path) -> str:
    import json

    try:
        when = json.loads((folder / DONE_FILE).read_text()).get("finished")
    except (OSError, ValueError):
        when = None
    return f" (finished {when})" if when else ""


def _interrupt_hook(job_num: int | None) -> Callable | None:
    """The testing aid of CEM_LAB_TEST_INTERRUPT (see the module docstring)."""
    spec = os.environ.get(INTERRUPT_ENV, "").strip()
    if not spec:
        return None
    parts = spec.split(":")
    hang = parts[-1] == "hang"
    if hang:
        parts = parts[:-1]
    job, batches = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    if job and (job_num is None or int(job) != job_num):
        return None
    limit, seen = int(batches), [0]

    def hook(info) -> None:
        seen[0] += 1
        if seen[0] >= limit:
            if hang:
                import time

                print(f"{INTERRUPT_ENV}={spec}: hanging after {seen[0]} batches", file=sys.stderr, flush=True)
                while True:
                    time.sleep(60)
            raise KeyboardInterrupt(f"{INTERRUPT_ENV}={spec}: stopped after {seen[0]} batches")

    return hook


def _wait_for_start() -> None:
    """The testing aid of CEM_LAB_TEST_START_GATE (see START_GATE_ENV)."""
    gate = os.environ.get(START_GATE_ENV, "").strip()
    if gate:
        import time

        Path(f"{gate}.{os.getpid()}.ready").touch()
        while not os.path.exists(gate):
            time.sleep(0.0005)


def command_line() -> str:
    """The command that started this process, for the run folder's lock (who holds a busy folder)."""
    import shlex

    prog = Path(sys.argv[0]).name if sys.argv else PROGRAM
    if prog in ("cem.py", "__main__.py", "-c"):
        prog = PROGRAM
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def execute(
    cfg: DictConfig, folder: Path, *, job_num: int | None = None, group: str | None = None, record_errors: bool = False
) -> dict[str, Any]:
    """Run (or reuse) the CEM of ``cfg`` in ``folder``, log it, print the report; the job's outcome.

    The folder is locked first (:mod:`cem_lab.folder_lock`): a folder another process holds is
    refused untouched. The outcome's ``status``: ``done`` (computed now), ``resumed`` (finished
    from a checkpoint), ``skipped`` (it was already finished: no CEM work). With ``record_errors``
    (a multirun job), a failure is written to the folder's ``error.txt`` while the lock is held.
    """
    from cem_lab.bookkeeping.run_folder import buffered_log
    from cem_lab.folder_lock import FolderBusyError, hold_run_folder

    if launch_rank(cfg) != 0:  # another task of a cluster launch: rank 0 holds and writes the folder
        compute(prepare(cfg, folder), folder)
        return {"status": "done", "rank": launch_rank(cfg)}
    _wait_for_start()
    # log lines before the run is accepted (a killed holder's lock taken over, the checks) are kept
    # for cem.log, and dropped with a refused run
    with buffered_log() as memory, hold_run_folder(folder, what=PROGRAM, command=command_line()):
        try:
            return _execute_locked(cfg, folder, memory, job_num=job_num, group=group)
        except Exception as err:
            if record_errors and not isinstance(err, FolderBusyError):
                from cem_lab.errors import USER_ERRORS

                sweep_record.record_error(folder, err, isinstance(err, USER_ERRORS))
            raise


def _execute_locked(cfg: DictConfig, folder: Path, memory, *, job_num: int | None, group: str | None) -> dict:
    from cem_lab.causal.result import CEMResult
    from cem_lab.cli.atlas import execute_atlas, is_atlas

    if is_atlas(cfg):
        return execute_atlas(cfg, folder, memory)
    logger_cfg = cfg.get("logger") or {}
    summary = finished_run(cfg, folder)
    skipped = summary is not None
    use_wandb = logger_cfg.get("name") == "wandb"
    if use_wandb and skipped:
        from cem_lab.bookkeeping.wandb_logging import already_logged

        use_wandb = not already_logged(folder, summary.get("fingerprint"))

    def tracker():
        if not use_wandb:
            return nullcontext(None)
        from cem_lab.bookkeeping.wandb_logging import wandb_run

        return wandb_run(cfg, folder, group=group, name=folder.name)

    if skipped:
        result = CEMResult.load(folder)
        status = "skipped"
        with tracker() as wb:
            if wb is not None:
                wb.log_folder(folder)
    else:
        from cem_lab.cli.devices import device_lease

        before = state_status(folder)
        with device_lease(cfg.device) as device:
            if device != cfg.device:
                cfg.device = device  # recorded in config.yaml; not part of a run's identity
            result = run(cfg, folder, on_batch=_interrupt_hook(job_num), memory=memory, tracker=tracker)
        status = "done" if before is None else "skipped" if before[0] == "complete" else "resumed"
    (folder / sweep_record.ERROR_FILE).unlink(missing_ok=True)  # an earlier attempt's error
    print(report(result, folder, skipped=skipped), flush=True)
    s = result.summary()
    return {
        "status": status,
        "forward_passes": 0 if skipped else s.get("forward_passes"),
        "baseline_metric": s.get("baseline_metric"),
        "counts": s.get("counts"),
    }


@hydra.main(version_base="1.3", config_path="pkg://cem_lab.conf", config_name="cem")
def _main(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    folder = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    job_num = int(hc.job.num) if multirun and hc.job.get("num") is not None else None
    group = Path(str(hc.sweep.dir)).name if multirun else None  # the sweep's name
    try:
        return execute(cfg, folder, job_num=job_num, group=group, record_errors=multirun)
    except Exception as err:  # every failure of one job is recorded, the sweep goes on
        from cem_lab.bookkeeping.clean_errors import job_failed

        return job_failed(PROGRAM, err, folder, multirun)


def main() -> None:
    from cem_lab.bookkeeping.clean_errors import run_cli

    run_cli(_main, PROGRAM)


if __name__ == "__main__":
    # run the function of the importable module (not of __main__), so that launchers which pickle
    # the task function for worker processes (joblib, submitit) find it and its resolvers there
    from cem_lab.cli import cem as _cem  # noqa: PLW0406

    _cem.main()
