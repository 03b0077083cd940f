"""Read, check, save and rebuild model checkpoints.

- :func:`read_state_dict` reads ``.safetensors`` and PyTorch pickles (``.pth``/``.pt``/``.ckpt``)
  safely (``weights_only=True``) and unwraps the usual nested layouts (BasicSR ``params_ema`` /
  ``params``, Lightning ``state_dict``, ``model`` / ``net``).
- :func:`load_weights` fixes the usual key prefixes (``module.`` from DataParallel/DDP, a
  LightningModule attribute such as ``model.``) and explains any mismatch with the model.
- :func:`save_weights` writes ``NAME.safetensors`` and ``NAME.yaml`` (the class and keyword
  arguments that rebuild the model); :func:`load_model` reads the pair back.

The YAML beside the weights has the model under ``model:`` (``_target_`` + keyword
arguments) and may carry free-form metadata as other top-level keys.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cem_lab.errors import CemLabError
from cem_lab.io import PathLike, atomic_path

#: nested layouts unwrapped by :func:`read_state_dict`, in order of preference
NESTED_KEYS = ("params_ema", "params", "state_dict", "model", "net")
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar")
_LIST_LIMIT = 10


class CheckpointError(CemLabError, RuntimeError):
    """A checkpoint that cannot be read, or that does not fit the model."""


# --------------------------------------------------------------------------- reading
def _short_torch_message(err: Exception) -> str:
    """The useful line of torch.load's long weights-only error."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.split("Check the documentation", 1)[0]
    return " ".join(text.split()) or type(err).__name__


def _torch_load(path: Path, trust: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        pickled_objects = "Unsupported global" in str(err)
        if not trust:
            if pickled_objects:
                raise CheckpointError(
                    f"checkpoint {path} holds pickled Python objects besides tensors "
                    f"({_short_torch_message(err)}). Loading it runs code from the file, which is "
                    "unsafe unless you trust its source; if you do, pass trust=True "
                    "(load_weights(..., trust=True)), or re-save the weights as .safetensors"
                ) from err
            raise CheckpointError(
                f"cannot read checkpoint {path}: {_short_torch_message(err)}; is it a complete PyTorch checkpoint?"
            ) from err
        first = err
    except Exception as err:  # zip / EOF / format errors from a corrupt file
        raise CheckpointError(f"cannot read checkpoint {path}: {err}; is it a complete PyTorch checkpoint?") from err
    try:  # trust=True and the safe reader refused: full unpickling
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {err} (safe reader: {_short_torch_message(first)})"
        ) from err


def _tensor_dict(obj: Any) -> dict[str, Tensor] | None:
    """``obj`` as a dict of tensors, or None when it holds none."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        return None
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    return tensors or None


def _unwrap(obj: Any, depth: int = 0) -> Any:
    """Descend into the preferred nested layout (a few levels at most)."""
    if depth > 3 or not isinstance(obj, Mapping):
        return obj
    for key in NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, nn.Module):
            return inner.state_dict()
        if isinstance(inner, Mapping) and inner:
            if key in ("model", "net") and _tensor_dict(inner) is None:
                inner_unwrapped = _unwrap(inner, depth + 1)
                if _tensor_dict(inner_unwrapped) is None:
                    continue
                return inner_unwrapped
            return _unwrap(inner, depth + 1)
    return obj


def read_state_dict(path: PathLike, trust: bool = False) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict on the CPU.

    ``trust=True`` allows full unpickling of ``.pth`` files that hold Python objects
    (this can run code from the file).
    """
    return read_checkpoint(path, trust)[0]


