"""The server's side of the protocol: who may talk, which round is open, what has arrived.

Rules (frames in :mod:`.wire`):

* **Authentication.** Every call names its client id and token in metadata. An id not in
  ``client_id_list`` or a wrong token is refused (``UNAUTHENTICATED``) and logged; under mutual
  TLS the client certificate's common name must also be ``client-K`` for the claimed id ``K``.
  Every method is served as request-*streaming* (the wire is the same for the clients' unary
  calls), so that a handler authenticates the call and counts it against
  :data:`MAX_CALLS_PER_CLIENT` *before* any request message is read: gRPC reads a unary
  request in a worker thread before the handler runs, with no deadline, so a peer that opens
  calls and never sends their message would hold every worker thread and RPC slot.
* **Sessions.** ``Join`` opens a session. A second process claiming a client whose session was
  active within :data:`SESSION_TTL` seconds is a duplicate: refused (``ALREADY_EXISTS``) and
  logged. ``Fetch``/``Upload`` with any other than the current session are refused
  (``FAILED_PRECONDITION``: the client joins again).
* **Rounds.** A published round is ``(round, nonce)`` with a fresh random nonce, so an upload
  for an earlier round, or from before a server restart, is stale: refused and logged. One answer
  per client per round; a second is a duplicate, refused and logged.
* **Rows.** An upload is read chunk by chunk, never past the bytes its header declares, which may
  not exceed one row. A truncated, oversize or garbled stream, a NaN/Inf row, a wrong shape or
  dtype, a norm above ``max_update_norm`` (:func:`sanitize_row`), or a sample count above the
  client's shard (:func:`~shieldwall.runtime.claims.check_claims`) is an answer that the
  server's round treats as Byzantine input (rejected with its reason).
* **Closing a round** (:meth:`Hub.wait_round`), at the first of:

  1. every client of the round has answered (accepted or rejected);
  2. ``quorum`` *accepted* rows are in and ``quorum_timeout`` seconds have passed (a rejected
     row never counts toward the quorum, so garbage cannot close a round early; the quorum is
     raised to the plan's ``min_accepted``, the rows on which the defense tolerates ``f``, so
     that fast Byzantine rows cannot be most of those a quorum closes on);
  3. every client still *expected* has answered and at least one row was accepted: a client
     that sent nothing in its previous round and has not called the server since is written
     off (not waited for) until it calls again (a client that is merely slow to connect at the
     start is not: it has missed no round);
  4. the *adaptive deadline*: once every expected client that has connected to this server has
     an answer time (from an earlier round or this one), :data:`ADAPTIVE_FACTOR` × the slowest
     of their last :data:`HISTORY` answer times + :data:`ADAPTIVE_SLACK` seconds. A client that
     has never connected (the round starts after ``join_timeout``) has no time of its own and is
     waited for as long as those that did connect need — after a server restart, a silo that
     died before it costs one adaptive deadline, not ``round_timeout``;
  5. ``round_timeout`` (which also caps 4).

  So one dead silo costs one round at most the adaptive deadline, and later rounds nothing. A
  client that stalls on purpose after fetching is bounded by ``quorum`` (set it).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import grpc
import torch
from torch import Tensor

from shieldwall.runtime.base import RoundPlan
from shieldwall.runtime.net import wire
from shieldwall.runtime.net.rows import Answer, read_row
from shieldwall.runtime.net.settings import NetSettings
from shieldwall.runtime.net.wire import Kind, WireError

__all__ = ["Hub", "OpenRound", "SESSION_TTL", "POLL_SECONDS", "ADAPTIVE_FACTOR", "ADAPTIVE_SLACK",
           "HISTORY"]

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0
"""How long a ``Fetch`` waits for a round before answering ``WAIT``."""
SESSION_TTL = 15.0
"""A session silent for longer may be taken over by a new process of the same client."""
MAX_CALLS_PER_CLIENT = 4
MAX_HANDOUTS = 3
"""Times one client may be handed one round: a fetch cut off mid-stream is fetched again, but
more would let a client make the server send the whole vector again and again."""
LIVE = "is connected now"
"""Said in a duplicate refusal when the session's holder has a call open: it is alive."""
ADAPTIVE_FACTOR = 4.0
"""Adaptive deadline: this many times the slowest recent answer time of the round's clients..."""
ADAPTIVE_SLACK = 10.0
"""...plus this many seconds (so that fast rounds still tolerate a loaded machine)."""
HISTORY = 5
"""Answer times remembered per client for the adaptive deadline."""
WAIT_NOTICE_S = 30.0
"""A round still waiting after this long says for whom, and which settings bound the wait."""


