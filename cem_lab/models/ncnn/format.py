"""Read ncnn graphs (``.param`` text + ``.bin`` weights) into a plain, framework-free spec.

An ncnn ``.param`` file is text (LF or CRLF line ends)::

    7767517                                   # magic
    <layer count> <blob count>
    <Type> <name> <n bottoms> <n tops> <bottom names...> <top names...> <key>=<value> ...

A value is an int or a float (``0.1``, ``2.000000e-01``); a key ``-233xx`` holds an array for
parameter ``xx``, written ``<n>,<v1>,...,<vn>``. :class:`NcnnLayer` stores arrays under the id
``xx`` (``-23310=1,0.1`` becomes ``params[10] == [0.1]``), as ncnn's own ``ParamDict`` does.

The ``.bin`` file is the layers' weight blobs back to back, in layer order, each layer reading
the blobs its type defines (:data:`WEIGHT_BLOBS`). A blob is read in one of two ways:

* ``auto`` (the main weights of Convolution, Deconvolution, InnerProduct): a 4-byte
  little-endian tag, then the data: ``0x01306B47`` fp16 (``2 n`` bytes, padded to a multiple
  of 4), ``0x000D4B38`` int8 (``n`` bytes, padded to 4; int8-quantized graphs are refused here),
  ``0x0002C056`` raw fp32 (``4 n`` bytes), ``0`` raw fp32 (``4 n`` bytes); any other tag whose bytes
  do not sum to 0 is a 256-entry fp32 code book followed by ``n`` uint8 indices (padded to 4).
* ``raw`` (biases, PReLU slopes, Scale data): ``4 n`` bytes of fp32, no tag.

Weights come back as flat float32 torch tensors (fp16 upcast exactly), keyed per layer; the
torch port (:mod:`cem_lab.models.ncnn.net`) gives them their shapes. Anything this module cannot
read raises :class:`NcnnFormatError`, which says where and why.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cem_lab.io import PathLike
from cem_lab.models.checkpoint import CheckpointError

NCNN_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_RAW = 0x0002C056
SPEC_FORMAT = "cem_lab.ncnn_graph/1"

#: the layer types the torch port executes
SUPPORTED_TYPES = (
    "BinaryOp",
    "Concat",
    "Convolution",
    "Crop",
    "Deconvolution",
    "Eltwise",
    "InnerProduct",
    "Input",
    "Interp",
    "PReLU",
    "PixelShuffle",
    "Pooling",
    "Scale",
    "Split",
)

__all__ = [
    "NCNN_MAGIC",
    "SPEC_FORMAT",
    "SUPPORTED_TYPES",
    "NcnnFormatError",
    "NcnnGraph",
    "NcnnLayer",
    "WeightBlob",
    "parse_param",
    "read_ncnn",
    "read_weights",
    "weight_blobs",
]


class NcnnFormatError(CheckpointError):
    """An ncnn ``.param`` / ``.bin`` pair that cannot be read, or uses what the port lacks."""


# --------------------------------------------------------------------------- the spec
@dataclass
class NcnnLayer:
    """One line of a ``.param`` file."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, Any] = field(default_factory=dict)
    index: int = 0  # position in the graph (0-based)

    def get(self, key: int, default: Any = None) -> Any:
        """The layer parameter ``key`` (the ``.param`` file's integer id), or ``default``."""
        return self.params.get(key, default)

    def describe(self) -> str:
        """``layer <index> '<name>' (<type>)``, for error messages."""
        return f"layer {self.index} {self.name!r} ({self.type})"

    def to_dict(self) -> dict:
        """The layer as a JSON-able dict (params keyed by string ids); :meth:`from_dict` reads it back."""
        return {
            "type": self.type,
            "name": self.name,
            "bottoms": list(self.bottoms),
            "tops": list(self.tops),
            "params": {str(k): v for k, v in self.params.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], index: int) -> NcnnLayer:
        """The layer of :meth:`to_dict`, at position ``index``."""
        params = {
            int(k): (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(data.get("params", {})).items()
        }
        return cls(
            str(data["type"]),
            str(data["name"]),
            [str(b) for b in data["bottoms"]],
            [str(t) for t in data["tops"]],
            params,
            index,
        )


@dataclass
class NcnnGraph:
    """Layers in file order, their weights (``{layer name: {blob name: flat float32 tensor}}``),
    and the graph's input and output blob names."""

    layers: list[NcnnLayer]
    weights: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        """The tops of the graph's Input layers."""
        return [t for layer in self.layers if layer.type == "Input" for t in layer.tops]

    @property
    def outputs(self) -> list[str]:
        """The blobs that no layer reads."""
        consumed = {b for layer in self.layers for b in layer.bottoms}
        return [t for layer in self.layers for t in layer.tops if t not in consumed]

    def spec(self) -> dict:
        """The graph without its weights, as a JSON-able dict (:meth:`from_spec` reads it back)."""
        return {
            "format": SPEC_FORMAT,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> NcnnGraph:
        """The graph of :meth:`spec`, without weights; raises :class:`NcnnFormatError` for another format or an
        unported layer type."""
        if not isinstance(spec, Mapping) or spec.get("format") != SPEC_FORMAT:
            got = spec.get("format") if isinstance(spec, Mapping) else type(spec).__name__
            raise NcnnFormatError(f"not an ncnn graph spec (format {got!r}, expected {SPEC_FORMAT!r})")
        layers = [NcnnLayer.from_dict(d, i) for i, d in enumerate(spec["layers"])]
        for layer in layers:
            _check_type(layer)
        return cls(layers)

    def weight_count(self) -> int:
        """Number of weight values over all layers."""
        return sum(t.numel() for blobs in self.weights.values() for t in blobs.values())


# --------------------------------------------------------------------------- .param
def _parse_number(text: str, where: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise NcnnFormatError(f"{where}: {text!r} is not a number") from None


def _parse_params(items: Iterable[str], where: str) -> dict[int, Any]:
    params: dict[int, Any] = {}
    for item in items:
        key_text, sep, value = item.partition("=")
        if not sep:
            raise NcnnFormatError(f"{where}: parameter {item!r} is not key=value")
        try:
            key = int(key_text)
        except ValueError:
            raise NcnnFormatError(f"{where}: parameter key {key_text!r} is not an integer") from None
        if key <= -23300:  # an array: count, then the values
            parts = value.split(",")
            count = int(_parse_number(parts[0], where))
            values = [_parse_number(p, where) for p in parts[1:]]
            if count != len(values):
                raise NcnnFormatError(
                    f"{where}: array parameter {key} announces {count} values but holds {len(values)}"
                )
            params[-key - 23300] = values
        else:
            params[key] = _parse_number(value, where)
    return params


def _check_type(layer: NcnnLayer) -> None:
    if layer.type not in SUPPORTED_TYPES:
        raise NcnnFormatError(
            f"unknown layer type {layer.type!r} at {layer.describe()}; the torch "
            f"port supports {', '.join(SUPPORTED_TYPES)}"
        )


def parse_param(text: str, source: str = "<param>") -> list[NcnnLayer]:
    """The layers of a ``.param`` file's text (CRLF or LF)."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines or lines[0] != str(NCNN_MAGIC):
        first = lines[0][:40] if lines else "(empty file)"
        raise NcnnFormatError(
            f"{source} is not an ncnn .param file: the first line is {first!r}, expected the magic number {NCNN_MAGIC}"
        )
    if len(lines) < 2 or len(lines[1].split()) != 2:
        raise NcnnFormatError(f"{source}: the second line must be '<layer count> <blob count>'")
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
    except ValueError:
        raise NcnnFormatError(f"{source}: the counts line {lines[1]!r} is not two integers") from None
    body = lines[2:]
    if len(body) != layer_count:
        raise NcnnFormatError(f"{source} announces {layer_count} layers but has {len(body)} layer lines")
    layers: list[NcnnLayer] = []
    blobs: set[str] = set()
    for index, line in enumerate(body):
        fields = line.split()
        where = f"{source} line {index + 3}"
        if len(fields) < 4:
            raise NcnnFormatError(f"{where}: a layer line needs type, name, bottom and top counts")
        try:
            n_bottom, n_top = int(fields[2]), int(fields[3])
        except ValueError:
            raise NcnnFormatError(f"{where}: the bottom/top counts {fields[2:4]} are not integers") from None
        names = fields[4 : 4 + n_bottom + n_top]
        if n_bottom < 0 or n_top < 0 or len(names) != n_bottom + n_top:
            raise NcnnFormatError(
                f"{where}: layer {fields[1]!r} announces {n_bottom} bottoms and {n_top} "
                "tops, the line holds fewer blob names"
            )
        params = _parse_params(fields[4 + n_bottom + n_top :], where)
        layer = NcnnLayer(fields[0], fields[1], names[:n_bottom], names[n_bottom:], params, index)
        for bottom in layer.bottoms:
            if bottom not in blobs:
                raise NcnnFormatError(
                    f"{where}: {layer.describe()} reads blob {bottom!r} that no earlier layer produces"
                )
        blobs.update(layer.tops)
        layers.append(layer)
    if len(blobs) != blob_count:
        raise NcnnFormatError(f"{source} announces {blob_count} blobs but its layers produce {len(blobs)}")
    for layer in layers:
        _check_type(layer)
    return layers


# --------------------------------------------------------------------------- .bin
@dataclass(frozen=True)
class WeightBlob:
    """One weight blob a layer reads: name, element count, ``auto`` (tagged) or ``raw`` fp32."""

    name: str
    count: int
    kind: str


def weight_blobs(layer: NcnnLayer) -> list[WeightBlob]:
    """The blobs ``layer`` reads from the ``.bin``, in order (what ncnn's ``load_model`` reads)."""
    t, get = layer.type, layer.get
    if t in ("Convolution", "Deconvolution", "InnerProduct"):
        bias_key = 1 if t == "InnerProduct" else 5
        size_key = 2 if t == "InnerProduct" else 6
        if int(get(8, 0)):
            raise NcnnFormatError(
                f"{layer.describe()} is int8-quantized (int8_scale_term); the torch port reads float graphs only"
            )
        dynamic_key = {"Convolution": 19, "Deconvolution": 28}.get(t)
        if dynamic_key is not None and int(get(dynamic_key, 0)):
            raise NcnnFormatError(
                f"{layer.describe()} takes its weights from a blob (dynamic_weight), "
                "which the torch port does not support"
            )
        size, num_output = int(get(size_key, 0)), int(get(0, 0))
        if size <= 0 or num_output <= 0:
            raise NcnnFormatError(
                f"{layer.describe()} needs a positive num_output (0=) and weight size "
                f"({size_key}=), got {num_output} and {size}"
            )
        blobs = [WeightBlob("weight", size, "auto")]
        if int(get(bias_key, 0)):
            blobs.append(WeightBlob("bias", num_output, "raw"))
        return blobs
    if t == "PReLU":
        return [WeightBlob("slope", int(get(0, 1)), "raw")]
    if t == "Scale":
        size = int(get(0, 0))
        if size == -233:  # the scale comes from the second bottom blob
            return []
        blobs = [WeightBlob("scale", size, "raw")]
        if int(get(1, 0)):
            blobs.append(WeightBlob("bias", size, "raw"))
        return blobs
    return []


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = data, 0, source

    def take(self, n: int, layer: NcnnLayer, what: str) -> bytes:
        left = len(self.data) - self.pos
        if n > left:
            raise NcnnFormatError(
                f"{self.source} is truncated: {layer.describe()} needs {n} bytes for {what} at offset "
                f"{self.pos}, only {left} are left ({n - left} bytes missing); is the .bin complete and "
                "the one that goes with this .param?"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def _read_blob(reader: _Reader, blob: WeightBlob, layer: NcnnLayer) -> Tensor:
    n = blob.count
    what = f"its {blob.name} ({n} values)"
    if blob.kind == "raw":
        return torch.from_numpy(np.frombuffer(reader.take(4 * n, layer, what), dtype="<f4").copy())
    tag_bytes = reader.take(4, layer, f"the tag of {what}")
    (tag,) = struct.unpack("<I", tag_bytes)
    if tag == TAG_FP16:
        raw = reader.take(_align4(2 * n), layer, f"{what} as fp16")
        values = np.frombuffer(raw[: 2 * n], dtype="<f2").astype(np.float32)
    elif tag == TAG_INT8:
        raise NcnnFormatError(
            f"{layer.describe()} stores its {blob.name} as int8; the torch port reads float graphs only"
        )
    elif tag in (TAG_FP32_RAW, 0):
        values = np.frombuffer(reader.take(4 * n, layer, f"{what} as fp32"), dtype="<f4").copy()
    elif sum(tag_bytes) != 0:  # 8-bit code book: 256 fp32 values, then one uint8 index per weight
        book = np.frombuffer(reader.take(256 * 4, layer, f"the code book of {what}"), dtype="<f4")
        index = np.frombuffer(reader.take(_align4(n), layer, f"the code indices of {what}")[:n], dtype=np.uint8)
        values = book[index].astype(np.float32)
    else:  # pragma: no cover - bytes summing to 0 are all zero, which is tag 0
        raise NcnnFormatError(f"{layer.describe()}: unreadable weight tag {tag:#010x}")
    if not np.isfinite(values).all():
        raise NcnnFormatError(
            f"{layer.describe()}: its {blob.name} holds non-finite values; is the .bin "
            "corrupt or not the one that goes with this .param?"
        )
    return torch.from_numpy(np.ascontiguousarray(values))


def read_weights(layers: list[NcnnLayer], data: bytes, source: str = "<bin>") -> dict[str, dict[str, Tensor]]:
    """The weight blobs of ``layers`` from the bytes of a ``.bin``; every byte must be used."""
    reader = _Reader(data, source)
    weights: dict[str, dict[str, Tensor]] = {}
    last: NcnnLayer | None = None
    for layer in layers:
        blobs = weight_blobs(layer)
        if blobs:
            weights[layer.name] = {b.name: _read_blob(reader, b, layer) for b in blobs}
            last = layer
    left = len(data) - reader.pos
    if left:
        after = f"after the last weight blob ({last.describe()})" if last else "(no layer reads weights)"
        raise NcnnFormatError(
            f"{source} has {left} bytes left over {after}, at offset {reader.pos} of "
            f"{len(data)}; the .bin does not go with this .param, or is corrupt"
        )
    return weights


def read_ncnn(param_path: PathLike, bin_path: PathLike) -> NcnnGraph:
    """Parse ``param_path`` and ``bin_path`` into an :class:`NcnnGraph` (weights included)."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    for path in (param_path, bin_path):
        if not path.is_file():
            raise NcnnFormatError(f"ncnn file not found: {path}")
    raw = param_path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NcnnFormatError(
            f"{param_path} is not a text .param file (a binary .param.bin is not supported)"
        ) from None
    layers = parse_param(text, str(param_path))
    weights = read_weights(layers, bin_path.read_bytes(), str(bin_path))
    return NcnnGraph(layers, weights)
