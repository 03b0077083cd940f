"""cem_lab: Causal Effect Maps for low-level vision models.

import cem_lab
result = cem_lab.compute_cem(model, "image.png", "dn", roi=(152, 96, 32), block=8)
result.effect          # blocks x blocks, dB
cem_lab.save_result(result, "runs/my_map")  # numbers, images and figures
"""

from cem_lab.api import compute_cem, save_result
from cem_lab.causal import CEMResult, CEMSettings, Roi

__version__ = "0.1.0"
__all__ = ["compute_cem", "save_result", "CEMResult", "CEMSettings", "Roi", "__version__"]
