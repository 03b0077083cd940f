"""cem_lab: Causal Effect Maps for low-level vision models.

import cem_lab
result = cem_lab.compute_cem(model, "image.png", "dn", roi=(152, 96, 32), block=8)
result.effect          # blocks x blocks, dB
cem_lab.save_result(result, "runs/my_map")  # numbers, images and figures

The names below load on first use (PEP 562), so that ``import cem_lab`` alone, as every console script
does first, takes no time: torch comes with the first of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cem_lab.api import compute_cem, save_result
    from cem_lab.causal import CEMResult, CEMSettings, Roi

__version__ = "0.1.0"
__all__ = ["compute_cem", "save_result", "CEMResult", "CEMSettings", "Roi", "__version__"]

#: public name -> the module that defines it
_HOMES = {
    "compute_cem": "cem_lab.api",
    "save_result": "cem_lab.api",
    "CEMResult": "cem_lab.causal",
    "CEMSettings": "cem_lab.causal",
    "Roi": "cem_lab.causal",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cem_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
