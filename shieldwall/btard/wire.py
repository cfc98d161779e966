"""Safe serialisation of protocol messages for real processes, and payload sizes for accounting.

Messages come from peers that may be Byzantine, so they must never be unpickled as arbitrary
objects (``pickle``, and ``torch.distributed.all_gather_object`` which uses it, can run code
chosen by the sender). :func:`encode` turns a message into plain data — tuples, bytes, numbers,
strings — with tensors as ``(dtype, shape, bytes)`` and the message dataclasses of
:mod:`shieldwall.btard.messages` by name; :func:`decode` rebuilds it from a whitelist and a
restricted unpickler that refuses every global lookup. Anything malformed decodes to ``None``,
which the protocol treats like silence.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

import torch
from torch import Tensor

from shieldwall.btard import messages
from shieldwall.btard.crypto import fields_of

__all__ = ["encode", "decode", "to_bytes", "from_bytes", "payload_size"]

_CLASSES = {
    cls.__name__: cls
    for cls in (
        messages.Hello,
        messages.Commit,
        messages.Part,
        messages.ResultCommit,
        messages.Result,
        messages.Reveal,
        messages.Check,
        messages.Opening,
        messages.Signed,
        messages.Accusation,
        messages.Accuse,
    )
}
_DTYPES = {str(d): d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)}
_MAX_NUMEL = 1 << 31


def encode(obj: Any) -> Any:
    """Plain-data form of a message (see module docstring)."""
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        return ("T", str(t.dtype), tuple(t.shape), t.view(torch.uint8).numpy().tobytes())
    if dataclasses.is_dataclass(obj) and type(obj).__name__ in _CLASSES:
        fields = tuple(encode(getattr(obj, f.name)) for f in dataclasses.fields(obj))
        return ("D", type(obj).__name__, fields)
    if isinstance(obj, tuple):
        return ("t", tuple(encode(x) for x in obj))
    if isinstance(obj, list):
        return ("l", [encode(x) for x in obj])
    if isinstance(obj, dict):
        return ("d", [(encode(k), encode(v)) for k, v in obj.items()])
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return ("v", obj)
    raise TypeError(f"cannot encode a {type(obj).__name__}")


class _Budget:
    """What decoding may still build: one unit per node, one per byte of tensor data.

    The unpickler lets a message refer to one sub-object many times (its memo), so a few hundred
    bytes can describe a structure whose tree has billions of nodes; :func:`encode` never shares
    sub-objects, so an honest message decodes within a small multiple of its own size.
    """

    def __init__(self, units: int | None) -> None:
        self.left = units

    def spend(self, units: int) -> None:
        if self.left is not None:
            self.left -= units
            if self.left < 0:
                raise ValueError("message decodes to more than its size allows")


def _decode(data: Any, budget: _Budget) -> Any:
    budget.spend(1)
    tag = data[0]
    if tag == "v":
        value = data[1]
        if value is not None and not isinstance(value, (bool, int, float, str, bytes)):
            raise ValueError("bad value")
        return value  # a str or bytes is returned, not copied: one unit however often used
    if tag == "t":
        return tuple(_decode(x, budget) for x in data[1])
    if tag == "l":
        return [_decode(x, budget) for x in data[1]]
    if tag == "d":
        return {_decode(k, budget): _decode(v, budget) for k, v in data[1]}
    if tag == "T":
        _, dtype_name, shape, raw = data
        dtype = _DTYPES[dtype_name]
        shape = tuple(int(s) for s in shape)
        numel = 1
        for s in shape:
            if s < 0:
                raise ValueError("bad shape")
            numel *= s
        if numel > _MAX_NUMEL:
            raise ValueError("tensor too large")
        budget.spend(len(raw))
        flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0)
        return flat.view(dtype).reshape(shape).clone()
    if tag == "D":
        cls = _CLASSES[data[1]]
        names = [f.name for f in dataclasses.fields(cls)]
        values = [_decode(x, budget) for x in data[2]]
        if len(values) != len(names):
            raise ValueError("bad field count")
        return cls(**dict(zip(names, values)))
    raise ValueError(f"unknown tag {tag!r}")


def decode(data: Any, max_units: int | None = None) -> Any:
    """The message :func:`encode` made, or ``None`` if ``data`` is malformed or would decode to
    more than ``max_units`` (nodes plus tensor bytes; ``None``: no limit, for data built in
    this process)."""
    try:
        return _decode(data, _Budget(max_units))
    except Exception:  # noqa: BLE001 - anything malformed is silence
        return None


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def to_bytes(obj: Any) -> bytes:
    return pickle.dumps(encode(obj), protocol=pickle.HIGHEST_PROTOCOL)


def from_bytes(raw: bytes) -> Any:
    """Decode bytes from a (possibly Byzantine) peer; ``None`` when malformed."""
    try:
        data = _PlainUnpickler(io.BytesIO(raw)).load()
    except Exception:  # noqa: BLE001 - malformed input is silence
        return None
    return decode(data, max_units=2 * len(raw) + 1024)


def payload_size(obj: Any) -> int:
    """Bytes a message occupies on the wire, approximately (tensors exactly)."""
    if obj is None:
        return 0
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size() + 16
    if isinstance(obj, (bytes, str)):
        return len(obj) + 4
    if isinstance(obj, (bool, int, float)):
        return 8
    if isinstance(obj, (tuple, list)):
        return 4 + sum(payload_size(x) for x in obj)
    if isinstance(obj, dict):
        return 4 + sum(payload_size(k) + payload_size(v) for k, v in obj.items())
    if dataclasses.is_dataclass(obj):
        return 4 + sum(payload_size(getattr(obj, name)) for name in fields_of(type(obj)))
    return 8
