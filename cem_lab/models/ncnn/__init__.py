"""ncnn graphs (waifu2x, Real-CUGAN, Real-ESRGAN, RealSR) as torch modules.

- :mod:`~cem_lab.models.ncnn.format`: read ``.param`` + ``.bin`` into a framework-free graph.
- :mod:`~cem_lab.models.ncnn.layers`, :mod:`~cem_lab.models.ncnn.ops`: the layers as torch ops.
- :mod:`~cem_lab.models.ncnn.net`: :class:`NcnnNet` (runs a graph), :func:`probe_geometry`,
  :class:`NcnnSR` (the SR application around a graph).
- :mod:`~cem_lab.models.ncnn.runtime`: the ncnn runtime itself, to check the port against.
- :mod:`~cem_lab.models.ncnn.convert`: convert, check and cache (:func:`convert_ncnn`).
- :mod:`~cem_lab.models.ncnn.bridge`: the same networks as spandrel's RRDBNet / SRVGGNetCompact.
"""
