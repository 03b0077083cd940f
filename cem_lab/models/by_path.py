"""Official architectures by checkpoint path: the architecture and its hyper-parameters are detected
from the state dict by `spandrel <https://github.com/chaiNNer-org/spandrel>`_ (SwinIR, Swin2SR, HAT,
DAT, DRCT, RCAN, ESRGAN/RRDBNet, Compact/SRVGG, RealCUGAN, SCUNet, NAFNet, DnCNN, DRUNet, ...), so a
user's checkpoint is mapped without its code.

- The file is read by cem_lab's own safe reader (:func:`~cem_lab.models.checkpoint.read_state_dict`:
  ``weights_only`` pickles or safetensors; BasicSR ``params_ema`` / ``params``, KAIR plain dicts,
  Lightning ``state_dict``), and a DataParallel/DDP ``module.`` prefix is removed, before spandrel
  sees the keys.
- :class:`DetectedNetwork` is the network as cem_lab runs it: differentiable (spandrel's own call
  API runs under ``torch.inference_mode``, which the dependency probe and the gradient attributions
  cannot use), with ``scale``, ``in_channels`` and ``out_channels`` read from the descriptor and the
  input padded to the architecture's size requirements exactly as spandrel does (reflect, then
  replicate at the bottom and right; the padding is cut off the output). Crops for the ROI are made
  on the architecture's size grid (``crop_multiple``), so the padding only ever touches a full image.
- :attr:`DetectedNetwork.model_info` (architecture, tags, parameters, checkpoint digest, layout) is
  recorded in every run's ``summary.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cem_lab.io import PathLike, file_sha256
from cem_lab.models.checkpoint import NESTED_KEYS, CheckpointError, read_checkpoint

#: what to do with a one-channel (grey) network given cem_lab's RGB images
GREY_MODES = ("per_channel",)
_KEY_LIMIT = 12


def _spandrel():
    try:
        import spandrel  # lazy: imports torchvision (about 1.4 s), and may be broken without it
    except ImportError as err:  # torchvision missing or broken is the usual cause
        raise CheckpointError(
            f"model=auto needs the spandrel package ({err}); install it with `pip install spandrel` "
            "(it needs torchvision built for your torch: on these machines "
            "`pip install torch==2.14.1 torchvision==0.29.1`)"
        ) from err
    return spandrel


def _strip_module_prefix(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str | None]:
    keys = list(state)
    for prefix in ("module.", "_orig_mod."):  # DataParallel/DDP, torch.compile
        if keys and all(k.startswith(prefix) for k in keys):
            return {k[len(prefix) :]: v for k, v in state.items()}, prefix
    return state, None


def _supported_names(spandrel) -> list[str]:
    return sorted({a.architecture.name for a in spandrel.MAIN_REGISTRY.architectures()})


def detect(path: PathLike, trust: bool = False):
    """Read ``path`` and let spandrel identify it: ``(descriptor, record)``.

    Raises :class:`CheckpointError` for an unreadable file, a layout spandrel does not know (naming
    the keys seen and the supported architectures) or a model that is not an image-to-image network.
    """
    spandrel = _spandrel()
    path = Path(path)
    state, layout = read_checkpoint(path, trust=trust)  # one read: the layout comes with the tensors
    state, prefix = _strip_module_prefix(state)
    try:
        desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError as err:
        keys = list(state)
        shown = ", ".join(keys[:_KEY_LIMIT]) + (f", ... ({len(keys)} keys in all)" if len(keys) > _KEY_LIMIT else "")
        raise CheckpointError(
            f"spandrel {spandrel.__version__} cannot identify the architecture of {path} (keys seen: {shown}). "
            f"Supported: {', '.join(_supported_names(spandrel))}; layouts read: plain state_dict, "
            f"{', '.join(NESTED_KEYS)} and a 'module.' prefix. For another architecture use "
            "model=custom model.net._target_=your_pkg.YourNet model.checkpoint=PATH"
        ) from err
    except Exception as err:  # a known architecture whose tensors do not fit it (truncated, edited)
        raise CheckpointError(
            f"spandrel recognised {path} but could not build it: {type(err).__name__}: {err}. "
            "Is the checkpoint complete and unmodified?"
        ) from err
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise CheckpointError(
            f"{path} is a {desc.architecture.name} ({type(desc).__name__}): it needs a mask "
            "besides the image (inpainting) and has no causal effect map in cem_lab"
        )
    record = {
        "loader": f"spandrel {spandrel.__version__}",
        "architecture": desc.architecture.name,
        "architecture_id": str(desc.architecture.id),
        "purpose": desc.purpose,
        "tags": list(desc.tags),
        "parameters": int(sum(p.numel() for p in desc.model.parameters())),
        "scale": int(desc.scale),
        "in_channels": int(desc.input_channels),
        "out_channels": int(desc.output_channels),
        "size_requirements": {
            "minimum": desc.size_requirements.minimum,
            "multiple_of": desc.size_requirements.multiple_of,
            "square": desc.size_requirements.square,
        },
        "checkpoint": str(path),
        "sha256": file_sha256(path),
        "layout": layout,
        "prefix_stripped": prefix,
    }
    return desc, record


def _pad_to(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """Bottom/right padding: reflect as far as it can go, replicate for the rest (as spandrel pads)."""
    h, w = x.shape[-2:]
    rh, rw = min(pad_h, h - 1), min(pad_w, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if pad_h - rh or pad_w - rw:
        x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return x


class DetectedNetwork(nn.Module):
    """A spandrel-detected network as cem_lab runs it: (B, 3, H, W) in [0, 1] -> (B, 3, sH, sW).

    ``grey="per_channel"`` runs a one-channel network on each RGB channel separately (a grey
    denoiser on a colour image); without it a grey network on cem_lab's RGB images is refused.
    """

    def __init__(self, descriptor, record: dict, grey: str | None = None):
        super().__init__()
        self.net = descriptor.model
        self._call = getattr(descriptor, "_call_fn", None) or (lambda model, x: model(x))
        self._req = descriptor.size_requirements
        self.scale = int(descriptor.scale)
        self.in_channels, self.out_channels = int(descriptor.input_channels), int(descriptor.output_channels)
        self.grey = grey
        self.model_info = dict(record, grey=grey)
        self.name = f"{record['architecture']} ({Path(record['checkpoint']).stem})"
        # the ROI crops are made on the architecture's size grid, so only full images are ever padded
        # (and on the window grid of windowed attention, so that a crop's windows are the image's)
        window = getattr(self.net, "window_size", None)
        self.crop_multiple = math.lcm(
            max(1, int(self._req.multiple_of)), window if isinstance(window, int) and window > 0 else 1
        )
        if grey is not None and grey not in GREY_MODES:
            raise CheckpointError(f"model.grey must be one of {GREY_MODES} or null, got {grey!r}")
        if self.in_channels == 3 and self.out_channels == 3:
            if grey is not None:
                raise CheckpointError(
                    f"model.grey={grey} is for one-channel networks; {self.name} is RGB "
                    "(3 -> 3 channels): drop model.grey"
                )
        elif self.in_channels == 1 and self.out_channels == 1:
            if grey is None:
                raise CheckpointError(
                    f"{self.name} is a one-channel (grey) network and cem_lab's images are RGB: set "
                    "model.grey=per_channel to run it on each colour channel separately, or use an RGB checkpoint"
                )
        else:
            raise CheckpointError(
                f"{self.name} maps {self.in_channels} channels to {self.out_channels}; cem_lab maps RGB "
                "images (3 -> 3, or 1 -> 1 with model.grey=per_channel)"
            )

    def _run(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_w, pad_h = self._req.get_padding(w, h)
        # a fresh tensor always: some architectures scale their input in place (spandrel's RCAN does
        # `x *= rgb_range`), which would corrupt the caller's batch and break the gradient probe
        x = _pad_to(x, pad_h, pad_w) if (pad_w or pad_h) else x.clone()
        out = self._call(self.net, x)
        return out[..., : h * self.scale, : w * self.scale]

    def forward(self, x: Tensor) -> Tensor:
        """Run the network on (N, 3, H, W); a one-channel network runs on each colour channel as a grey image."""
        if self.in_channels == 1:
            b, c, h, w = x.shape
            out = self._run(x.reshape(b * c, 1, h, w))
            return out.reshape(b, c, *out.shape[-2:])
        return self._run(x)


def load_detected(path: PathLike, grey: str | None = None, trust: bool = False) -> DetectedNetwork:
    """The network in checkpoint ``path``, its architecture detected by spandrel (see the module doc)."""
    if path is None or str(path) in ("", "???"):
        raise CheckpointError("model=auto needs the checkpoint: model.path=PATH (.pth, .pt, .ckpt or .safetensors)")
    desc, record = detect(path, trust=trust)
    net = DetectedNetwork(desc, record, grey=grey)
    return net.eval()


def describe_model(model: nn.Module) -> dict[str, Any]:
    """What a run records of its model: the loader's record if it has one, else class and parameters."""
    info = getattr(model, "model_info", None)
    if isinstance(info, dict):
        return dict(info)
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