def read_checkpoint(path: PathLike, trust: bool = False) -> tuple[dict[str, Tensor], str]:
    """:func:`read_state_dict`, and the file's layout for the record: ``"safetensors"``, the top-level
    nested key it was found under (``params_ema``, ``params``, ``state_dict``, ...) or ``"plain"``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".safetensors":
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as err:
            raise CheckpointError(f"cannot read checkpoint {path}: {err}; is it a complete .safetensors file?") from err
    else:
        obj = _torch_load(path, trust)
    state = _tensor_dict(_unwrap(obj))
    if state is None:
        if isinstance(obj, Mapping):
            keys = [str(k) for k in obj.keys()]
            shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
            found = f"top-level keys found: {shown or '(none)'}"
        else:
            found = f"the file holds a {type(obj).__name__}, not a dict"
        raise CheckpointError(
            f"checkpoint {path} holds no tensors ({found}); expected a "
            f"state_dict, possibly nested under one of {list(NESTED_KEYS)}"
        )
    if path.suffix.lower() == ".safetensors":
        return state, "safetensors"
    nested = [k for k in NESTED_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), (Mapping, nn.Module))]
    return state, nested[0] if nested else "plain"


# --------------------------------------------------------------------------- matching
def _strip(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items()}


def _common_first_component(keys: list[str]) -> str | None:
    firsts = {k.split(".", 1)[0] for k in keys}
    if len(firsts) == 1 and all("." in k for k in keys):
        return firsts.pop() + "."
    return None


def _fix_prefixes(state: dict[str, Tensor], model_keys: set[str]) -> tuple[dict[str, Tensor], list[str]]:
    """Strip ``module.`` always, then a shared first component when that makes keys match."""
    stripped: list[str] = []
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        state = _strip(state, "module.")
        stripped.append("module.")
    if set(state) == model_keys:
        return state, stripped
    candidate, trial = state, []
    for _ in range(2):
        prefix = _common_first_component(list(candidate))
        if prefix is None:
            break
        candidate = _strip(candidate, prefix)
        trial.append(prefix)
        if set(candidate) == model_keys:
            return candidate, stripped + trial
    return state, stripped


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = f", ... (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else ""
    return f"  {title} ({len(keys)}): {shown}{more}"


def load_weights(model: nn.Module, path: PathLike, strict: bool = True, trust: bool = False) -> dict:
    """Load a checkpoint into ``model`` in place; return a short report.

    Raises :class:`CheckpointError` naming missing and unexpected keys and shape
    mismatches when the checkpoint does not fit the model.
    """
    path = Path(path)
    state = read_state_dict(path, trust=trust)
    target = model.state_dict()
    state, stripped = _fix_prefixes(state, set(target))
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        lines = [f"checkpoint {path} does not fit the model {type(model).__name__}:"]
        if missing and strict:
            lines.append(_listing("missing keys (in the model, not in the checkpoint)", missing))
        if unexpected and strict:
            lines.append(_listing("unexpected keys (in the checkpoint, not in the model)", unexpected))
        if shapes:
            lines.append(_listing("tensors whose shapes differ", shapes))
        lines.append(
            "check the architecture arguments (e.g. features, depth, channels) match "
            "those the checkpoint was trained with"
        )
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=strict)
    return {
        "path": str(path),
        "loaded": len(state) - len(unexpected),
        "stripped_prefixes": stripped,
        "missing": missing,
        "unexpected": unexpected,
    }


# --------------------------------------------------------------------------- saving / building
def model_config(model: nn.Module) -> dict:
    """The ``_target_`` and keyword arguments of a model that knows them (``config()``)."""
    if hasattr(model, "config") and callable(model.config):
        config = dict(model.config())
    else:
        config = {}
    config.setdefault("_target_", f"{type(model).__module__}.{type(model).__qualname__}")
    return config


def config_path(weights: PathLike) -> Path:
    """The YAML that goes with a weights file (same stem)."""
    return Path(weights).with_suffix(".yaml")


def save_weights(
    model: nn.Module, path: PathLike, config: dict | None = None, metadata: dict | None = None
) -> tuple[Path, Path]:
    """Write ``path`` (.safetensors) and its ``.yaml`` (model config + metadata), atomically.

    ``config`` holds ``_target_`` and the keyword arguments that rebuild the model (by default
    taken from ``model.config()``); ``metadata`` adds top-level YAML keys (e.g. validation).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"save_weights writes .safetensors files, got {path}")
    config = dict(config) if config is not None else model_config(model)
    if "_target_" not in config:
        raise CheckpointError("the model config needs a '_target_' (dotted path of the model class)")
    meta = dict(metadata or {})
    if "model" in meta:
        raise CheckpointError("metadata cannot use the key 'model' (it holds the model config)")
    try:  # render the YAML first, so a bad config writes nothing
        text = yaml.safe_dump({"model": config, **meta}, sort_keys=False, default_flow_style=False, width=1000)
    except yaml.YAMLError as err:
        raise CheckpointError(f"the model config or metadata cannot be written as YAML: {err}") from err
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    mode = _file_mode()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, mode)
    yaml_path = config_path(path)
    with atomic_path(yaml_path) as tmp:
        tmp.write_text(text)
        os.chmod(tmp, mode)
    return path, yaml_path


