"""The paper's networks from the authors' checkpoint folder, by name: ``load_authors_model("EDSR-64-16", folder)``.

The file is the one the authors' ``MODEL_LIST`` names (``EDSR-64-16_15000.pth``), read as their ``load_model``
reads it (plain, BasicSR ``params_ema`` / ``params``, SwinIR's release, ``state_dict``; a ``module.`` prefix
removed), by cem_lab's own safe reader. Before any weight is copied, the file's keys and shapes are compared with
the network the name stands for: a checkpoint of another width, depth or variant is refused with the shapes that
differ, never loaded into a silently different network. Networks whose official keys spandrel reads (SwinIR,
HAT, RCAN, RRDBNet, DnCNN) go through spandrel and are checked by architecture, scale and parameter count.
MPRNet, MIRNetV2 and Restormer are only in spandrel-extra-arches (``pip install 'cem_lab[extra-arches]'``, code
under a non-commercial licence, logged at load): its registry is used for those names alone (spandrel's own is
left as it is), after the file's keys and shapes are checked against that package's class with the authors'
arguments; MPRNet's three stages give the last stage's image, clamped where the authors' forward clamps.

The network runs as cem_lab runs every model: RGB in [0, 1], ``N x 3 x H x W``; a multi-task network of scale 1
(``*_mix``, ``*_MIO``) mapped on SR x s gets the LR image bicubic-upsampled to the output size first.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.io import PathLike, file_sha256
from cem_lab.models.authors.catalogue import (
    AUTHORS_REPO,
    PACKAGES,
    AuthorsEntry,
    AuthorsModelError,
    entry,
    missing_package,
    package_need,
)
from cem_lab.models.by_path import DetectedNetwork, _spandrel, _strip_module_prefix
from cem_lab.models.checkpoint import CheckpointError, read_checkpoint

_SHOWN = 3
log = logging.getLogger("cem_lab")


def _where(e: AuthorsEntry) -> str:
    return (
        f"the authors publish it in the Google Drive folder linked from {AUTHORS_REPO} (README, model zoo), "
        "downloaded into CEM_Demo/ModelZoo/models/"
    )


def checkpoint_path(e: AuthorsEntry, folder: PathLike | None) -> Path:
    """The file of ``e`` in ``folder``, or a one-line refusal naming the file expected and where it is published."""
    if folder is None or str(folder) in ("", "???"):
        raise AuthorsModelError(
            f"model=authors needs the folder of the authors' checkpoints: model.dir=PATH (the one that holds "
            f"{e.file}; {_where(e)})"
        )
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise AuthorsModelError(f"model.dir={folder} is not a folder; give the folder that holds {e.file}")
    path = folder / e.file
    if not path.is_file():
        raise AuthorsModelError(f"{e.name} needs {e.file} in {folder}, which is not there; {_where(e)}")
    return path


def _shape(t: Tensor | None) -> list[int] | None:
    return None if t is None else list(t.shape)


def check_fit(e: AuthorsEntry, path: Path, want: dict[str, Tensor], got: dict[str, Tensor]) -> None:
    """Refuse a checkpoint whose keys or shapes differ from the network ``e`` stands for, naming the differences."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    shapes = [k for k in want if k in got and tuple(want[k].shape) != tuple(got[k].shape)]
    if not (missing or extra or shapes):
        return
    parts = []
    if shapes:
        shown = "; ".join(f"{k}: {_shape(got[k])} in the file, {_shape(want[k])} in {e.name}" for k in shapes[:_SHOWN])
        parts.append(f"{len(shapes)} tensors of other shapes ({shown})")
    if missing:
        parts.append(f"{len(missing)} keys missing ({', '.join(missing[:_SHOWN])}{', ...' * (len(missing) > _SHOWN)})")
    if extra:
        parts.append(
            f"{len(extra)} keys not in {e.name} ({', '.join(extra[:_SHOWN])}{', ...' * (len(extra) > _SHOWN)})"
        )
    raise AuthorsModelError(
        f"{path} does not fit {e.name} ({e.arch.rsplit('.', 1)[-1] if e.arch else e.spandrel} "
        f"{e.kwargs or ''}): {'; '.join(parts)}. Is it the checkpoint of another width, depth or variant? "
        f"model.name names the network, model.dir the folder"
    )


