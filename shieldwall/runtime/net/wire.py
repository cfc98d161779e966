"""The wire format of the networked runtime: framed binary messages over raw-bytes gRPC methods.

Every gRPC message is one *frame*::

    b"SW" | version (u8) | kind (u8) | header length (u32, little-endian) | header | payload

The header is a small UTF-8 JSON object (at most :data:`MAX_HEADER` bytes); the payload is raw
bytes (a slice of a tensor's little-endian buffer). Methods of service ``shieldwall.Federation``
(:data:`SERVICE`):

* ``Join`` (unary): ``HELLO {client, instance}`` → ``WELCOME {session, dim, dtype, chunk}``.
* ``Fetch`` (server streaming): ``FETCH {client, session}`` → ``ROUND {round, nonce, index,
  clients, poisoned, dtype, shape, nbytes}`` then ``CHUNK`` frames holding the global vector;
  or a single ``WAIT`` (nothing for this client yet: poll again) or ``STOP`` (training is over).
* ``Upload`` (client streaming): ``UPLOAD {client, session, round, nonce, num_samples, loss,
  dtype, shape, nbytes}`` then ``CHUNK`` frames → ``ACK {accepted, reason}``.

Credentials travel as call metadata (:data:`META_CLIENT`, :data:`META_TOKEN`) on every call. Why
frames and generic handlers instead of ``.proto`` files: there is no protoc code generation to run
or keep in sync, the payload is raw bytes either way (a protobuf ``bytes`` field costs the same),
and gRPC still supplies HTTP/2 streams, flow control, deadlines, TLS and the message-size limit.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "SERVICE",
    "JOIN",
    "FETCH",
    "UPLOAD",
    "META_CLIENT",
    "META_TOKEN",
    "META_SESSION",
    "Kind",
    "Frame",
    "WireError",
    "encode",
    "decode",
    "DTYPES",
    "tensor_bytes",
    "tensor_from_bytes",
    "chunk_frames",
    "chunk_size",
    "RoundHeader",
    "check_round",
    "MAX_ROW_VALUES",
]

SERVICE = "shieldwall.Federation"
JOIN, FETCH, UPLOAD = "Join", "Fetch", "Upload"
META_CLIENT, META_TOKEN, META_SESSION = "sw-client", "sw-token", "sw-session"

MAGIC = b"SW"
VERSION = 1
MAX_HEADER = 64 * 1024
_PREFIX = struct.Struct("<2sBBI")

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
"""Element types a vector may travel as (names as in headers)."""


class Kind:
    """Frame kinds."""

    HELLO, WELCOME, FETCH, ROUND, WAIT, STOP, CHUNK, UPLOAD, ACK = range(1, 10)


class WireError(ValueError):
    """A frame that does not follow :mod:`wire` (bad magic, version, kind, header or size)."""


@dataclass
class Frame:
    kind: int
    header: dict[str, Any]
    payload: bytes | memoryview = b""


def encode(
    kind: int, header: dict[str, Any] | None = None, payload: bytes | memoryview = b""
) -> bytes:
    """One frame as bytes."""
    head = json.dumps(header or {}, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER:
        raise WireError(f"header of {len(head)} bytes exceeds {MAX_HEADER}")
    return b"".join((_PREFIX.pack(MAGIC, VERSION, kind, len(head)), head, payload))


def decode(data: bytes, expect: int | tuple[int, ...] | None = None) -> Frame:
    """Parse one frame; :class:`WireError` if it is malformed or not of kind ``expect``."""
    if len(data) < _PREFIX.size:
        raise WireError(f"frame of {len(data)} bytes is shorter than its prefix")
    magic, version, kind, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise WireError("not a shieldwall frame (bad magic)")
    if version != VERSION:
        raise WireError(f"protocol version {version}, this build speaks {VERSION}")
    if hlen > MAX_HEADER or _PREFIX.size + hlen > len(data):
        raise WireError(f"header length {hlen} does not fit the frame")
    try:  # ValueError: JSON errors, and integers past Python's 4300-digit limit
        header = json.loads(bytes(data[_PREFIX.size : _PREFIX.size + hlen]) or b"{}")
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"header is not JSON: {type(exc).__name__}: {str(exc)[:120]}") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    wanted = (expect,) if isinstance(expect, int) else expect
    if wanted is not None and kind not in wanted:
        raise WireError(f"frame kind {kind}, expected {' or '.join(map(str, wanted))}")
    return Frame(kind, header, memoryview(data)[_PREFIX.size + hlen :])


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tensor_bytes(t: Tensor) -> bytes:
    """A tensor's elements as little-endian bytes (C order)."""
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