def _file_mode() -> int:
    """The mode a plain new file gets under the current umask (temp files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: model classes that moved, by their old dotted path (``_target_`` in model files written before the
#: move: cem-train exports, the zoo, users' own files) -> where they live now
MOVED_TARGETS: dict[str, str] = {
    **{
        f"cem_lab.models.architectures.{cls}": f"cem_lab.models.archs.{cls.lower()}.{cls}"
        for cls in ("SRCNN", "FSRCNN", "EDSR", "SRResNet", "RCAN", "SwinLite")
    },
    "cem_lab.models.dncnn.DnCNN": "cem_lab.models.archs.dncnn.DnCNN",
    "cem_lab.models.DnCNN": "cem_lab.models.archs.dncnn.DnCNN",
    "cem_lab.models.ncnn_torch.NcnnNet": "cem_lab.models.ncnn.net.NcnnNet",
    "cem_lab.models.ncnn_torch.NcnnSR": "cem_lab.models.ncnn.net.NcnnSR",
}


def current_target(target: str) -> str:
    """``target`` with a moved class's old dotted path replaced by its new one (:data:`MOVED_TARGETS`)."""
    return MOVED_TARGETS.get(target, target)


def _import_target(target: str) -> Any:
    target = current_target(target)
    parts = target.split(".")
    errors = []
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as err:
            errors.append(str(err))
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError as err:
            raise CheckpointError(f"cannot import model class {target!r}: {err}") from err
        return obj
    reason = errors[-1] if errors else "not a dotted path 'package.module.Class'"
    raise CheckpointError(f"cannot import model class {target!r}: {reason}")


def build_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Build ``config["_target_"](**other keys)``; the target must be an ``nn.Module`` class."""
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise CheckpointError(
            "a model config needs '_target_' (dotted path of the model class), "
            f"got {dict(config) if isinstance(config, Mapping) else config!r}"
        )
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    target = str(config["_target_"])
    cls = _import_target(target)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"model target {target!r} is not a torch.nn.Module class")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise CheckpointError(f"cannot build {target} with {kwargs}: {err}") from err


def load_model(path: PathLike) -> nn.Module:
    """A ``.safetensors`` file with its ``.yaml`` beside it -> the built model, in eval mode."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        path = path.with_suffix(".safetensors")
    yaml_path = config_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not yaml_path.is_file():
        raise CheckpointError(
            f"model config not found: {yaml_path}; load_model needs the YAML that "
            "save_weights writes beside the weights (or build the model yourself "
            "and call load_weights). For a checkpoint of an official architecture "
            "(SwinIR, HAT, RCAN, ESRGAN, ...) use model=auto model.path=PATH: spandrel "
            "detects the architecture from the weights"
        )
    try:
        data = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as err:
        raise CheckpointError(f"cannot read model config {yaml_path}: {err}") from err
    if not isinstance(data, Mapping):
        raise CheckpointError(f"model config {yaml_path} is not a mapping")
    config = data["model"] if isinstance(data.get("model"), Mapping) else data
    model = build_from_config(config)
    load_weights(model, path, strict=True)
    return model.eval()
