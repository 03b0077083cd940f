"""The paper's own networks: the model zoo of Hu et al.'s repository (GitHub J-FHu/CEM), loaded unchanged from the
authors' checkpoint folder by their names (``model=authors model.name=EDSR-64-16 model.dir=FOLDER``).

:mod:`~cem_lab.models.authors.catalogue` holds every ``MODEL_LIST`` name as data (file, task, scale, layout, how
cem_lab builds it); :mod:`~cem_lab.models.authors.load` reads and checks a checkpoint and builds the network
(cem_lab's own implementations in :mod:`cem_lab.models.archs.paper`, or spandrel).
"""

from __future__ import annotations

from cem_lab.models.authors.catalogue import AuthorsEntry, AuthorsModelError, catalogue, coverage, entry
from cem_lab.models.authors.load import AuthorsNetwork, load_authors_model

__all__ = [
    "AuthorsEntry",
    "AuthorsModelError",
    "AuthorsNetwork",
    "catalogue",
    "coverage",
    "entry",
    "load_authors_model",
]
