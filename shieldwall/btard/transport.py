"""The peer transport contract and its two implementations.

The protocol (:mod:`shieldwall.btard.protocol`) is a fixed sequence of *phases*; in each, every
peer this process hosts hands the transport its outgoing messages and gets back what it received:

* :meth:`Transport.broadcast` — one message per sender to everyone; every receiver gets the
  *same* ``{sender: message}`` map (the paper's broadcast channel). A missing sender maps to
  ``None`` (silence).
* :meth:`Transport.exchange` — point-to-point: ``outgoing[src][dst]`` arrives as
  ``incoming[dst][src]``; a missing message is absent.

Every process runs the same phases in the same order, since what the protocol does next depends
only on broadcast (common) data.

:class:`InMemoryTransport` hosts all peers in one process (the simulator). Without
``measure=True`` it moves object references and estimates sizes with
:func:`~shieldwall.btard.wire.payload_size`.

:class:`TorchDistTransport` hosts one peer per process over ``torch.distributed`` with gloo on
127.0.0.1 (or wherever ``MASTER_ADDR`` points): broadcast is ``all_gather`` of length-prefixed
byte buffers, exchange is ``all_to_all_single`` with per-destination splits. Messages are
serialised with :mod:`shieldwall.btard.wire` (never pickled objects: peers may be Byzantine).
When peers are banned the remaining ones form a new process group among themselves
(``use_local_synchronization``), and a banned process stops. A process that dies makes the next
collective fail after the process group's timeout (``comm_args.round_timeout``):
:class:`PeerTimeout` is raised and the run stops; a peer that is alive but stays silent is handled
by the protocol (excluded for the round, banned after ``btard_args.silence_limit`` silences).
"""

from __future__ import annotations

import datetime
import logging
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from shieldwall.btard.wire import from_bytes, payload_size, to_bytes

log = logging.getLogger(__name__)

__all__ = ["Transport", "InMemoryTransport", "TorchDistTransport", "PeerTimeout", "Traffic"]


class PeerTimeout(RuntimeError):
    """A collective did not complete in time (a peer process died or hung)."""


class Traffic:
    """Bytes and messages sent by this process's peers to other peers, per phase."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)
        self.messages: dict[str, int] = defaultdict(int)

    def add(self, phase: str, size: int, count: int = 1) -> None:
        self.bytes[phase] += size
        self.messages[phase] += count

    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def snapshot(self) -> dict[str, int]:
        return dict(self.bytes)


class Transport(ABC):
    """Moves one phase's messages (see module docstring).

    Attributes:
        peers: every peer id of the run.
        local: the peers hosted by this process.
        members: the peers currently taking part (banned peers removed).
        traffic: what this process's peers sent.
    """

    def __init__(self, peers: Sequence[int], local: Sequence[int]) -> None:
        self.peers = tuple(peers)
        self.local = tuple(local)
        self.members = tuple(peers)
        self.traffic = Traffic()

    @abstractmethod
    def broadcast(self, phase: str, outgoing: dict[int, Any]) -> dict[int, Any]:
        """``{sender: message}`` for every member; ``outgoing`` holds local senders' messages."""

    @abstractmethod
    def exchange(
        self, phase: str, outgoing: dict[int, dict[int, Any]]
    ) -> dict[int, dict[int, Any]]:
        """``incoming[dst][src]`` for local ``dst`` from ``outgoing[src][dst]``."""

    def set_members(self, members: Sequence[int]) -> None:
        """Restrict communication to ``members`` (sorted ids; banned peers left out)."""
        self.members = tuple(sorted(members))

    @property
    def departed(self) -> bool:
        """Whether every local peer has left (banned): this process has nothing more to do."""
        return not any(p in self.members for p in self.local)

    def close(self) -> None:
        return None


class InMemoryTransport(Transport):
    """All peers in one process (the simulator's message layer).

    Args:
        peers: peer ids.
        measure: serialise every message as the real transport would, to count exact bytes and
            exercise :mod:`~shieldwall.btard.wire` (slower).
    """

    def __init__(self, peers: Sequence[int], *, measure: bool = False) -> None:
        super().__init__(peers, peers)
        self.measure = measure

    def _size(self, message: Any) -> int:
        return len(to_bytes(message)) if self.measure else payload_size(message)

    def _carry(self, message: Any) -> Any:
        return from_bytes(to_bytes(message)) if self.measure else message

    def broadcast(self, phase: str, outgoing: dict[int, Any]) -> dict[int, Any]:
        received: dict[int, Any] = {}
        for sender in self.members:
            message = outgoing.get(sender)
            if message is not None:
                self.traffic.add(phase, self._size(message) * (len(self.members) - 1),
                                 len(self.members) - 1)
                message = self._carry(message)
            received[sender] = message
        return received

    def exchange(
        self, phase: str, outgoing: dict[int, dict[int, Any]]
    ) -> dict[int, dict[int, Any]]:
        incoming: dict[int, dict[int, Any]] = {dst: {} for dst in self.members}
        for src in self.members:
            for dst, message in outgoing.get(src, {}).items():
                if dst not in incoming or message is None:
                    continue
                if dst != src:
                    self.traffic.add(phase, self._size(message))
                    message = self._carry(message)
                incoming[dst][src] = message
        return incoming


