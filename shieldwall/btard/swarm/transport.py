"""The BTARD :class:`~shieldwall.btard.transport.Transport` over hivemind's libp2p/DHT.

Identity is the peer's libp2p key pair: its peer id (base58) names it everywhere, and the
protocol's integer peer id is derived from it (:func:`pid_of`, the first 6 bytes of
``sha256(peer_id)``), so bans and accusations name a stable identity whichever peer it
reconnects to.

Messages travel as one unary libp2p call per (sender, receiver) (handler ``<prefix>.msg``); the
receiver learns the sender from the authenticated connection (``context.remote_id``), never from
the payload. A payload is ``wire.to_bytes((step, phase, message))``: larger than ``max_bytes``,
undecodable, for a step other than the current one or the next two, for an unknown phase, from a
non-member of the step's group, or a second message for the same (step, phase, sender) slot (a
replay) is dropped and counted in :attr:`HivemindTransport.rejected` — the protocol then sees
silence, which its own rules turn into a sat-out step, an aborted step, or a ban.

*broadcast* sends a peer's message to every member and waits until every still-awaited member's
message for that (step, phase) arrived or ``phase_timeout`` seconds passed; *exchange* likewise for
point-to-point messages (a sender with nothing for a receiver sends it an empty message, so that
the receiver knows it is done). A member that missed one phase deadline is no longer awaited in the
step's later phases (it is silent for the step: a peer killed mid-step costs the others one
timeout, never a stall). Limits: broadcast is sender-to-all pushes without an echo round, so a
sender that crashes half-way through its pushes (or a Byzantine one that sends different messages
to different peers) can give honest peers different views of that phase; the BTARD paper's
broadcast is stronger.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from shieldwall.btard.transport import Transport
from shieldwall.btard.wire import from_bytes, to_bytes

__all__ = ["HivemindTransport", "pid_of", "PHASES"]

log = logging.getLogger(__name__)

PHASES = ("hello", "commit", "scatter", "result_commit", "results", "reveal", "check", "opening",
          "accuse")


def pid_of(peer_id: str) -> int:
    """The protocol's integer id of a libp2p peer id (base58 string)."""
    return int.from_bytes(hashlib.sha256(peer_id.encode()).digest()[:6], "big")