@dataclass
class OpenRound:
    plan: RoundPlan
    nonce: str
    dim: int
    dtype: torch.dtype
    payload: bytes
    started: float = field(default_factory=time.monotonic)
    answers: dict[int, Answer] = field(default_factory=dict)
    receiving: set[int] = field(default_factory=set)
    uploads: dict[int, grpc.ServicerContext] = field(default_factory=dict)
    """Client index → the upload call reading its row (cancelled when the round closes)."""
    handouts: dict[int, int] = field(default_factory=dict)
    """Client index → times the round was handed to it (fetched)."""
    skipped: set[int] = field(default_factory=set)
    closed: bool = False


@dataclass
class _Session:
    id: str
    instance: str
    last_seen: float
    silo: int = 1
    stopped: bool = False
    ready: bool = True
    peer: str = ""


class Hub:
    """Shared state between the gRPC handlers (threads) and the runtime's round loop."""

    def __init__(self, settings: NetSettings, dim: int, sample_caps: Mapping[int, int]) -> None:
        self.settings = settings
        self.dim = dim
        self.position = {k: i for i, k in enumerate(settings.client_ids)}
        missing = [i for i in self.position.values() if i not in sample_caps]
        if missing:
            raise ValueError(f"no sample-count bound for client indices {missing}")
        self.sample_caps = {int(i): int(c) for i, c in sample_caps.items()}
        self.written_off: set[int] = set()
        self.durations: dict[int, deque[float]] = {}
        self.cond = threading.Condition()
        self.sessions: dict[int, _Session] = {}
        self.current: OpenRound | None = None
        self.finished = False
        self.calls: dict[int, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.poll = POLL_SECONDS
        self._quorum_raised = False  # warned once that comm_args.quorum was raised

    # ---------------------------------------------------------------- gRPC side
    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            wire.SERVICE,
            {
                wire.JOIN: grpc.stream_unary_rpc_method_handler(self.join),
                wire.FETCH: grpc.stream_stream_rpc_method_handler(self.fetch),
                wire.UPLOAD: grpc.stream_unary_rpc_method_handler(self.upload),
            },
        )

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode, why: str) -> None:
        log.warning("refused %s: %s", context.peer(), why)
        context.abort(code, why)

    def _authenticate(self, context: grpc.ServicerContext) -> int:
        meta = {k: v for k, v in context.invocation_metadata()}
        raw = str(meta.get(wire.META_CLIENT, ""))
        try:
            client = int(raw)
        except ValueError:
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, f"malformed client id {raw!r}")
        if client not in self.position:
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, f"unknown client {client}")
        if not self.settings.token_ok(client, str(meta.get(wire.META_TOKEN, ""))):
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, f"bad token for client {client}")
        if self.settings.tls_ca is not None:
            names = context.auth_context().get("x509_common_name", [])
            if f"client-{client}".encode() not in names:
                self._refuse(
                    context, grpc.StatusCode.UNAUTHENTICATED,
                    f"certificate {[n.decode(errors='replace') for n in names]} "
                    f"is not client-{client}'s",
                )
        return client

    def _enter(
        self, context: grpc.ServicerContext, *, session: bool
    ) -> tuple[int, _Session | None]:
        client = self._authenticate(context)
        with self.cond:
            if self.calls.get(client, 0) >= MAX_CALLS_PER_CLIENT:
                self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"client {client} has too many calls open")
            s = self.sessions.get(client)
            if session:
                sid = dict(context.invocation_metadata()).get(wire.META_SESSION)
                if s is None or s.id != sid:
                    self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                                 f"stale session of client {client}: join again")
                s.last_seen = time.monotonic()
                self.written_off.discard(self.position[client])
            self.calls[client] = self.calls.get(client, 0) + 1
        return client, s

    def _leave(self, client: int) -> None:
        with self.cond:
            self.calls[client] -= 1

    def join(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        client, _ = self._enter(context, session=False)  # before reading: see module docstring
        try:
            try:
                hello = wire.decode(next(requests, b""), Kind.HELLO).header
            except WireError as exc:
                self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"client {client}: {exc}")
            instance, now = str(hello.get("instance", ""))[:64], time.monotonic()
            silo = hello.get("silo", 1)
            silo = silo if isinstance(silo, int) and 1 <= silo <= 1 << 16 else 1
            ready = hello.get("ready", True) is not False
            with self.cond:
                old = self.sessions.get(client)
                if (old is not None and old.instance != instance and not old.stopped
                        and now - old.last_seen < SESSION_TTL):
                    live = self.calls.get(client, 0) > 1  # a call of the holder is open now
                    self._refuse(
                        context, grpc.StatusCode.ALREADY_EXISTS,
                        f"duplicate client {client}: another process (from {old.peer}) holds "
                        f"its session" + (f" and {LIVE}" if live else ""),
                    )
                self.sessions[client] = s = _Session(secrets.token_hex(16), instance, now, silo,
                                                     ready=ready, peer=context.peer())
                self.written_off.discard(self.position[client])
                self.cond.notify_all()
            what = "rejoined" if old is not None and old.instance == instance else "joined"
            log.info("client %d %s from %s%s%s", client, what, context.peer(),
                     f" (silo of {silo} DDP processes)" if silo > 1 else "",
                     "" if ready else " (loading its data)")
            return wire.encode(Kind.WELCOME, {"session": s.id, "dim": self.dim,
                                              "poll": self.poll})
        finally:
            self._leave(client)

    def fetch(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        # the FETCH frame carries nothing the server needs: it is never read (module docstring)
        client, s = self._enter(context, session=True)
        assert s is not None
        try:
            index = self.position[client]
            deadline = time.monotonic() + self.poll
            chosen: OpenRound | None = None
            kind = Kind.WAIT
            with self.cond:
                while True:
                    r = self.current
                    if self.finished:
                        s.stopped, kind = True, Kind.STOP
                        self.cond.notify_all()
                        break
                    if (r is not None and not r.closed and index in r.plan.client_ids
                            and index not in r.answers and index not in r.receiving
                            and r.handouts.get(index, 0) < MAX_HANDOUTS):
                        r.handouts[index] = r.handouts.get(index, 0) + 1
                        chosen = r
                        break
                    left = deadline - time.monotonic()
                    if left <= 0 or not context.is_active():
                        break
                    self.cond.wait(min(left, 1.0))
                s.last_seen = time.monotonic()
            if chosen is None:
                yield wire.encode(kind)
                return
            header = {
                "round": chosen.plan.round, "nonce": chosen.nonce, "index": index,
                "clients": list(chosen.plan.client_ids),
                "poisoned": index in chosen.plan.poisoned_ids,
                "dtype": wire.dtype_name(chosen.dtype), "shape": [chosen.dim],
                "nbytes": len(chosen.payload),
            }
            frames = [wire.encode(Kind.ROUND, header)]
            frames += wire.chunk_frames(chosen.payload, wire.chunk_size(
                self.settings.max_message_bytes))
            for frame in frames:
                self.bytes_out += len(frame)
                yield frame
        finally:
            self._leave(client)

    def _counted(self, frames: Iterator[bytes], r: OpenRound) -> Iterator[bytes]:
        for raw in frames:
            if r.closed:  # a row still trickling in when the round closed is late
                raise TimeoutError(f"round {r.plan.round} closed during the upload")
            self.bytes_in += len(raw)
            yield raw

    def upload(self, frames: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        client, _ = self._enter(context, session=True)
        try:
            return self._upload(client, frames, context)
        finally:
            self._leave(client)

    def _upload(self, client: int, frames: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        index = self.position[client]
        try:
            raw = next(frames)
            self.bytes_in += len(raw)
            head = wire.decode(raw, Kind.UPLOAD).header
        except (StopIteration, WireError) as exc:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"client {client}: bad upload header: {exc or 'empty stream'}")
        with self.cond:
            r, reason = self.current, None
            if r is None or head.get("round") != r.plan.round or head.get("nonce") != r.nonce:
                reason = (f"stale round {repr(head.get('round'))[:40]} (open: "
                          f"{'none' if r is None else r.plan.round})")
            elif r.closed:
                reason = f"late: round {r.plan.round} is closed"
            elif index not in r.plan.client_ids:
                reason = f"not a client of round {r.plan.round}"
            elif index in r.answers or index in r.receiving:
                reason = f"duplicate upload for round {r.plan.round}"
            if reason is not None:
                log.warning("refused upload from client %d: %s", client, reason)
                return wire.encode(Kind.ACK, {"accepted": False, "reason": reason})
            assert r is not None
            r.receiving.add(index)
            r.uploads[index] = context
        answer = Answer(None, reason="upload failed")
        try:
            answer = read_row(head, self._counted(frames, r), r.dim, r.dtype,
                              self.settings.max_update_norm, self.sample_caps[index])
        except grpc.RpcError:
            answer = Answer(None, reason="upload stream broken (a message above the size limit, "
                                         "or the client went away)")
        except Exception as exc:  # noqa: BLE001 - a broken stream is an answer, not a crash
            answer = Answer(None, reason=f"upload failed: {type(exc).__name__}: {exc}")
        finally:
            with self.cond:
                r.receiving.discard(index)
                r.uploads.pop(index, None)
                late = r.closed
                if not late:
                    r.answers[index] = answer
                    self.durations.setdefault(index, deque(maxlen=HISTORY)).append(
                        time.monotonic() - r.started)
                    self.cond.notify_all()
        if late:
            answer = Answer(None, reason=f"late: round {r.plan.round} closed during the upload")
        if answer.reason is not None:
            log.warning("round %d: client %d's row rejected: %s", r.plan.round, client,
                        answer.reason)
        return wire.encode(Kind.ACK, {"accepted": answer.reason is None, "reason": answer.reason})

    # ------------------------------------------------------------ runtime side
    def wait_joined(self, timeout: float) -> list[int]:
        """Wait until every client has joined and is ready (data loaded, warmed up), or
        ``timeout``; the ids still missing."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                missing = [k for k in self.position
                           if k not in self.sessions or not self.sessions[k].ready]
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self.cond.wait(min(left, 1.0))

    def open_round(self, plan: RoundPlan, params: Tensor) -> OpenRound:
        r = OpenRound(plan, secrets.token_hex(16), self.dim, params.dtype,
                      wire.tensor_bytes(params))
        with self.cond:
            self.current = r
            self.cond.notify_all()
        return r

    def deadline(self, r: OpenRound) -> tuple[float, str]:
        """When round ``r`` closes at the latest, and the rule that set it (module docstring).
        Call with :attr:`cond` held."""
        s = self.settings
        expected = [i for i in r.plan.client_ids if i not in self.written_off
                    and s.client_ids[i] in self.sessions]  # never connected: module docstring
        if not expected or any(not self.durations.get(i) for i in expected):
            return s.round_timeout, f"round timeout {s.round_timeout:g}s"
        slowest = max(max(self.durations[i]) for i in expected)
        adaptive = ADAPTIVE_FACTOR * slowest + ADAPTIVE_SLACK
        if adaptive >= s.round_timeout:
            return s.round_timeout, f"round timeout {s.round_timeout:g}s"
        return adaptive, (f"adaptive deadline {adaptive:.1f}s = {ADAPTIVE_FACTOR:g} x slowest "
                          f"recent answer {slowest:.2f}s + {ADAPTIVE_SLACK:g}s")

    def wait_round(self, r: OpenRound) -> str:
        """Block until the round may close (module docstring); close it; say why it closed."""
        s = self.settings
        n = len(r.plan.client_ids)
        quorum = min(max(s.quorum or n, r.plan.min_accepted), n)
        if s.quorum and s.quorum < quorum and not self._quorum_raised:
            self._quorum_raised = True
            log.warning("comm_args.quorum=%d is raised to %d: the defense needs that many rows to "
                        "tolerate its f, and the first rows in may be the Byzantine ones",
                        s.quorum, quorum)
        noticed = False
        with self.cond:
            while True:
                elapsed = time.monotonic() - r.started
                accepted = sum(1 for a in r.answers.values() if a.row is not None)
                missing = [i for i in r.plan.client_ids if i not in r.answers]
                awaited = [i for i in missing
                           if i not in self.written_off or i in r.receiving or i in r.handouts]
                limit, rule = self.deadline(r)
                if not missing:
                    why = "all answered"
                elif accepted >= quorum and elapsed >= s.quorum_timeout:
                    why = f"quorum of {quorum} accepted rows after {s.quorum_timeout:g}s"
                elif not awaited and accepted > 0:
                    why = (f"all answered but written-off clients {missing} (absent before, "
                           "silent since: not waited for)")
                elif elapsed >= limit:
                    why = rule
                else:
                    if elapsed >= WAIT_NOTICE_S and not noticed:
                        noticed = True
                        log.warning(
                            "round %d: still waiting for client indices %s after %.0fs; closes "
                            "at the latest after %.0fs (%s). Set comm_args.round_timeout "
                            "(now %gs) or comm_args.quorum to wait less", r.plan.round,
                            awaited, elapsed, limit, rule, s.round_timeout)
                    left = limit - elapsed
                    if accepted >= quorum:
                        left = min(left, s.quorum_timeout - elapsed)
                    self.cond.wait(max(min(left, 1.0), 0.01))
                    continue
                r.closed = True
                for call in r.uploads.values():  # unblock handlers waiting on a slow stream
                    call.cancel()
                r.skipped = set(missing) - set(awaited)
                for i in missing:
                    if i not in r.receiving:
                        self.written_off.add(i)
                self.cond.notify_all()
                return why

    def absent_reason(self, r: OpenRound, index: int) -> str:
        client = self.settings.client_ids[index]
        if index in r.handouts:
            return "absent: fetched the round but sent no row in time"
        if client not in self.sessions:
            return "absent: never connected" + (" (not waited for)" if index in r.skipped else "")
        if index in r.skipped:
            return "absent: silent since an earlier round (written off, not waited for)"
        return "absent: did not fetch the round in time"

    def finish(self, grace: float) -> None:
        """Tell clients to stop; wait up to ``grace`` seconds for the live ones to hear it."""
        deadline = time.monotonic() + grace
        with self.cond:
            self.finished = True
            self.cond.notify_all()
            while time.monotonic() < deadline:
                live = [k for k, s in self.sessions.items()
                        if not s.stopped and time.monotonic() - s.last_seen < 2 * self.poll]
                if not live:
                    break
                self.cond.wait(0.2)