class TorchDistTransport(Transport):
    """One peer per process over ``torch.distributed`` (gloo), see module docstring.

    Args:
        rank, world_size: this process's rank and the number of peers; ``None``: from the
            ``RANK``/``WORLD_SIZE`` environment variables (torchrun, or set by the launcher).
        timeout: seconds a collective may wait for the other processes.
        init_method: rendezvous URL (default: ``env://``, i.e. ``MASTER_ADDR``/``MASTER_PORT``).
        max_bytes: the largest message a peer may announce; buffers are sized by what peers
            announce, so a larger (or negative) size is refused before anything is allocated
            (:func:`~shieldwall.btard.run.build` sets it from the model's size).
    """

    def __init__(
        self,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        timeout: float = 300.0,
        init_method: str | None = None,
        max_bytes: int = 1 << 30,
    ) -> None:
        import torch.distributed as dist

        rank = int(os.environ["RANK"]) if rank is None else rank
        world_size = int(os.environ["WORLD_SIZE"]) if world_size is None else world_size
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        super().__init__(range(world_size), (rank,))
        self.rank = rank
        self.max_bytes = max_bytes
        self._dist = dist
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            dist.init_process_group(
                "gloo",
                init_method=init_method or "env://",
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=timeout),
            )
        self._group: Any = None  # None: the default (world) group

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, group=self._group, **kwargs)
        except RuntimeError as exc:  # gloo reports timeouts and dead peers as RuntimeError
            raise PeerTimeout(f"peer {self.rank}: collective failed: {exc}") from exc

    def broadcast(self, phase: str, outgoing: dict[int, Any]) -> dict[int, Any]:
        raw = to_bytes(outgoing.get(self.rank)) if outgoing.get(self.rank) is not None else b""
        if len(raw) > self.max_bytes:  # the others would refuse it: stay silent instead
            log.warning("peer %d: a %d-byte %s message exceeds max_bytes=%d: not sent",
                        self.rank, len(raw), phase, self.max_bytes)
            raw = b""
        k = len(self.members)
        size = torch.tensor([len(raw)], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(k)]
        self._call(self._dist.all_gather, sizes, size)
        # a size out of [0, max_bytes] is a Byzantine announcement: that sender is silent, and
        # every honest peer sizes the buffers from the valid sizes alone (the same on all)
        announced = [int(s) for s in sizes]
        valid = [0 <= n <= self.max_bytes for n in announced]
        longest = max((n for n, ok in zip(announced, valid) if ok), default=0)
        buf = torch.zeros(max(longest, 1), dtype=torch.uint8)
        if raw:
            buf[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        bufs = [torch.zeros_like(buf) for _ in range(k)]
        self._call(self._dist.all_gather, bufs, buf)
        if raw:
            self.traffic.add(phase, len(raw) * (k - 1), k - 1)
        received: dict[int, Any] = {}
        for peer, n, ok, b in zip(self.members, announced, valid, bufs):
            received[peer] = from_bytes(b[:n].numpy().tobytes()) if ok and n > 0 else None
        return received

    def exchange(
        self, phase: str, outgoing: dict[int, dict[int, Any]]
    ) -> dict[int, dict[int, Any]]:
        mine = outgoing.get(self.rank, {})
        chunks = []
        for dst in self.members:
            message = mine.get(dst)
            chunks.append(to_bytes(message) if message is not None else b"")
            if message is not None and dst != self.rank:
                self.traffic.add(phase, len(chunks[-1]))
        send_sizes = torch.tensor([len(c) for c in chunks], dtype=torch.int64)
        recv_sizes = torch.zeros_like(send_sizes)
        self._call(self._dist.all_to_all_single, recv_sizes, send_sizes)
        bad = [(src, n) for src, n in zip(self.members, recv_sizes.tolist())
               if not 0 <= n <= self.max_bytes]
        if bad:  # the splits must match what the sender sends: nothing to skip, so stop here
            src, n = bad[0]
            raise PeerTimeout(f"peer {self.rank}: peer {src} announced a {n}-byte message "
                              f"(at most {self.max_bytes}); nothing was allocated")
        payload = b"".join(chunks)
        send = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else (
            torch.zeros(0, dtype=torch.uint8)
        )
        recv = torch.zeros(int(recv_sizes.sum()), dtype=torch.uint8)
        self._call(
            self._dist.all_to_all_single, recv, send,
            output_split_sizes=recv_sizes.tolist(), input_split_sizes=send_sizes.tolist(),
        )
        incoming: dict[int, Any] = {}
        offset = 0
        for src, n in zip(self.members, recv_sizes.tolist()):
            if n > 0:
                message = from_bytes(recv[offset : offset + n].numpy().tobytes())
                if message is not None:
                    incoming[src] = message
            offset += n
        return {self.rank: incoming}

    def set_members(self, members: Sequence[int]) -> None:
        members = tuple(sorted(members))
        if members == self.members:
            return
        self.members = members
        if self.rank in members:
            self._group = self._dist.new_group(list(members), use_local_synchronization=True)

    def close(self) -> None:
        if self._owns_group and self._dist.is_initialized():
            self._dist.destroy_process_group()
