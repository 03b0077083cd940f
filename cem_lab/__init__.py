"""cem_lab: Causal Effect Maps for low-level vision models.

import cem_lab
result = cem_lab.compute_cem(model, "image.png", "dn", roi=(152, 96, 32), block=8)
result.effect          # blocks x blocks, dB
result.save("runs/my_map")
"""

from cem_lab.causal import CEMResult, Roi, compute_cem

__version__ = "0.1.0"
__all__ = ["compute_cem", "CEMResult", "Roi", "__version__"]