class AuthorsNetwork(nn.Module):
    """A network of the paper's zoo as cem_lab runs it: ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, sH, sW)``.

    ``pre_upsample``: a scale-1 network mapped on SR x ``pre_upsample`` (the multi-task ones) gets its LR input
    bicubic-upsampled to the output size first (``F.interpolate``, as cem_lab's own pre-upsampling networks).
    ``clamp``: the output is clamped to [0, 1], where the authors' forward clamps it (MPRNet_DR).
    """

    def __init__(self, net: nn.Module, record: dict[str, Any], scale: int, pre_upsample: int = 1, clamp: bool = False):
        super().__init__()
        self.net = net
        self.clamp = bool(clamp)
        self.pre_upsample = int(pre_upsample)
        self.scale = int(scale) * self.pre_upsample
        self.crop_multiple = max(1, int(getattr(net, "crop_multiple", getattr(net, "size_multiple", 1))))
        self.model_info = record
        self.name = record["name"]

    def forward(self, x: Tensor) -> Tensor:
        """Run the network (after the bicubic pre-upsampling of a scale-1 network on SR)."""
        if self.pre_upsample > 1:
            h, w = x.shape[-2:]
            x = F.interpolate(
                x, size=(h * self.pre_upsample, w * self.pre_upsample), mode="bicubic", align_corners=False
            )
        out = self.net(x)
        return out.clamp(0, 1) if self.clamp else out


def _build_own(e: AuthorsEntry, path: Path, state: dict[str, Tensor]) -> nn.Module:
    module, _, cls = str(e.arch).rpartition(".")
    net = getattr(importlib.import_module(module), cls)(**e.kwargs)
    check_fit(e, path, net.state_dict(), state)
    net.load_state_dict(state, strict=True)
    return net


def _package(e: AuthorsEntry):
    """The module of the package ``e`` needs beyond spandrel (None if none); its absence is one line naming the fix."""
    if e.package is None:
        return None
    try:
        if missing_package(e) is None:
            return importlib.import_module(PACKAGES[e.package][0])
        why = "not installed"
    except ImportError as err:  # installed, but it does not import
        why = str(err)
    raise AuthorsModelError(f"{e.name} {package_need(e)} ({why})")


def _build_spandrel(
    e: AuthorsEntry, path: Path, state: dict[str, Tensor], record: dict[str, Any], package=None
) -> DetectedNetwork:
    spandrel = _spandrel()
    registry = spandrel.MAIN_REGISTRY
    if package is not None:  # that package's registry for this name alone: spandrel's own is left unchanged
        module, _, cls = str(e.arch).rpartition(".")
        with torch.device("meta"):  # shapes only, no memory: the keys and shapes the authors' arguments give
            want = getattr(importlib.import_module(module), cls)(**e.kwargs).state_dict()
        check_fit(e, path, want, state)
        registry = package.EXTRA_REGISTRY
    try:
        desc = spandrel.ModelLoader(device="cpu", registry=registry).load_from_state_dict(state)
    except Exception as err:  # unknown keys, or known ones whose tensors do not fit
        raise AuthorsModelError(
            f"{path} is not the {e.spandrel} network that {e.name} stands for (spandrel: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); is it the right file?"
        ) from None
    found = str(desc.architecture.id)
    if found.lower() != str(e.spandrel).lower() and desc.architecture.name.lower() != str(e.spandrel).lower():
        raise AuthorsModelError(f"{path} holds a {desc.architecture.name} network; {e.name} is a {e.spandrel}")
    if int(desc.scale) != int(e.scale):
        raise AuthorsModelError(f"{path} holds a scale-{desc.scale} network; {e.name} is scale {e.scale}")
    loader = f"spandrel {spandrel.__version__}"
    if package is not None:
        loader += f" + {e.package} {package.__version__}"
        record = dict(record, licence=e.licence)
    record = dict(record, loader=loader, architecture=desc.architecture.name)
    record["scale"], record["in_channels"], record["out_channels"] = int(desc.scale), 3, 3
    record["size_requirements"] = {
        "minimum": desc.size_requirements.minimum,
        "multiple_of": desc.size_requirements.multiple_of,
        "square": desc.size_requirements.square,
    }
    net = DetectedNetwork(desc, record)
    net.name = e.name
    return net


