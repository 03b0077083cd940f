"""One map spread over several processes: the Lightning Fabric executor (:mod:`~cem_lab.parallel.fabric`)."""
