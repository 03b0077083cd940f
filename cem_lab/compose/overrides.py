"""The keys a user adds on the command line (``+key=value``), checked before anything is computed or written.

Hydra refuses a key that the config does not have (``rio=[1,2,3]``) unless it is added with ``+``; then
it is taken silently, and a misspelt ``+rio=[1,2,3]`` would be ignored by every reader of the config
while the run goes on with the default ROI. So a new key is accepted only where something reads it:

- under a node that builds an object (one with ``_target_``: ``model.net``, ``task``, ``patches``,
  ``cem.estimator``, ``cem.sampler``, ``cem.intervention``), whose class takes it as a keyword and
  refuses a keyword it does not know when it is built (``+model.net.features=8`` for model=custom,
  ``+task.kernel_size=9`` for task=custom);
- under ``hydra`` (Hydra's own settings);
- a config group added with its option (``+rcan_variant=global``).

Any other new key (a new top-level key, or one under ``cem``, ``metric``, ``roi_grid``, ``roi_place``,
``checkpoint``, ``parallel``, ``train``, ...) is refused, with the nearest existing keys. ``++key=value``
(add or override) is taken as meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from cem_lab.bookkeeping.clean_errors import did_you_mean
from cem_lab.errors import InputError


def _object_nodes(node: Any, prefix: str = "") -> list[str]:
    """The dotted paths of the nodes of ``node`` (a plain container) that build an object (``_target_``)."""
    out = []
    if isinstance(node, dict):
        if "_target_" in node and prefix:
            out.append(prefix)
        for k, v in node.items():
            out += _object_nodes(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def check_added_keys(cfg: DictConfig, overrides: Sequence[str], groups: Iterable[str] = ()) -> None:
    """Refuse a key added with ``+`` (in ``overrides``, the command line's) that nothing would read: one
    that is not under an object's node (``_target_``) or ``hydra``. ``groups``: the config groups of the
    run (``+group=option`` adds a group, not a key)."""
    adds = [o for o in overrides if o.startswith("+") and not o.startswith("++")]
    if not adds:
        return
    groups = set(groups)
    for override in OverridesParser.create().parse_overrides(adds):
        key = override.key_or_group
        if override.package is not None or key in groups or key.split(".")[0] == "hydra":
            continue
        parts = key.split(".")
        if any(
            isinstance(node := OmegaConf.select(cfg, ".".join(parts[:i]), default=None), DictConfig)
            and "_target_" in node
            for i in range(1, len(parts))
        ):
            continue  # a keyword of the object's class: the class refuses one it does not take
        _refuse(cfg, override.input_line or key, parts)


def _refuse(cfg: DictConfig, line: str, parts: list[str]) -> None:
    # the first level where the new key begins: `+foo.bar=1` makes a new node `foo` holding only `bar`
    depth = len(parts) - 1
    while depth > 0:
        parent = OmegaConf.select(cfg, ".".join(parts[:depth]), default=None)
        if not (isinstance(parent, DictConfig) and list(parent.keys()) == [parts[depth]]):
            break
        depth -= 1
    where = ".".join(parts[:depth])
    parent = OmegaConf.select(cfg, where, default=None) if where else cfg
    name = parts[depth]
    known = sorted(str(k) for k in parent.keys() if str(k) != name) if isinstance(parent, DictConfig) else []
    objects = _object_nodes(OmegaConf.to_container(cfg, resolve=False))
    guess = did_you_mean(name, known)
    keys = (
        f" (the keys {'of ' + where if where else 'at the top level'}: {', '.join(known)})"
        if known and not guess
        else ""
    )
    raise InputError(
        f"{line}: {where or 'the config'} has no key '{name}'{guess} and nothing would read it; set an existing "
        f"key, without +{keys}"
        + (f"; + adds only keywords of a class the config builds ({', '.join(objects)})" if objects else "")
    )


def check_data_dir(cfg: DictConfig) -> None:
    """An experiment that reads its files from ``data_dir`` (``${oc.env:CEM_LAB_DATA,...}``: the demo checkpoint,
    the paper's patch bank) is refused in one line naming the variable when that folder does not exist."""
    if "data_dir" not in cfg:
        return
    folder = Path(str(cfg.data_dir))
    if not folder.is_dir():
        raise InputError(
            f"data_dir {folder} does not exist: this experiment reads its files (checkpoint, patch bank) from the "
            "folder named by the environment variable CEM_LAB_DATA (default ../shared/data); set CEM_LAB_DATA=FOLDER "
            "or data_dir=FOLDER"
        )


def check_command_line(cfg: DictConfig) -> None:
    """:func:`check_added_keys` on the command line of the running Hydra app (nothing outside one), and
    :func:`check_data_dir`."""
    check_data_dir(cfg)
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    check_added_keys(cfg, list(hc.overrides.task), hc.runtime.choices.keys())