def load_authors_model(
    name: str, dir: PathLike | None = None, scale: int | None = None, trust: bool = False
) -> nn.Module:
    """The network of the paper's zoo named ``name`` with the weights of its file in ``dir``, in eval mode.

    ``scale``: the scale of the task it will run on (None: its own); a multi-task scale-1 network asked for SR x s
    is pre-upsampled. Everything is checked before a weight is copied; every refusal is one line naming the fix.
    """
    e = entry(name)
    if e.build == "none":
        raise AuthorsModelError(
            f"{e.name} ({e.authors_class}) is not built by cem_lab yet: {e.why}. Map it with its own class: "
            f"model=custom model.net._target_=YOUR.CLASS model.checkpoint=PATH"
        )
    package = _package(e)
    own_scale = int(e.scale)
    want = own_scale if scale is None else int(scale)
    pre = 1
    if want != own_scale:
        if e.task == "mixed" and own_scale == 1:
            pre = want
        else:
            raise AuthorsModelError(
                f"{e.name} is a scale-{own_scale} network ({e.task}); the task asks for scale {want}: pick a task of "
                f"that scale (task.scale={own_scale}) or another network"
            )
    path = checkpoint_path(e, dir)
    try:
        state, layout = read_checkpoint(path, trust=trust)
    except CheckpointError as err:
        raise AuthorsModelError(f"{e.name}: {err}") from None
    state, prefix = _strip_module_prefix(state)
    parameters = None
    record = {
        "name": e.name,
        "loader": "cem_lab.models.authors",
        "build": e.build,
        "authors_class": e.authors_class,
        "checkpoint": str(path),
        "sha256": file_sha256(path),
        "layout": layout,
        "prefix_stripped": prefix,
        "task": e.task,
    }
    if e.build == "own":
        net = _build_own(e, path, state)
        record["class"] = e.arch
        record["kwargs"] = dict(e.kwargs)
    else:
        net = _build_spandrel(e, path, state, record, package)
    parameters = int(sum(p.numel() for p in net.parameters()))
    expected = getattr(e, "parameters", None)
    if expected is not None and parameters != int(expected):
        raise AuthorsModelError(
            f"{path} builds a network of {parameters:,} parameters; {e.name} has {int(expected):,}: is it the "
            f"checkpoint of another width, depth or variant?"
        )
    if e.licence:
        log.info("%s: %s's %s code, under the %s; %s", e.name, e.package, e.spandrel, e.licence, path)
    if e.build == "spandrel":
        net.model_info["parameters"] = parameters
        if pre == 1 and not e.clamp:
            return net.eval()
        record = net.model_info
    record["parameters"] = parameters
    if pre > 1:
        record["sr_input"] = f"the LR image bicubic-upsampled x{pre} by cem_lab (F.interpolate), as a scale-1 net"
    if e.clamp:
        record["output"] = "clamped to [0, 1], as the authors' forward clamps it"
    return AuthorsNetwork(net, record, own_scale, pre, clamp=e.clamp).eval()


__all__ = ["AuthorsNetwork", "check_fit", "checkpoint_path", "load_authors_model"]