def tensor_from_bytes(data: bytes | bytearray, dtype_text: str, shape: list[int]) -> Tensor:
    """Inverse of :func:`tensor_bytes`; :class:`WireError` if the size does not match."""
    dtype = DTYPES.get(str(dtype_text))
    if dtype is None:
        raise WireError(f"unsupported dtype {dtype_text!r}")
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) != numel * itemsize:
        raise WireError(f"{len(data)} bytes for shape {tuple(shape)} of {dtype_text}")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


def check_shape(shape: Any, limit: int) -> list[int]:
    """A header's ``shape``: a list of non-negative ints with at most ``limit`` elements
    (each dimension too: ``[0, 10**30]`` holds nothing but is no tensor torch can build)."""
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise WireError(f"shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > 8 or any(s > limit for s in shape) or math.prod(shape) > limit:
        raise WireError(f"shape {tuple(shape)} is too large")
    return shape


MAX_ROW_VALUES = 1 << 34
"""The most values a ``ROUND`` header may announce (a client never allocates by more)."""


@dataclass(frozen=True)
class RoundHeader:
    """A ``ROUND`` header as a client checked it."""

    round: int
    nonce: str
    index: int
    clients: tuple[int, ...]
    poisoned: bool
    dtype: str
    shape: list[int]
    nbytes: int


def _int(header: dict[str, Any], key: str, low: int = 0) -> int:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise WireError(f"ROUND header: {key} must be an integer >= {low}, got {value!r}")
    return value


def check_round(header: dict[str, Any]) -> RoundHeader:
    """Check every field of a ``ROUND`` header (what a client trusts of the server's message);
    :class:`WireError` naming the first bad one."""
    dtype = header.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise WireError(f"ROUND header: unsupported dtype {dtype!r}")
    shape = check_shape(header.get("shape"), MAX_ROW_VALUES)
    nbytes = _int(header, "nbytes")
    if nbytes != math.prod(shape) * torch.empty((), dtype=DTYPES[dtype]).element_size():
        raise WireError(f"ROUND header: nbytes {nbytes} does not match {dtype} {shape}")
    clients = header.get("clients")
    if (not isinstance(clients, list) or len(clients) > 1 << 20
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                       for c in clients)):
        raise WireError("ROUND header: clients must be a list of client indices")
    index, nonce = _int(header, "index"), header.get("nonce")
    if index not in clients:
        raise WireError(f"ROUND header: index {index} is not among the round's clients")
    if not isinstance(nonce, str) or not 0 < len(nonce) <= 256:
        raise WireError("ROUND header: nonce must be a short string")
    poisoned = header.get("poisoned", False)
    if not isinstance(poisoned, bool):
        raise WireError(f"ROUND header: poisoned must be true or false, got {poisoned!r}")
    return RoundHeader(_int(header, "round"), nonce, index, tuple(clients), poisoned, dtype,
                       shape, nbytes)


def chunk_size(max_message_bytes: int) -> int:
    """Payload bytes per ``CHUNK`` frame: the message limit less room for the frame prefix."""
    return max(max_message_bytes - 1024, 1024)


def chunk_frames(data: bytes, size: int) -> Iterator[bytes]:
    """``CHUNK`` frames carrying ``data`` in slices of at most ``size`` bytes."""
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield encode(Kind.CHUNK, None, view[start : start + size])