class HivemindTransport(Transport):
    """One peer per process over hivemind (see the module docstring).

    Args:
        dht: a started ``hivemind.DHT`` (its P2P daemon carries the messages).
        prefix: the run's name; handler names and DHT keys start with it.
        phase_timeout: seconds a phase waits for the awaited members.
        max_bytes: the largest payload accepted.
        max_senders: the most senders one (step, phase) buffers (early messages are kept until
            the step's group is known).
        max_early_bytes: the most bytes buffered for steps whose group is not known yet
            (anyone may send those; default 8 × ``max_bytes``).
    """

    def __init__(self, dht: Any, prefix: str, *, phase_timeout: float = 30.0,
                 max_bytes: int = 64 << 20, max_senders: int = 4096,
                 max_early_bytes: int | None = None) -> None:
        from hivemind.proto import averaging_pb2

        self._pb = averaging_pb2
        self.dht, self.prefix = dht, prefix
        self.phase_timeout, self.max_bytes = phase_timeout, max_bytes
        self.max_senders = max_senders
        self._group_step: int | None = None  # the step whose group begin_step has set
        self.max_early_bytes = 8 * max_bytes if max_early_bytes is None else max_early_bytes
        self._early: dict[tuple[int, str, int], int] = {}  # (step, phase, src) -> bytes
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.p2p = self._run(dht.replicate_p2p())
        self.peer_id = self.p2p.peer_id.to_base58()
        self.pid = pid_of(self.peer_id)
        super().__init__((self.pid,), (self.pid,))
        self.ids: dict[int, Any] = {self.pid: self.p2p.peer_id}  # pid -> PeerID
        self.step = 0
        self._awaited: set[int] = set()
        self._box: dict[tuple[int, str], dict[int, Any]] = {}
        self._cond = threading.Condition()
        self.rejected: Counter = Counter()
        self._pending: list[Any] = []  # sends in flight (close() lets them finish)
        self.unreachable: dict[int, float] = {}  # pid -> when asking it last failed
        self.handlers: dict[str, Any] = {}  # extra request handlers: name -> fn(bytes) -> bytes
        self._run(self.p2p.add_protobuf_handler(f"{prefix}.msg", self._on_msg,
                                                averaging_pb2.DownloadData))
        self._run(self.p2p.add_protobuf_handler(f"{prefix}.ask", self._on_ask,
                                                averaging_pb2.DownloadData))

    # ---- plumbing -------------------------------------------------------------------------
    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _reject(self, why: str, sender: str) -> None:
        self.rejected[why] += 1
        log.warning("dropped a message from %s: %s", sender, why)

    async def _on_msg(self, request: Any, context: Any) -> Any:
        sender = context.remote_id.to_base58()
        raw = request.metadata
        if len(raw) > self.max_bytes:
            self._reject("oversize", sender)
            return self._pb.DownloadData()
        data = from_bytes(raw)
        if not (isinstance(data, tuple) and len(data) == 3 and type(data[0]) is int
                and isinstance(data[1], str)):
            self._reject("garbage", sender)
            return self._pb.DownloadData()
        step, phase, message = data
        src = pid_of(sender)
        with self._cond:
            if phase not in PHASES:
                self._reject("unknown phase", sender)
            elif not self.step <= step <= self.step + 2:
                self._reject(f"wrong step {step} (now {self.step})", sender)
            elif step == self._group_step and src not in self.members:  # the group is known
                self._reject("not a member", sender)
            else:
                slot = self._box.setdefault((step, phase), {})
                early = step != self._group_step
                if len(slot) >= self.max_senders:
                    self._reject("too many senders", sender)
                elif src in slot:
                    self._reject("replayed", sender)
                elif early and sum(self._early.values()) + len(raw) > self.max_early_bytes:
                    self._reject("early messages over budget", sender)
                else:
                    self.ids.setdefault(src, context.remote_id)
                    slot[src] = message
                    if early:
                        self._early[(step, phase, src)] = len(raw)
                    self._cond.notify_all()
        return self._pb.DownloadData()

    async def _on_ask(self, request: Any, context: Any) -> Any:
        raw = request.metadata
        data = from_bytes(raw) if len(raw) <= 4096 else None
        fn = self.handlers.get(data) if isinstance(data, str) else None
        if fn is None:
            return self._pb.DownloadData()
        return self._pb.DownloadData(metadata=fn())

    def ask(self, pid: int, name: str, timeout: float = 60.0) -> bytes | None:
        """Call ``name`` (a :attr:`handlers` entry) at peer ``pid``; ``None`` on failure."""
        return self.ask_many([pid], name, timeout)[pid]

    def ask_many(self, pids: list[int], name: str, timeout: float = 60.0,
                 skip_unreachable: float = 0.0) -> dict[int, bytes | None]:
        """Call ``name`` at every peer of ``pids`` at once (a dead peer costs ``timeout`` once,
        not once per peer asked after it); ``None`` for a failed or empty answer. Peers that
        failed within the last ``skip_unreachable`` seconds are not asked (``None``)."""
        now = time.monotonic()
        asked = [p for p in pids if now - self.unreachable.get(p, -math.inf) >= skip_unreachable]
        request = self._pb.DownloadData(metadata=to_bytes(name))

        async def one(pid: int) -> bytes | None:
            try:
                out = await asyncio.wait_for(self.p2p.call_protobuf_handler(
                    self.ids[pid], f"{self.prefix}.ask", request, self._pb.DownloadData), timeout)
            except Exception as exc:  # noqa: BLE001 - a dead or hostile peer
                log.warning("asking %s of %s failed: %s", name, pid, exc)
                if len(self.unreachable) >= 65536:  # a flood of identities: start afresh
                    self.unreachable.clear()
                self.unreachable[pid] = time.monotonic()
                return None
            self.unreachable.pop(pid, None)
            return bytes(out.metadata) or None

        async def every() -> list[bytes | None]:
            return await asyncio.gather(*(one(p) for p in asked))

        try:
            answers = dict(zip(asked, self._run(every(), timeout + 5.0), strict=True))
        except Exception as exc:  # noqa: BLE001 - a call that would not even cancel
            log.warning("asking %s of %d peers failed: %s", name, len(asked), exc)
            answers = {}
        return {p: answers.get(p) for p in pids}

    def _send(self, dst: int, phase: str, message: Any) -> int:
        raw = to_bytes((self.step, phase, message))
        request = self._pb.DownloadData(metadata=raw)

        async def push() -> None:
            try:
                await asyncio.wait_for(self.p2p.call_protobuf_handler(
                    self.ids[dst], f"{self.prefix}.msg", request, self._pb.DownloadData),
                    self.phase_timeout)
            except Exception as exc:  # noqa: BLE001 - the receiver died: it is silent
                log.info("send %s to %s failed: %s", phase, dst, exc)

        fut = asyncio.run_coroutine_threadsafe(push(), self.loop)
        self._pending = [f for f in self._pending if not f.done()] + [fut]
        return len(raw)

    def _collect(self, phase: str) -> dict[int, Any]:
        deadline = time.monotonic() + self.phase_timeout
        key = (self.step, phase)
        with self._cond:
            while True:
                slot = self._box.setdefault(key, {})
                waiting = self._awaited - set(slot)
                left = deadline - time.monotonic()
                if not waiting or left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            for p in waiting:  # silent in this phase: not awaited for the rest of the step
                self._awaited.discard(p)
            return dict(slot)

    # ---- the Transport contract ------------------------------------------------------------
    def begin_step(self, step: int, group: Sequence[int], ids: dict[int, Any]) -> None:
        """Start step ``step`` with ``group`` (sorted pids; ``ids`` maps them to PeerIDs)."""
        with self._cond:
            self.ids.update(ids)
            self.step = self._group_step = step
            self.peers = tuple(sorted(group))
            self.members = self.peers
            self._awaited = set(self.members) - {self.pid}
            self._box = {k: v for k, v in self._box.items() if k[0] >= step}
            for key, slot in self._box.items():  # early messages from non-members: dropped
                if key[0] == step:
                    for src in [s for s in slot if s not in self.members]:
                        del slot[src]
                        self._reject("not a member", str(src))
            self._early = {k: n for k, n in self._early.items()  # this step's are no longer early
                           if k[0] > step and k[2] in self._box.get(k[:2], {})}

    def broadcast(self, phase: str, outgoing: dict[int, Any]) -> dict[int, Any]:
        message = outgoing.get(self.pid)
        if message is not None and self.pid in self.members:
            for dst in self.members:
                if dst != self.pid:
                    self.traffic.add(phase, self._send(dst, phase, message))
        got = self._collect(phase)
        got[self.pid] = message
        return {p: got.get(p) for p in self.members}

    def exchange(
        self, phase: str, outgoing: dict[int, dict[int, Any]]
    ) -> dict[int, dict[int, Any]]:
        mine = outgoing.get(self.pid, {})
        if self.pid in self.members:
            for dst in self.members:  # nothing for dst: an empty message says "done" to it
                if dst != self.pid:
                    self.traffic.add(phase, self._send(dst, phase, mine.get(dst)))
        got = self._collect(phase)
        if mine.get(self.pid) is not None:
            got[self.pid] = mine[self.pid]
        return {self.pid: {p: m for p, m in got.items() if p in self.members and m is not None}}

    def set_members(self, members: Sequence[int]) -> None:
        with self._cond:
            self.members = tuple(sorted(members))
            self._awaited &= set(self.members)

    def close(self) -> None:
        for fut in self._pending:  # the last step's messages must still reach the others
            try:
                fut.result(self.phase_timeout)
            except Exception:  # noqa: BLE001
                pass
        try:
            self._run(self.p2p.shutdown(), 10)
        except Exception:  # noqa: BLE001
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
